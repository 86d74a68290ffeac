"""The stream's counters and histograms, and their Prometheus exposition.

Each source actor accounts everything that happens to its records in one :class:`StreamStats`
(events in, proxies out by status, dead letters by reason, batch sizes, encode and end-to-end
latency, in-flight, pauses, commits, lag per partition, actor restarts); workers and the sink
report their part back with each batch, so no metric needs a second channel. The driver merges
the sources' snapshots (:func:`merge_stats`) and serves them on ``/metrics`` through
:class:`StreamCollector`.

Histograms have fixed buckets (:class:`Histogram`), so snapshots merge exactly across sources;
quantiles are interpolated within a bucket (log-spaced buckets: within ~15 %).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


def log_buckets(low: float, high: float, per_decade: int) -> tuple[float, ...]:
    """Upper bounds ``low .. >= high``, ``per_decade`` per factor of 10."""
    count = math.ceil(math.log10(high / low) * per_decade)
    return tuple(round(low * 10 ** (step / per_decade), 6) for step in range(count + 1))


LATENCY_BUCKETS_S = log_buckets(0.001, 120.0, 8)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)


@dataclass
class Histogram:
    """Counts per bucket (``counts[i]`` = observations ``<= bounds[i]``, last = overflow)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times

    def merge(self, other: Histogram) -> None:
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different buckets")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """Approximate ``q``-quantile (linear within the bucket); None without observations."""
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low = self.bounds[index - 1] if index > 0 else 0.0
                high = self.bounds[index] if index < len(self.bounds) else self.bounds[-1]
                return low + (high - low) * max(0.0, rank - seen) / count
            seen += count
        return self.bounds[-1]

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: ``[(le, cumulative count), ..., ("+Inf", total)]``."""
        running, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((repr(float(bound)), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets


@dataclass
class StreamStats:
    """Everything a source counted, as one picklable snapshot (merged across sources)."""

    events_in: int = 0
    proxies_out: Counter = field(default_factory=Counter)  # by ProxyRecord status
    rows_by_version: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)  # by reason
    dead_letters_given_up: int = 0  # letters the broker refused for good (record completed)
    batches: int = 0
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    encode_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    latency_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    in_flight: int = 0
    peak_in_flight: int = 0
    paused: bool = False
    pauses: int = 0
    resumes: int = 0
    commits: int = 0
    commit_failures: int = 0
    committed: dict[int, int] = field(default_factory=dict)  # partition -> offset
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records behind
    assigned: tuple[int, ...] = ()
    rebalances: int = 0
    restarts: Counter = field(default_factory=Counter)  # by actor role
    retries: int = 0
    sink_errors: int = 0
    model_version: str | None = None
    started_at: float = field(default_factory=time.time)
    first_event_at: float | None = None
    last_write_at: float | None = None

    @property
    def proxies_total(self) -> int:
        return sum(self.proxies_out.values())

    @property
    def dead_letters_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def void_rate(self) -> float | None:
        """Share of written proxies that the neighbour check found void."""
        total = self.proxies_total
        return None if total == 0 else (total - self.proxies_out.get("ok", 0)) / total

    def items_per_second(self) -> float | None:
        """Proxies + dead letters per second between the first event and the last write."""
        if self.first_event_at is None or self.last_write_at is None:
            return None
        seconds = self.last_write_at - self.first_event_at
        done = self.proxies_total + self.dead_letters_total
        return done / seconds if seconds > 0 else None


def merge_stats(snapshots: Iterable[StreamStats]) -> StreamStats:
    """One snapshot summing the sources' counters (partitions are disjoint per source)."""
    merged = StreamStats()
    merged.started_at = math.inf
    for stats in snapshots:
        merged.events_in += stats.events_in
        merged.proxies_out.update(stats.proxies_out)
        merged.rows_by_version.update(stats.rows_by_version)
        merged.dead_letters.update(stats.dead_letters)
        merged.dead_letters_given_up += stats.dead_letters_given_up
        merged.batches += stats.batches
        merged.batch_size.merge(stats.batch_size)
        merged.encode_seconds.merge(stats.encode_seconds)
        merged.latency_seconds.merge(stats.latency_seconds)
        merged.in_flight += stats.in_flight
        merged.peak_in_flight = max(merged.peak_in_flight, stats.peak_in_flight)
        merged.paused = merged.paused or stats.paused
        merged.pauses += stats.pauses
        merged.resumes += stats.resumes
        merged.commits += stats.commits
        merged.commit_failures += stats.commit_failures
        merged.committed.update(stats.committed)
        merged.lag.update(stats.lag)
        merged.assigned = tuple(sorted({*merged.assigned, *stats.assigned}))
        merged.rebalances += stats.rebalances
        merged.restarts.update(stats.restarts)
        merged.retries += stats.retries
        merged.sink_errors += stats.sink_errors
        merged.model_version = stats.model_version or merged.model_version
        merged.started_at = min(merged.started_at, stats.started_at)
        merged.first_event_at = _earliest(merged.first_event_at, stats.first_event_at)
        merged.last_write_at = _latest(merged.last_write_at, stats.last_write_at)
    if merged.started_at == math.inf:
        merged.started_at = time.time()
    return merged


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


class StreamCollector:
    """Prometheus collector over the job's latest merged :class:`StreamStats`."""

    def __init__(self, snapshot: Callable[[], StreamStats], prefix: str = "idproxy_stream") -> None:
        self.snapshot = snapshot
        self.prefix = prefix

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def collect(self) -> Iterator:
        stats = self.snapshot()
        yield self._counter("events_in", "Records read from the input topic", stats.events_in)
        proxies = CounterMetricFamily(
            self._name("proxies_out"), "Proxy rows durably written, by status", labels=["status"]
        )
        for status, count in sorted(stats.proxies_out.items()):
            proxies.add_metric([status], count)
        yield proxies
        versions = CounterMetricFamily(
            self._name("rows_by_model_version"),
            "Proxy rows written, by model version",
            labels=["model_version"],
        )
        for version, count in sorted(stats.rows_by_version.items()):
            versions.add_metric([version], count)
        yield versions
        dead = CounterMetricFamily(
            self._name("dead_letters"),
            "Records sent to the dead-letter topic, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dead_letters.items()):
            dead.add_metric([reason], count)
        yield dead
        yield self._histogram("batch_size", "Events per encoder batch", stats.batch_size)
        yield self._histogram(
            "encode_latency_seconds",
            "Worker time per batch (encode + proxy head)",
            stats.encode_seconds,
        )
        yield self._histogram(
            "end_to_end_latency_seconds",
            "Record timestamp to durable write, per proxy row",
            stats.latency_seconds,
        )
        yield self._gauge(
            "in_flight", "Records received but not yet durably handled", stats.in_flight
        )
        yield self._gauge("paused", "1 while backpressure pauses the partitions", int(stats.paused))
        yield self._counter("pauses", "Times backpressure paused the partitions", stats.pauses)
        yield self._counter("commits", "Offset commits that succeeded", stats.commits)
        void_rate = stats.void_rate
        yield self._gauge(
            "void_rate",
            "Share of written proxies flagged void",
            0.0 if void_rate is None else void_rate,
        )
        lag = GaugeMetricFamily(
            self._name("consumer_lag"), "Records behind the partition end", labels=["partition"]
        )
        for partition, behind in sorted(stats.lag.items()):
            lag.add_metric([str(partition)], behind)
        yield lag
        restarts = CounterMetricFamily(
            self._name("actor_restarts"), "Actors replaced after dying", labels=["role"]
        )
        for role, count in sorted(stats.restarts.items()):
            restarts.add_metric([role], count)
        yield restarts

    def _counter(self, name: str, documentation: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(self._name(name), documentation, value=value)

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name(name), documentation, value=value)

    def _histogram(self, name: str, documentation: str, histogram: Histogram):
        return HistogramMetricFamily(
            self._name(name),
            documentation,
            buckets=histogram.cumulative(),
            sum_value=histogram.total,
        )


def serve_metrics(port: int, snapshot: Callable[[], StreamStats], addr: str = "127.0.0.1"):
    """Serve ``/metrics`` for ``snapshot`` on ``port`` from a daemon thread.

    Returns the server; call ``shutdown()`` and ``server_close()`` on it to stop.
    """
    registry = CollectorRegistry()
    registry.register(StreamCollector(snapshot))
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return server
