"""Stream counters: histogram quantiles and merging, Prometheus exposition, the status line."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from idproxy_stream.stream.metrics import (
    LATENCY_BUCKETS_S,
    Histogram,
    StreamCollector,
    StreamStats,
    merge_stats,
    readiness,
    serve_metrics,
)
from idproxy_stream.stream.status import StatusLine

NOW = 1_800_000_000.0


def test_histogram_quantiles_fall_in_the_right_bucket() -> None:
    histogram = Histogram(LATENCY_BUCKETS_S)
    for value in [0.05] * 90 + [2.0] * 10:
        histogram.observe(value)
    assert 0.04 <= histogram.quantile(0.5) <= 0.06
    assert 1.7 <= histogram.quantile(0.99) <= 2.4
    assert histogram.count == 100 and abs(histogram.total - 24.5) < 1e-9
    assert Histogram(LATENCY_BUCKETS_S).quantile(0.5) is None


def test_merging_sources_adds_counts_and_keeps_partitions_apart() -> None:
    a, b = StreamStats(events_in=3), StreamStats(events_in=4)
    a.proxies_out.update({"ok": 2, "void_flagged": 1})
    b.proxies_out.update({"ok": 4})
    a.committed, b.committed = {0: 10}, {1: 20}
    a.latency_seconds.observe(0.1)
    b.latency_seconds.observe(0.2, times=3)
    merged = merge_stats([a, b])
    assert merged.events_in == 7 and merged.proxies_total == 7
    assert merged.committed == {0: 10, 1: 20}
    assert merged.latency_seconds.count == 4
    assert abs(merged.void_rate - 1 / 7) < 1e-12


def test_prometheus_exposition_names_every_metric() -> None:
    stats = StreamStats(events_in=5, in_flight=2)
    stats.dead_letters["not_json"] = 1
    stats.proxies_out["ok"] = 4
    stats.lag = {3: 7}
    stats.batch_size.observe(4)
    registry = CollectorRegistry()
    registry.register(StreamCollector(lambda: stats))
    text = generate_latest(registry).decode()
    for line in (
        "idproxy_stream_events_in_total 5.0",
        'idproxy_stream_dead_letters_total{reason="not_json"} 1.0',
        'idproxy_stream_proxies_out_total{status="ok"} 4.0',
        'idproxy_stream_consumer_lag{partition="3"} 7.0',
        'idproxy_stream_batch_size_bucket{le="4.0"} 1.0',
        "idproxy_stream_in_flight 2.0",
        "idproxy_stream_void_rate 0.0",
    ):
        assert line in text, line


def test_status_line_reports_the_rate_since_the_previous_snapshot() -> None:
    status = StatusLine()
    stats = StreamStats(events_in=10, model_version="v1")
    stats.proxies_out["ok"] = 10
    first = status.update(stats, now=100.0)
    stats.proxies_out["ok"] = 60
    second = status.update(stats, now=102.0)
    assert "- items/s" in first and "model v1" in first
    assert "25 items/s" in second and "proxies 60" in second


def failing_stats() -> StreamStats:
    """A snapshot in which every failure the job counts has happened a distinct number of times."""
    stats = StreamStats(
        sink_errors=3,
        commit_failures=4,
        retries=5,
        bisections=6,
        rebalances=7,
        dead_letters_given_up=8,
        refused_model_versions={"v2", "v3"},
    )
    stats.restarts.update({"worker": 2, "sink": 1, "source": 9})
    stats.dead_letters.update({"not_json": 10, "worker_died": 11})
    return stats


def exposition(stats: StreamStats, now: float = NOW) -> str:
    registry = CollectorRegistry()
    registry.register(StreamCollector(lambda: stats, clock=lambda: now))
    return generate_latest(registry).decode()


def test_every_failure_the_job_counts_is_exported_as_a_total() -> None:
    text = exposition(failing_stats())
    for line in (
        "idproxy_stream_sink_errors_total 3.0",
        "idproxy_stream_commit_failures_total 4.0",
        "idproxy_stream_batch_resends_total 5.0",
        "idproxy_stream_batch_bisections_total 6.0",
        "idproxy_stream_rebalances_total 7.0",
        "idproxy_stream_dead_letters_given_up_total 8.0",
        "idproxy_stream_refused_model_versions_total 2.0",
        'idproxy_stream_actor_restarts_total{role="worker"} 2.0',
        'idproxy_stream_actor_restarts_total{role="sink"} 1.0',
        'idproxy_stream_actor_restarts_total{role="source"} 9.0',
        'idproxy_stream_dead_letters_total{reason="not_json"} 10.0',
        'idproxy_stream_dead_letters_total{reason="worker_died"} 11.0',
        "# TYPE idproxy_stream_sink_errors_total counter",
        "idproxy_stream_ready 0.0",  # no source has reported
    ):
        assert line in text, line


def test_merging_counts_a_refused_version_once_and_keeps_the_earliest_stall() -> None:
    a = StreamStats(sink_errors=1, retries=2, bisections=1, commit_failures=1, taken_at=NOW - 3)
    b = StreamStats(sink_errors=2, retries=1, dead_letters_given_up=4, taken_at=NOW - 1)
    a.refused_model_versions, b.refused_model_versions = {"v2"}, {"v2", "v3"}
    a.stalls, b.stalls = {"sink_failing": NOW - 9}, {"sink_failing": NOW - 5, "sink_replaced": NOW}
    merged = merge_stats([a, b])
    assert (merged.sink_errors, merged.retries, merged.bisections) == (3, 3, 1)
    assert (merged.commit_failures, merged.dead_letters_given_up) == (1, 4)
    assert merged.refused_versions == 2  # v2 refused by both lanes counts once
    assert merged.stalls == {"sink_failing": NOW - 9, "sink_replaced": NOW}
    assert merged.taken_at == NOW - 3  # the oldest live snapshot


def test_a_retired_source_adds_its_totals_but_claims_no_partitions_or_stalls() -> None:
    dead = StreamStats(events_in=5, sink_errors=2, in_flight=3, assigned=(0, 1), taken_at=NOW - 60)
    dead.lag, dead.stalls = {0: 9}, {"sink_failing": NOW - 70}
    live = StreamStats(events_in=1, assigned=(2,), taken_at=NOW)
    merged = merge_stats([dead.retired(), live])
    assert (merged.events_in, merged.sink_errors) == (6, 2)
    assert (merged.assigned, merged.lag, merged.in_flight) == ((2,), {}, 0)
    assert merged.stalls == {} and merged.taken_at == NOW
    assert dead.assigned == (0, 1)  # retired() is a copy
    assert readiness(merged, NOW).ready


def ready_stats(**changes) -> StreamStats:
    return StreamStats(**{"assigned": (0, 1), "taken_at": NOW - 1, **changes})


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (StreamStats(), "no source has reported its counters yet"),
        (ready_stats(taken_at=NOW - 30), "the sources' counters are 30 s old"),
        (
            ready_stats(stalls={"sink_failing": NOW - 4}),
            "the sink has failed for 4 s with no batch written since (store or output topic down)",
        ),
        (ready_stats(stalls={"sink_replaced": NOW - 2}), "the sink actor was replaced 2 s ago"),
        (ready_stats(stalls={"worker_replaced": NOW}), "a worker actor was replaced 0 s ago"),
        (ready_stats(assigned=()), "no partition is assigned to any source"),
    ],
)
def test_not_ready_names_what_stops_consuming_or_writing(stats, reason) -> None:
    verdict = readiness(stats, NOW, stale_after_s=10)
    assert not verdict.ready and reason in verdict.reason
    assert "\n" not in verdict.reason


def test_ready_when_partitions_are_assigned_the_counters_fresh_and_no_lane_stalled() -> None:
    verdict = readiness(ready_stats(sink_errors=40, restarts={"sink": 3}), NOW, stale_after_s=10)
    assert verdict.ready and verdict.reason == "consuming 2 partition(s)"  # past errors: history
    assert not readiness(ready_stats(taken_at=NOW - 10.5), NOW, stale_after_s=10).ready
    assert readiness(ready_stats(taken_at=NOW - 9.5), NOW, stale_after_s=10).ready


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a real HTTP GET (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_the_metrics_server_serves_metrics_and_both_probes_over_http() -> None:
    current = {"stats": StreamStats()}
    server = serve_metrics(0, lambda: current["stats"], "127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/healthz")[0] == 200
        status, _, body = get(f"{base}/readyz")
        assert (status, body) == (503, "no source has reported its counters yet\n")
        current["stats"] = StreamStats(assigned=(0,), taken_at=time.time(), sink_errors=2)
        status, _, body = get(f"{base}/readyz")
        assert (status, body) == (200, "consuming 1 partition(s)\n")
        status, content_type, text = get(f"{base}/metrics")
        assert status == 200 and content_type == CONTENT_TYPE_LATEST
        assert "idproxy_stream_ready 1.0" in text and "idproxy_stream_sink_errors_total 2.0" in text
        current["stats"] = StreamStats(
            assigned=(0,), taken_at=time.time(), stalls={"sink_failing": time.time()}
        )
        status, _, body = get(f"{base}/readyz?verbose=1")
        assert status == 503 and body.startswith("the sink has failed for ")
        assert "idproxy_stream_ready 0.0" in get(f"{base}/metrics")[2]
        assert get(f"{base}/")[0] == 404 and get(f"{base}/metrics/x")[0] == 404
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):  # stop() closed the listening socket
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_the_metrics_server_listens_on_loopback_only_by_default() -> None:
    server = serve_metrics(0, StreamStats)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_of_several_stalls_readiness_names_the_one_that_began_first() -> None:
    stalls = {"worker_replaced": NOW - 1, "sink_failing": NOW - 6}
    verdict = readiness(ready_stats(stalls=stalls), NOW, stale_after_s=10)
    assert not verdict.ready and verdict.reason.startswith("the sink has failed for 6 s")
