"""Progress of long steps as log lines: at most one per interval, with counts, rate and time left.

Long-running library code (encoding a catalogue, a backfill, training epochs) reports through
:class:`ProgressLog`; the entry point decides where log lines go (text or one JSON object per
line on stderr), so the same progress shows in a terminal, a Ray job log or a log pipeline::

    progress = ProgressLog(logger, "encode", total=len(items), unit="items")
    for batch in batches:
        ...
        progress.advance(len(batch))
    progress.finish()
"""

from __future__ import annotations

import logging
import time

DEFAULT_EVERY_S = 10.0


class ProgressLog:
    """Logs ``"<task>: 640/2,000 items (32 %), 45 items/s, about 30 s left"`` every ``every_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        task: str,
        total: int | None = None,
        unit: str = "items",
        every_s: float = DEFAULT_EVERY_S,
    ) -> None:
        self.logger = logger
        self.task = task
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self.done = 0
        self.started = time.monotonic()
        self._next = self.started + every_s

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more units; log a line when the interval has passed."""
        self.done += count
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            self.logger.info(self.line(now), extra=self.fields())

    def finish(self) -> None:
        """Log the final line (always)."""
        self.logger.info(self.line(time.monotonic(), final=True), extra=self.fields())

    def fields(self) -> dict[str, object]:
        """Structured fields of the line (top-level keys in JSON logs)."""
        return {"task": self.task, "done": self.done, "total": self.total, "unit": self.unit}

    def line(self, now: float, final: bool = False) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"
        parts = [f"{self.task}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f} %)"
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if final:
            parts.append(f"done in {elapsed:.1f} s")
        elif self.total and rate > 0 and self.done < self.total:
            parts.append(f"about {(self.total - self.done) / rate:.0f} s left")
        return ", ".join(parts)
