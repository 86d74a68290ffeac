"""Dynamic batching: group events into encoder batches by size or by waiting time.

A batch is released as soon as it holds ``max_batch_size`` events, or when its oldest event has
waited ``max_wait_s``: under load batches are full (throughput), at a trickle an event waits at
most ``max_wait_s`` (latency). Pure logic with an injected clock; the source feeds it and sends
released batches to the worker actors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class DynamicBatcher(Generic[Item]):
    """Accumulates items; :meth:`ready` releases full batches and batches that waited long enough.

    Example::

        batcher = DynamicBatcher(max_batch_size=32, max_wait_s=0.02)
        batcher.add(event, now=0.0)
        batcher.ready(now=0.01)     # []  (1 item, waited 10 ms)
        batcher.ready(now=0.03)     # [[event]]
    """

    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: list[tuple[float, Item]] = []  # (arrival time, item), oldest first

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Item, now: float) -> None:
        self._queue.append((now, item))

    def ready(self, now: float, limit: int | None = None) -> list[list[Item]]:
        """Batches to send now: every full batch, then the rest if its oldest item waited enough.

        ``limit`` caps how many batches are released (the rest stay queued).
        """
        released: list[list[Item]] = []
        while self._queue and (limit is None or len(released) < limit):
            full = len(self._queue) >= self.max_batch_size
            due = now - self._queue[0][0] >= self.max_wait_s
            if not (full or due):
                break
            released.append(self._take(min(len(self._queue), self.max_batch_size)))
        return released

    def drain(self) -> list[list[Item]]:
        """Every queued item, in batches of at most ``max_batch_size`` (for shutdown)."""
        released = []
        while self._queue:
            released.append(self._take(min(len(self._queue), self.max_batch_size)))
        return released

    def seconds_until_due(self, now: float) -> float | None:
        """How long until the oldest queued item is due; None when nothing is queued."""
        if not self._queue:
            return None
        return max(0.0, self._queue[0][0] + self.max_wait_s - now)

    def remove(self, keep: Callable[[Item], bool]) -> int:
        """Drop queued items for which ``keep`` is False (revoked partitions); returns how many."""
        before = len(self._queue)
        self._queue = [entry for entry in self._queue if keep(entry[1])]
        return before - len(self._queue)

    def _take(self, count: int) -> list[Item]:
        taken, self._queue = self._queue[:count], self._queue[count:]
        return [item for _, item in taken]
