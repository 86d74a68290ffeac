"""The stream's counters and histograms, and their Prometheus exposition.

Each source actor accounts everything that happens to its records in one :class:`StreamStats`
(events in, proxies out by status, dead letters by reason, batch sizes, encode and end-to-end
latency, in-flight, pauses, commits, lag per partition, and every failure: sink errors, commit
failures, re-sent batches, actor replacements, refused model versions, rebalances); workers and
the sink report their part back with each batch, so no metric needs a second channel. The
driver merges the sources' snapshots (:func:`merge_stats`) and serves them on ``/metrics``
through :class:`StreamCollector`, beside the probes ``/healthz`` and ``/readyz``
(:func:`serve_metrics`); whether the job is ready is :func:`readiness` of the merged snapshot.

Histograms have fixed buckets (:class:`Histogram`), so snapshots merge exactly across sources;
quantiles are interpolated within a bucket (log-spaced buckets: within ~15 %).
"""

from __future__ import annotations

import bisect
import copy
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

logger = logging.getLogger(__name__)


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
    retries: int = 0  # batches re-sent after a failure (worker or sink)
    bisections: int = 0  # failing batches split in halves
    sink_errors: int = 0
    # Model versions published while running that workers refused (damaged, or trained for
    # another encoder, ID space or content); a set, so a version counts once however many
    # workers and sources refuse it.
    refused_model_versions: set[str] = field(default_factory=set)
    # What stops a lane writing, with the wall time it began ("sink_failing", "worker_replaced",
    # "sink_replaced"); a lane clears its stalls when it writes a batch or has none in flight.
    stalls: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None
    started_at: float = field(default_factory=time.time)
    taken_at: float | None = None  # when a live source took this snapshot (oldest, merged)
    first_event_at: float | None = None
    last_write_at: float | None = None

    @property
    def proxies_total(self) -> int:
        return sum(self.proxies_out.values())

    @property
    def dead_letters_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def refused_versions(self) -> int:
        """Model versions refused while running (each counted once)."""
        return len(self.refused_model_versions)

    def retired(self) -> StreamStats:
        """The counters of a source that no longer runs, without its gauges (partitions, lag,
        in flight, paused, stalls, snapshot time): merged with the live sources', they add to
        the totals and claim nothing about now."""
        counters = copy.deepcopy(self)
        counters.in_flight, counters.paused = 0, False
        counters.assigned, counters.lag, counters.stalls = (), {}, {}
        counters.taken_at = None
        return counters

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
        merged.bisections += stats.bisections
        merged.sink_errors += stats.sink_errors
        merged.refused_model_versions |= stats.refused_model_versions
        for stall, since in stats.stalls.items():
            merged.stalls[stall] = min(since, merged.stalls.get(stall, since))
        merged.model_version = stats.model_version or merged.model_version
        merged.started_at = min(merged.started_at, stats.started_at)
        merged.taken_at = _earliest(merged.taken_at, stats.taken_at)
        merged.first_event_at = _earliest(merged.first_event_at, stats.first_event_at)
        merged.last_write_at = _latest(merged.last_write_at, stats.last_write_at)
    if merged.started_at == math.inf:
        merged.started_at = time.time()
    return merged


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


READY_STALE_AFTER_S = 10.0  # counters older than this: a source is not answering

_STALL_REASONS = {
    "sink_failing": "the sink has failed for {age} with no batch written since "
    "(store or output topic down)",
    "sink_replaced": "the sink actor was replaced {age} ago and no batch has been written since",
    "worker_replaced": "a worker actor was replaced {age} ago and no batch has been written since",
    "worker_cannot_start": "a worker actor has failed to start for {age}",
    "sink_cannot_start": "the sink actor has failed to start for {age}",
}


@dataclass(frozen=True)
class Readiness:
    """Whether the job is consuming and writing; ``reason`` is one line either way."""

    ready: bool
    reason: str


def readiness(
    stats: StreamStats, now: float, stale_after_s: float = READY_STALE_AFTER_S
) -> Readiness:
    """Whether the job whose merged counters are ``stats`` is ready at wall time ``now`` (s).

    Not ready, checked in this order, when:

    1. no live source has reported yet (``taken_at`` None), or the oldest live snapshot is over
       ``stale_after_s`` old (a source stopped answering the driver);
    2. a lane is stalled (``stalls``): its sink raised, or its sink or a worker was replaced,
       and it has written no batch since while work is waiting — a store or output topic that
       fails makes the job not ready at its next write;
    3. no partition is assigned to any source (joining the group, a rebalance).

    Ready otherwise. An idle job whose store broke is noticed at its next write: readiness is
    judged from what the job did, not by probing the store.
    """
    if stats.taken_at is None:
        return Readiness(False, "no source has reported its counters yet")
    age = now - stats.taken_at
    if age > stale_after_s:
        return Readiness(
            False, f"the sources' counters are {age:.0f} s old: a source is not answering"
        )
    if stats.stalls:  # the one that began first
        stall, since = min(stats.stalls.items(), key=lambda entry: entry[1])
        template = _STALL_REASONS.get(stall, stall.replace("_", " ") + " for {age}")
        return Readiness(False, template.format(age=f"{max(0.0, now - since):.0f} s"))
    if not stats.assigned:
        return Readiness(False, "no partition is assigned to any source")
    return Readiness(True, f"consuming {len(stats.assigned)} partition(s)")


class StreamCollector:
    """Prometheus collector over the job's latest merged :class:`StreamStats`.

    Counters end in ``_total`` (``prometheus_client`` appends it); times are in seconds.
    ``idproxy_stream_ready`` is :func:`readiness` of the same snapshot, as ``/readyz`` answers.
    """

    def __init__(
        self,
        snapshot: Callable[[], StreamStats],
        prefix: str = "idproxy_stream",
        stale_after_s: float = READY_STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.snapshot = snapshot
        self.prefix = prefix
        self.stale_after_s = stale_after_s
        self.clock = clock

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def collect(self) -> Iterator:
        stats = self.snapshot()
        yield self._counter("events_in", "Records read from the input topic", stats.events_in)
        yield self._labelled(
            CounterMetricFamily,
            "proxies_out",
            "Proxy rows durably written, by status",
            "status",
            stats.proxies_out,
        )
        yield self._labelled(
            CounterMetricFamily,
            "rows_by_model_version",
            "Proxy rows written, by model version",
            "model_version",
            stats.rows_by_version,
        )
        yield self._labelled(
            CounterMetricFamily,
            "dead_letters",
            "Records sent to the dead-letter topic, by reason",
            "reason",
            stats.dead_letters,
        )
        yield self._counter(
            "dead_letters_given_up",
            "Dead letters the broker refused for good (not on the topic; their records completed)",
            stats.dead_letters_given_up,
        )
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
        yield self._counter(
            "commit_failures", "Offset commits that failed (retried later)", stats.commit_failures
        )
        yield self._counter(
            "sink_errors",
            "Times the sink raised for a batch (store or output topic failing; retried)",
            stats.sink_errors,
        )
        yield self._counter(
            "batch_resends",
            "Batches re-sent after a worker or sink failure",
            stats.retries,
        )
        yield self._counter(
            "batch_bisections",
            "Failing batches split in halves before any event is dead-lettered",
            stats.bisections,
        )
        yield self._counter(
            "refused_model_versions",
            "Model versions published while running that the workers refused (each once)",
            stats.refused_versions,
        )
        yield self._counter(
            "rebalances", "Partition assignments received from the group", stats.rebalances
        )
        void_rate = stats.void_rate
        yield self._gauge(
            "void_rate",
            "Share of written proxies flagged void",
            0.0 if void_rate is None else void_rate,
        )
        yield self._labelled(
            GaugeMetricFamily,
            "consumer_lag",
            "Records behind the partition end",
            "partition",
            {str(partition): behind for partition, behind in stats.lag.items()},
        )
        yield self._gauge(
            "assigned_partitions", "Partitions assigned to the sources", len(stats.assigned)
        )
        yield self._labelled(
            CounterMetricFamily,
            "actor_restarts",
            "Actors replaced after dying, by role",
            "role",
            stats.restarts,
        )
        ready = readiness(stats, self.clock(), self.stale_after_s)
        yield self._gauge(
            "ready", "1 when /readyz answers 200 (consuming and writing)", int(ready.ready)
        )

    def _labelled(self, family: type, name: str, documentation: str, label: str, values: dict):
        metric = family(self._name(name), documentation, labels=[label])
        for key, value in sorted(values.items()):
            metric.add_metric([str(key)], value)
        return metric

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


class MetricsServer(ThreadingHTTPServer):
    """``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz`` from daemon threads.

    ``/healthz``: 200 while the process serves at all. ``/readyz``: 200 when :func:`readiness`
    of the latest snapshot holds, else 503; the body is its one-line reason. Anything else: 404.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        snapshot: Callable[[], StreamStats],
        stale_after_s: float = READY_STALE_AFTER_S,
    ) -> None:
        self.address_family = _address_family(*address)
        super().__init__(address, _ProbeHandler)
        self.snapshot = snapshot
        self.stale_after_s = stale_after_s
        self.registry = CollectorRegistry()
        self.registry.register(StreamCollector(snapshot, stale_after_s=stale_after_s))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def readiness(self) -> Readiness:
        return readiness(self.snapshot(), time.time(), self.stale_after_s)

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="idproxy-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for an IPv6 host (``::1``), IPv4 otherwise."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


class _ProbeHandler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.readiness()
            self._reply(200 if ready.ready else 503, f"{ready.reason}\n".encode())
        else:
            self._reply(404, b"not found: /metrics, /healthz and /readyz are served here\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logger.debug("metrics http: " + format, *args)


def serve_metrics(
    port: int,
    snapshot: Callable[[], StreamStats],
    addr: str = "127.0.0.1",
    stale_after_s: float = READY_STALE_AFTER_S,
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for ``snapshot`` on ``addr:port``
    (``port`` 0: a free one, see ``server.port``) from a daemon thread.

    Returns the running server; ``stop()`` it (shutdown and close) to release the port. A port
    that cannot be bound raises ``OSError`` here, before anything else starts.
    """
    return MetricsServer((addr, port), snapshot, stale_after_s).start()
