"""The one-line terminal status of a running stream (the CLI prints it; this only formats).

Example line::

    events 12,480 | proxies 12,001 (void 3.2%) | dead letters 479 | 431 items/s |
    p50 84 ms p99 310 ms | in flight 64 | lag 0 | model v20261124T120000
"""

from __future__ import annotations

import time

from idproxy_stream.stream.metrics import StreamStats


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


class StatusLine:
    """Formats snapshots; the rate is over the interval since the previous one."""

    def __init__(self) -> None:
        self._previous: tuple[float, int] | None = None

    def update(self, stats: StreamStats, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        done = stats.proxies_total + stats.dead_letters_total
        rate = None
        if self._previous is not None and now > self._previous[0]:
            rate = (done - self._previous[1]) / (now - self._previous[0])
        self._previous = (now, done)
        void = stats.void_rate
        parts = [
            f"events {stats.events_in:,}",
            f"proxies {stats.proxies_total:,}"
            + ("" if void is None else f" (void {100 * void:.1f}%)"),
            f"dead letters {stats.dead_letters_total:,}",
            "- items/s" if rate is None else f"{rate:,.0f} items/s",
            f"p50 {format_seconds(stats.latency_seconds.quantile(0.5))} "
            f"p99 {format_seconds(stats.latency_seconds.quantile(0.99))}",
            f"in flight {stats.in_flight:,}" + (" (paused)" if stats.paused else ""),
            f"lag {sum(stats.lag.values()):,}",
            f"model {stats.model_version or '-'}",
        ]
        restarts = sum(stats.restarts.values())
        if restarts:
            parts.append(f"restarts {restarts}")
        return " | ".join(parts)
