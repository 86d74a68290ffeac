"""Backpressure: pause the consumer's partitions while too much work is in flight.

The source counts records received but not yet durably handled (written or dead-lettered).
When that count reaches ``max_in_flight`` the partitions are paused; they resume once it drains
to ``resume_below`` (hysteresis, so the consumer does not flap). While paused the consumer
keeps calling ``poll`` — it returns nothing for paused partitions but keeps the member alive in
the group, so pausing never triggers a rebalance. :meth:`poll_budget` caps each poll so the
count never passes the bound.

Pure logic: the source applies the decisions to its ``KafkaConsumer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["pause", "resume"]


@dataclass
class Backpressure:
    """In-flight bound with hysteresis; counts pauses, resumes and the peak seen."""

    max_in_flight: int
    resume_below: int
    paused: bool = False
    pauses: int = 0
    resumes: int = 0
    peak_in_flight: int = 0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if not 0 <= self.resume_below < self.max_in_flight:
            raise ValueError(
                f"resume_below ({self.resume_below}) must be in [0, max_in_flight="
                f"{self.max_in_flight}): set stream.resume_below lower"
            )

    def update(self, in_flight: int) -> Action | None:
        """The action to take for the current in-flight count, if any."""
        self.peak_in_flight = max(self.peak_in_flight, in_flight)
        if not self.paused and in_flight >= self.max_in_flight:
            self.paused = True
            self.pauses += 1
            return "pause"
        if self.paused and in_flight <= self.resume_below:
            self.paused = False
            self.resumes += 1
            return "resume"
        return None

    def poll_budget(self, in_flight: int, max_poll_records: int) -> int:
        """Most records the next poll may return without passing the bound (at least 1).

        At the bound the partitions are paused, so a poll of 1 returns nothing.
        """
        return max(1, min(max_poll_records, self.max_in_flight - in_flight))
