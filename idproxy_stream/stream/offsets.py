"""Which offsets may be committed: the contiguous run of completed records, per partition.

Records of a partition are handed out in offset order but complete in any order (batches run
on several workers). A partition's commit position is the offset *after* the longest prefix of
received records that are all complete: committing it tells Kafka "everything before this is
durably written". Offsets need not be consecutive (compacted topics, transaction markers): the
prefix is over the records actually received.

On revocation (or when a partition's records arrive out of order, e.g. after a position reset)
the partition's state is forgotten and its *epoch* increases; a completion that carries an
older epoch is stale and ignored, so work started before a rebalance never moves a commit.

Pure logic, no Kafka: the in-flight ledger (``stream/ledger.py``) holds one, under its lock.

Example::

    tracker = OffsetTracker()
    a, b = tracker.begin(0, 10), tracker.begin(0, 11)
    tracker.complete(b)
    tracker.commit_positions()      # {} : offset 10 is still in flight
    tracker.complete(a)
    tracker.commit_positions()      # {0: 12}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ticket:
    """One received record: its partition, offset and the partition's epoch when it arrived."""

    partition: int
    offset: int
    epoch: int


@dataclass
class _PartitionState:
    epoch: int
    pending: dict[int, bool] = field(default_factory=dict)  # offset -> done, in arrival order
    last_begun: int | None = None
    position: int | None = None  # offset after the completed prefix
    committed: int | None = None  # last position handed out by commit_positions


class OffsetTracker:
    """Per-partition record completion; commit positions cover only completed prefixes."""

    def __init__(self) -> None:
        self._partitions: dict[int, _PartitionState] = {}
        self._epochs: dict[int, int] = {}

    def _state(self, partition: int) -> _PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = _PartitionState(epoch=self._epochs.get(partition, 0))
            self._partitions[partition] = state
        return state

    def begin(self, partition: int, offset: int) -> Ticket:
        """Register a received record; returns the ticket to complete it with.

        An offset not greater than the partition's previous one means the consumer went back
        (a position reset): the partition starts over under a new epoch.
        """
        state = self._state(partition)
        if state.last_begun is not None and offset <= state.last_begun:
            logger.warning(
                "partition %d went back from offset %d to %d: forgetting its in-flight records",
                partition,
                state.last_begun,
                offset,
            )
            self.forget([partition])
            state = self._state(partition)
        state.pending[offset] = False
        state.last_begun = offset
        return Ticket(partition, offset, state.epoch)

    def complete(self, ticket: Ticket) -> bool:
        """Mark a record durably handled; False when the ticket is stale (or already done)."""
        state = self._partitions.get(ticket.partition)
        if state is None or state.epoch != ticket.epoch:
            return False
        if state.pending.get(ticket.offset) is not False:
            return False
        state.pending[ticket.offset] = True
        while state.pending:
            first = next(iter(state.pending))
            if not state.pending[first]:
                break
            del state.pending[first]
            state.position = first + 1
        return True

    def commit_positions(self) -> dict[int, int]:
        """Partition -> offset to commit, for partitions whose position moved since last time."""
        moved: dict[int, int] = {}
        for partition, state in self._partitions.items():
            if state.position is not None and state.position != state.committed:
                moved[partition] = state.position
        return moved

    def mark_committed(self, positions: dict[int, int]) -> None:
        """Record that ``positions`` (from :meth:`commit_positions`) reached Kafka."""
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None and state.position is not None and position <= state.position:
                state.committed = position

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the partitions' state (revoked): their in-flight tickets become stale."""
        for partition in partitions:
            self._epochs[partition] = self._epochs.get(partition, 0) + 1
            self._partitions.pop(partition, None)

    def epoch(self, partition: int) -> int:
        """The partition's current epoch (it grows each time the partition is forgotten)."""
        state = self._partitions.get(partition)
        return self._epochs.get(partition, 0) if state is None else state.epoch

    def is_current(self, ticket: Ticket) -> bool:
        """Whether the ticket belongs to the partition's current epoch."""
        state = self._partitions.get(ticket.partition)
        return state is not None and state.epoch == ticket.epoch

    def in_flight(self, partition: int | None = None) -> int:
        """Records received but not yet in a completed prefix (of one partition, or all)."""
        if partition is not None:
            state = self._partitions.get(partition)
            return 0 if state is None else len(state.pending)
        return sum(len(state.pending) for state in self._partitions.values())

    def position(self, partition: int) -> int | None:
        """The partition's commit position (offset after the completed prefix), if any."""
        state = self._partitions.get(partition)
        return None if state is None else state.position

    def partitions(self) -> list[int]:
        return sorted(self._partitions)
