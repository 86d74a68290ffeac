"""Jittered, capped exponential back-off: how long to wait before the n-th retry.

Used by the dispatcher (a batch whose sink write failed) and the dead-letter outbox (a letter
the broker did not take), so that retries of many batches or letters never arrive together
and a failure that repeats never turns into a busy loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with jitter: ``min(max_s, base_s * 2**(n-1))`` for the n-th
    failure, scaled by a random factor in ``[1 - jitter, 1]`` so retries of many batches do
    not arrive together."""

    base_s: float = 0.5
    max_s: float = 10.0
    jitter: float = 0.5

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        ceiling = min(self.max_s, self.base_s * 2 ** min(failures - 1, 32))
        return ceiling * (1.0 - self.jitter * rng.random())
