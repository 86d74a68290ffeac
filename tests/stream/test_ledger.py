"""InFlightLedger: what may be committed, and which late news counts (no Kafka, no Ray).

The state machine drives one ledger the way the source does, against a model of Kafka: a log
per partition (offsets with gaps, as compaction leaves them), the consumer's fetch position and
assignment, and the group's committed offsets. Its rules interleave polls, writes and dead
letters of any in-flight record (also of records whose partition was abandoned meanwhile: late
news), retries' currency checks, commits, eager and cooperative rebalances, lost partitions,
position resets and a crash with restart from the last commit. After every step:

- a commit never covers a record that is not durably written or dead-lettered (so a restart
  from any commit loses nothing), and commits never go back;
- exactly the records whose tickets are current are held, and only those complete;
- once everything held is handled, each assigned partition commits up to its last record.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from idproxy_stream.stream.ledger import InFlightLedger
from idproxy_stream.stream.offsets import Ticket

PARTITIONS = (0, 1, 2)


class LedgerAgainstKafka(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = InFlightLedger()
        self.log: dict[int, list[int]] = {p: [] for p in PARTITIONS}  # offsets, with gaps
        self.fetch: dict[int, int] = dict.fromkeys(PARTITIONS, 0)  # index into the log
        self.assigned: set[int] = set(PARTITIONS)
        self.committed: dict[int, int] = dict.fromkeys(PARTITIONS, 0)  # Kafka's, per partition
        self.durable: set[tuple[int, int]] = set()  # rows written or dead letters on the topic
        self.in_flight: list[Ticket] = []  # every ticket handed out, current or stale
        self.current: set[Ticket] = set()  # the model's idea of what the ledger holds
        self.last_received: dict[int, int | None] = dict.fromkeys(PARTITIONS)

    # ------------------------------------------------------------------ the log side

    def _offset_at(self, partition: int, index: int, gap: int) -> int:
        log = self.log[partition]
        while len(log) <= index:
            log.append((log[-1] + 1 + gap) if log else gap)
        return log[index]

    def _resume_from_commit(self, partition: int) -> None:
        """Where a consumer that (re)gets ``partition`` starts: the committed offset."""
        log = self.log[partition]
        self.fetch[partition] = next(
            (i for i, offset in enumerate(log) if offset >= self.committed[partition]), len(log)
        )

    def _abandon_in_model(self, partition: int) -> None:
        self.current = {t for t in self.current if t.partition != partition}
        self.last_received[partition] = None  # the partition starts over

    # ------------------------------------------------------------------------- rules

    @precondition(lambda self: self.assigned)
    @rule(data=st.data(), count=st.integers(1, 5), gap=st.integers(0, 2))
    def poll(self, data, count: int, gap: int) -> None:
        partition = data.draw(st.sampled_from(sorted(self.assigned)))
        for _ in range(count):
            offset = self._offset_at(partition, self.fetch[partition], gap)
            self.fetch[partition] += 1
            previous = self.last_received[partition]
            if previous is not None and offset <= previous:  # the ledger starts over
                self._abandon_in_model(partition)
            ticket = self.ledger.receive(partition, offset, None, b"v", None)
            self.last_received[partition] = offset
            self.in_flight.append(ticket)
            self.current.add(ticket)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), dead_letter=st.booleans())
    def handle(self, data, dead_letter: bool) -> None:
        """The sink wrote the record (or its dead letter was acknowledged), maybe late news."""
        ticket = data.draw(st.sampled_from(self.in_flight))
        self.durable.add((ticket.partition, ticket.offset))  # the write happened either way
        completed = self.ledger.complete(ticket)
        assert (completed is not None) == (ticket in self.current)
        self.current.discard(ticket)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def check_before_retry(self, data) -> None:
        ticket = data.draw(st.sampled_from(self.in_flight))
        assert self.ledger.is_current(ticket) == (ticket in self.current)
        assert (self.ledger.held(ticket) is not None) == (ticket in self.current)

    @rule()
    def commit(self) -> None:
        positions = self.ledger.commit_positions(self.assigned)
        for partition, position in positions.items():
            assert position >= self.committed[partition], "a commit went back"
            self.committed[partition] = position
        self.ledger.mark_committed(positions)

    @precondition(lambda self: self.assigned)
    @rule(data=st.data())
    def eager_rebalance_hands_back(self, data) -> None:
        partition = data.draw(st.sampled_from(sorted(self.assigned)))
        assert self.ledger.revoked({partition}, self.assigned) == set()
        assert self.ledger.assigned(self.assigned) == set()  # kept: the fetch position stays

    @precondition(lambda self: self.assigned)
    @rule(data=st.data(), eager=st.booleans())
    def partition_moves_away(self, data, eager: bool) -> None:
        partition = data.draw(st.sampled_from(sorted(self.assigned)))
        remaining = self.assigned - {partition}
        if eager:  # revoked while still assigned, gone at the next assignment
            self.ledger.revoked({partition}, self.assigned)
            assert self.ledger.assigned(remaining) == {partition}
        else:  # cooperative: already gone when revoked
            assert self.ledger.revoked({partition}, remaining) == {partition}
        self.assigned = remaining
        self._abandon_in_model(partition)

    @precondition(lambda self: self.assigned)
    @rule(data=st.data())
    def partition_lost(self, data) -> None:
        partition = data.draw(st.sampled_from(sorted(self.assigned)))
        assert self.ledger.lost({partition}) == {partition}
        self.assigned.discard(partition)
        self._abandon_in_model(partition)

    @precondition(lambda self: len(self.assigned) < len(PARTITIONS))
    @rule(data=st.data())
    def partition_comes_back(self, data) -> None:
        partition = data.draw(st.sampled_from(sorted(set(PARTITIONS) - self.assigned)))
        self.assigned.add(partition)
        self.ledger.assigned(self.assigned)
        self._resume_from_commit(partition)

    @precondition(lambda self: self.assigned)
    @rule(data=st.data())
    def position_reset(self, data) -> None:
        """The consumer jumps back to the committed offset (e.g. an out-of-range reset)."""
        self._resume_from_commit(data.draw(st.sampled_from(sorted(self.assigned))))

    @rule()
    def crash_and_restart(self) -> None:
        """The source dies; a new one rejoins and resumes every partition from its commit."""
        self.ledger = InFlightLedger()
        self.in_flight, self.current = [], set()  # a dead process's news never arrives
        self.last_received = dict.fromkeys(PARTITIONS)
        self.assigned = set(PARTITIONS)
        self.ledger.assigned(self.assigned)
        for partition in PARTITIONS:
            self._resume_from_commit(partition)

    @rule()
    def drain_and_commit(self) -> None:
        """Handle everything held, commit: every assigned partition reaches its last record."""
        for ticket in sorted(self.current, key=lambda t: (t.partition, t.offset)):
            self.durable.add((ticket.partition, ticket.offset))
            assert self.ledger.complete(ticket) is not None
        self.current.clear()
        self.commit()
        assert self.ledger.in_flight == 0
        for partition in self.assigned:
            last = self.last_received[partition]
            if last is not None and last >= self.committed[partition]:
                assert self.committed[partition] == last + 1

    # -------------------------------------------------------------------- invariants

    @invariant()
    def no_commit_covers_a_record_that_is_not_durable(self) -> None:
        for partition, position in self.committed.items():
            missing = [
                o
                for o in self.log[partition]
                if o < position and (partition, o) not in self.durable
            ]
            assert not missing, f"partition {partition} committed {position} past {missing}"

    @invariant()
    def the_ledger_holds_exactly_the_current_records(self) -> None:
        assert self.ledger.in_flight == len(self.current)


TestLedgerAgainstKafka = LedgerAgainstKafka.TestCase
TestLedgerAgainstKafka.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


def test_a_late_completion_after_a_reset_does_not_move_the_commit() -> None:
    ledger = InFlightLedger()
    first = ledger.receive(0, 10, None, b"a", None)
    ledger.receive(0, 11, None, b"b", None)
    again = ledger.receive(0, 10, None, b"a", None)  # the consumer went back: a new epoch
    assert ledger.complete(first) is None and ledger.commit_positions({0}) == {}
    assert ledger.in_flight == 1  # only the re-read record is held
    assert ledger.complete(again) is not None
    assert ledger.commit_positions({0}) == {0: 11}


def test_commit_positions_cover_only_assigned_partitions() -> None:
    ledger = InFlightLedger()
    for partition in (0, 1):
        ledger.complete(ledger.receive(partition, 5, None, b"x", None))
    assert ledger.commit_positions({1}) == {1: 6}
    ledger.mark_committed({1: 6})
    assert ledger.commit_positions({0, 1}) == {0: 6}  # 1 has not moved since
