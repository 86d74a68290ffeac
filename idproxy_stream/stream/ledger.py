"""The in-flight ledger: which received records are still owed a durable outcome, and what
may be committed.

The stream's at-least-once guarantee lives here, in one small class without Kafka or Ray
(tested by a hypothesis state machine in ``tests/stream/test_ledger.py``). Every record the
source receives is *held* under a :class:`~idproxy_stream.stream.offsets.Ticket` (partition,
offset, the partition's epoch) with its bytes, until it is durably handled: its row written
(:meth:`InFlightLedger.complete`) or its dead letter acknowledged. The commit position of a
partition is the offset after its longest run of handled records
(:meth:`InFlightLedger.commit_positions`), so a commit never covers a record that is not
durable.

**The one rule for late news.** A completion, a retry or a dead letter is acted on only while
its ticket is *current*: the record is still held under that same ticket
(:meth:`InFlightLedger.is_current`). Work started before a partition was abandoned (revoked
for good, lost, or reset to an earlier offset) carries tickets of an older epoch and is
ignored; the partition's new owner (or the re-read from the last commit) handles those
records again, and the store's idempotent upsert makes the replay harmless.

**Rebalances.** A partition's work is abandoned exactly when kafka-python drops its fetch
state. Under the eager protocol a revocation is only a notice: partitions handed straight back
keep their fetch positions, so their work is kept too (:meth:`InFlightLedger.revoked` defers the
decision to the next :meth:`InFlightLedger.assigned`); partitions not handed back, and lost
ones, are forgotten.

Thread safety: every method takes the ledger's lock, so kafka-python's rebalance callbacks and
the source's loop may call it from different threads.

Example::

    ledger = InFlightLedger()
    a = ledger.receive(0, 10, key=None, value=b"{...}", timestamp_ms=None)
    b = ledger.receive(0, 11, key=None, value=b"{...}", timestamp_ms=None)
    ledger.complete(b)
    ledger.commit_positions({0})     # {} : offset 10 is still in flight
    ledger.complete(a)
    ledger.commit_positions({0})     # {0: 12}
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from idproxy_stream.stream.offsets import OffsetTracker, Ticket

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass
class HeldRecord:
    """A record received and not yet durably handled; keeps the bytes for its dead letter."""

    ticket: Ticket
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    item_id: int | None = None


class InFlightLedger:
    """Held records, their offsets, the "still current" rule and the commit positions."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tracker = OffsetTracker()
        self._held: dict[tuple[int, int], HeldRecord] = {}
        self._revoked_pending: set[int] = set()
        self._committed: dict[int, int] = {}  # highest position committed, across epochs
        self.abandonments = 0  # how many times some partition's work was abandoned

    # ------------------------------------------------------------------ records

    def receive(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
        item_id: int | None = None,
    ) -> Ticket:
        """Hold a received record; returns its ticket.

        An offset not above the partition's previous one means the consumer went back (a
        position reset): the partition's work is abandoned and it starts over under a new epoch.
        """
        with self._lock:
            epoch = self._tracker.epoch(partition)
            ticket = self._tracker.begin(partition, offset)
            if ticket.epoch != epoch:  # the partition started over: its old records are stale
                self._drop_held({partition})
                self.abandonments += 1
            self._held[(partition, offset)] = HeldRecord(ticket, key, value, timestamp_ms, item_id)
            return ticket

    def is_current(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s record is still held under this very ticket: the one test any
        late completion, retry or dead letter must pass before it is acted on."""
        with self._lock:
            held = self._held.get((ticket.partition, ticket.offset))
            return held is not None and held.ticket == ticket

    def current(self, entries: Iterable[tuple[Item, Ticket]]) -> list[tuple[Item, Ticket]]:
        """The ``(item, ticket)`` entries whose tickets are current, in order."""
        with self._lock:
            return [(item, ticket) for item, ticket in entries if self.is_current(ticket)]

    def held(self, ticket: Ticket) -> HeldRecord | None:
        """The held record of a current ticket (for its dead letter), None when stale."""
        with self._lock:
            if not self.is_current(ticket):
                return None
            return self._held[(ticket.partition, ticket.offset)]

    def complete(self, ticket: Ticket) -> HeldRecord | None:
        """Mark a record durably handled; returns it, or None when the ticket is stale (or the
        record was already completed) and nothing changed."""
        with self._lock:
            if not self.is_current(ticket) or not self._tracker.complete(ticket):
                return None
            return self._held.pop((ticket.partition, ticket.offset))

    @property
    def in_flight(self) -> int:
        """Records received and not yet durably handled."""
        with self._lock:
            return len(self._held)

    # ------------------------------------------------------------------ commits

    def commit_positions(self, assigned: Iterable[int]) -> dict[int, int]:
        """Partition -> offset to commit, for ``assigned`` partitions whose position moved.

        Never below a position this ledger committed before: after a reset to an earlier
        offset the partition commits again only once it passes it (going back would only
        make a restart re-read more).
        """
        assigned = set(assigned)
        with self._lock:
            return {
                p: o
                for p, o in self._tracker.commit_positions().items()
                if p in assigned and o > self._committed.get(p, -1)
            }

    def mark_committed(self, positions: dict[int, int]) -> None:
        """Record that ``positions`` (from :meth:`commit_positions`) reached Kafka."""
        with self._lock:
            self._tracker.mark_committed(positions)
            for partition, position in positions.items():
                self._committed[partition] = max(position, self._committed.get(partition, -1))

    def position(self, partition: int) -> int | None:
        """The offset after the partition's handled prefix, if any record was handled."""
        with self._lock:
            return self._tracker.position(partition)

    # --------------------------------------------------------------- rebalances

    def revoked(self, partitions: Iterable[int], still_assigned: Iterable[int]) -> set[int]:
        """kafka-python revoked ``partitions``; returns those abandoned now.

        Those no longer assigned are abandoned at once (cooperative protocol); those still
        assigned (eager protocol) wait for the next :meth:`assigned` to tell whether they
        came back.
        """
        partitions, still_assigned = set(partitions), set(still_assigned)
        with self._lock:
            self._revoked_pending |= partitions & still_assigned
            return self.abandon(partitions - still_assigned)

    def assigned(self, current: Iterable[int]) -> set[int]:
        """The assignment is now ``current``; returns the revoked partitions abandoned now."""
        with self._lock:
            gone = self._revoked_pending - set(current)
            self._revoked_pending.clear()
            return self.abandon(gone)

    def lost(self, partitions: Iterable[int]) -> set[int]:
        """Group membership was lost for ``partitions``; returns them (all abandoned)."""
        partitions = set(partitions)
        with self._lock:
            self._revoked_pending -= partitions
            return self.abandon(partitions)

    def abandon(self, partitions: Iterable[int]) -> set[int]:
        """Forget the partitions' work without commit: their tickets turn stale."""
        partitions = set(partitions)
        if not partitions:
            return partitions
        with self._lock:
            self._tracker.forget(partitions)
            self._drop_held(partitions)
            self.abandonments += 1
        logger.info(
            "partitions %s gone; their in-flight work is abandoned without commit",
            sorted(partitions),
            extra={"partitions": sorted(partitions)},
        )
        return partitions

    def _drop_held(self, partitions: set[int]) -> None:
        for key in [key for key in self._held if key[0] in partitions]:
            del self._held[key]
