"""Stream counters: histogram quantiles and merging, Prometheus exposition, the status line."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from idproxy_stream.stream.metrics import (
    LATENCY_BUCKETS_S,
    Histogram,
    StreamCollector,
    StreamStats,
    merge_stats,
)
from idproxy_stream.stream.status import StatusLine


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
