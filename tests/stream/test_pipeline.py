"""The streaming job end to end: Kafka in, rows and dead letters out, offsets committed."""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from datetime import timedelta

import pyarrow.dataset as ds
import pytest
import ray

from idproxy_stream.events import NewItemEvent
from idproxy_stream.store.base import build_store
from idproxy_stream.stream.broker import free_port
from tests.stream.conftest import (
    T0,
    Mix,
    assert_exactly_once_effect,
    bad_records,
    offsets_committed_to_end,
    publish,
    stored_rows,
    wait_until,
)


def test_valid_events_get_one_row_each_and_invalid_ones_a_dead_letter(
    stream_config, start_job, bundle, tmp_path
) -> None:
    port = free_port()
    config = stream_config(stream={"metrics_port": port})
    mix = Mix()
    mix.add_valid(range(100_000, 100_040))
    bad_records(mix, tmp_path / "images", bundle, base_id=100_100)
    job = start_job(config)
    report = publish(config, mix.payloads)
    assert_exactly_once_effect(config, mix, [report])

    stats = job.refresh()
    expected_reasons = {r for r in mix.expected_reason if r is not None}
    assert set(stats.dead_letters) == expected_reasons
    assert stats.dead_letters_total == len(expected_reasons)
    assert stats.proxies_total == len([r for r in mix.expected_reason if r is None])
    assert stats.events_in == len(mix.payloads)
    assert stats.in_flight == 0 and stats.latency_seconds.count == stats.proxies_total
    assert {record.model_version for record in stored_rows(config)} == {"v1"}
    duplicate = next(r for r in stored_rows(config) if r.item_id == 100_107)
    assert duplicate.source_event_ts == T0 + timedelta(days=1)  # the later event won

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f"idproxy_stream_events_in_total {float(len(mix.payloads))}" in metrics
    assert 'idproxy_stream_dead_letters_total{reason="image_decompression_bomb"} 1.0' in metrics
    assert "idproxy_stream_end_to_end_latency_seconds_bucket" in metrics
    assert 'idproxy_stream_consumer_lag{partition="0"}' in metrics


def test_backpressure_bounds_in_flight_records_over_a_backlog(stream_config, start_job) -> None:
    config = stream_config(
        stream={"max_in_flight": 24, "resume_below": 8, "max_batch_size": 8},
        kafka={"max_poll_records": 50},
    )
    mix = Mix()
    mix.add_valid(range(200_000, 200_200))
    report = publish(config, mix.payloads)  # a backlog before the job starts
    job = start_job(config)
    assert_exactly_once_effect(config, mix, [report])
    stats = job.refresh()
    assert stats.peak_in_flight <= 24
    assert stats.pauses >= 2 and stats.resumes >= 2
    assert stats.batch_size.quantile(1.0) <= 8


def test_a_new_model_version_is_served_mid_stream_and_rows_name_it(
    stream_config, start_job, tmp_path, bundle
) -> None:
    import shutil

    from tests.stream.test_worker import publish_copy

    model_dir = tmp_path / "model"
    shutil.copytree(bundle.model_dir, model_dir)
    config = stream_config(stream={"model_dir": str(model_dir), "model_poll_interval_s": 0.2})
    job = start_job(config)
    first = Mix()
    first.add_valid(range(300_000, 300_030))
    reports = [publish(config, first.payloads)]
    wait_until(lambda: len(stored_rows(config)) == 30, 120, "the first rows")

    publish_copy(model_dir, "v2")
    trickle = Mix()
    next_id = 300_100
    while job.refresh().rows_by_version.get("v2", 0) == 0:  # picked up by polling LATEST
        trickle.add_valid([next_id])
        reports.append(publish(config, trickle.payloads[-1:]))
        next_id += 1
        assert next_id < 300_400, "the new version was never served"
    for lane in job.handles():  # every worker on v2 before the last part is sent
        assert ray.get([w.refresh_model.remote() for w in lane["workers"]]) == ["v2"]
    last = Mix()
    last.add_valid(range(300_500, 300_530))
    reports.append(publish(config, last.payloads))

    everything = Mix(
        first.payloads + trickle.payloads + last.payloads,
        first.keys + trickle.keys + last.keys,
        first.expected_reason + trickle.expected_reason + last.expected_reason,
    )
    assert_exactly_once_effect(config, everything, reports)
    versions = {record.item_id: record.model_version for record in stored_rows(config)}
    assert {versions[i] for i in first.valid_item_ids} == {"v1"}
    assert {versions[i] for i in last.valid_item_ids} == {"v2"}
    assert job.refresh().restarts.total() == 0  # swapped without restarting anything


def test_a_bundle_trained_on_another_encoder_is_refused_before_anything_starts(
    stream_config,
) -> None:
    from idproxy_stream.proxy.model import ProxyModelError
    from idproxy_stream.stream.pipeline import StreamJob

    config = stream_config(encoder={"text": {"max_tokens": 64}})  # another fingerprint
    with pytest.raises(ProxyModelError, match=r"trained on encoder .* configured encoder is"):
        StreamJob(config).start()


def test_the_same_job_writes_redis_and_the_parquet_log_by_configuration_only(
    stream_config, start_job, tmp_path, redis_client, redis_prefix, redis_url
) -> None:
    log_dir = tmp_path / "proxy_log"
    config = stream_config(
        store={
            "online": "redis",
            "offline_log": True,
            "redis": {"url": redis_url, "key_prefix": redis_prefix},
            "parquet": {"path": str(log_dir)},
        }
    )
    mix = Mix()
    mix.add_valid(range(400_000, 400_025))
    start_job(config)
    publish(config, mix.payloads)
    wait_until(lambda: offsets_committed_to_end(config), 120, "offsets committed to end")

    with build_store(config.store) as store:  # online side: Redis
        online = {record.item_id: record for record in store.scan()}
    assert set(online) == mix.valid_item_ids
    assert {record.model_version for record in online.values()} == {"v1"}
    assert len(list(redis_client.scan_iter(match=f"{redis_prefix}*"))) >= len(mix.valid_item_ids)

    # Offline side: every committed row is already in the Parquet log (flushed per batch).
    logged = ds.dataset(log_dir, format="parquet", partitioning="hive").to_table()
    assert set(logged.column("item_id").to_pylist()) == mix.valid_item_ids
    assert set(logged.column("model_version").to_pylist()) == {"v1"}


@pytest.fixture(scope="module")
def plot_bundle(bundle, tmp_path_factory):
    """The session's ranker with a ProxyModel trained on title + genres + plot only."""
    import shutil

    from tests_helpers import TINY_TRAINING, merge_sections

    from idproxy_stream.config import config_from_dict
    from idproxy_stream.training.bundle import train_model_bundle

    model_dir = tmp_path_factory.mktemp("plot") / "model"
    shutil.copytree(bundle.model_dir, model_dir)
    fields = {"text_fields": ["title", "categories", "description"]}
    config = config_from_dict(merge_sections(TINY_TRAINING, {"encoder": fields}))
    train_model_bundle(config, model_dir, version="v2-plot")  # reuses the ranker
    return model_dir


def test_a_model_trained_on_other_text_fields_is_refused_before_anything_starts(
    stream_config, plot_bundle
) -> None:
    from idproxy_stream.proxy.model import ProxyModelError
    from idproxy_stream.stream.pipeline import StreamJob, bundle_problem

    trained = stream_config(
        stream={"model_dir": str(plot_bundle)},
        encoder={"text_fields": ["title", "categories", "description"]},
    )
    assert bundle_problem(trained) is None  # served with the fields it was trained on
    serving = stream_config(
        stream={"model_dir": str(plot_bundle)}, encoder={"text_fields": ["title", "categories"]}
    )
    with pytest.raises(ProxyModelError) as refused:
        StreamJob(serving).start()
    message = str(refused.value)
    assert "v2-plot" in message and "\n" not in message
    assert "encoder.text_fields is ['title', 'categories', 'description'] in training" in message
    assert "but ['title', 'categories'] here" in message


def probe(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on the job's metrics port (503 included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_locked_store_makes_the_job_not_ready_within_seconds_and_ready_once_it_writes(
    stream_config, start_job, tmp_path
) -> None:
    port = free_port()
    store_path = tmp_path / "proxies.sqlite"
    config = stream_config(
        stream={"metrics_port": port, "status_interval_s": 0.5},
        store={"sqlite": {"path": str(store_path), "busy_timeout_ms": 200}},
    )
    start_job(config)
    assert probe(port, "/healthz")[0] == 200
    wait_until(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz 200 once partitions held")
    publish(config, [NewItemEvent(item_id=400_001, created_at=T0).to_json_bytes()])
    wait_until(lambda: {r.item_id for r in stored_rows(config)} == {400_001}, 60, "first row")

    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the store is unavailable to the sink from here on
    try:
        publish(config, [NewItemEvent(item_id=400_002, created_at=T0).to_json_bytes()])
        wait_until(
            lambda: probe(port, "/readyz")[0] == 503, 30, "/readyz 503 while the store fails"
        )
        status, reason = probe(port, "/readyz")
        assert status == 503 and reason.startswith("the sink has failed for "), reason
        metrics = probe(port, "/metrics")[1]
        assert "idproxy_stream_ready 0.0" in metrics
        assert "idproxy_stream_sink_errors_total 0.0" not in metrics
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: probe(port, "/readyz")[0] == 200, 60, "/readyz 200 once a batch is written")
    assert {r.item_id for r in stored_rows(config)} == {400_001, 400_002}


def test_run_until_stopped_stops_the_job_and_raises_why_it_had_to_stop(monkeypatch) -> None:
    """Issue 12 item 6: the driver loop ends on the job's fatal cause (an actor that cannot
    start), stops the job, and raises it as an IdProxyError, which ``idproxy stream`` prints
    as one line and exit code 2. The job here is a stand-in: only the loop is under test."""
    import threading

    from idproxy_stream.config import config_from_dict
    from idproxy_stream.errors import IdProxyError
    from idproxy_stream.stream import pipeline
    from idproxy_stream.stream.metrics import StreamStats

    stopped = []

    class JobThatMustStop:
        def __init__(self, config, name) -> None:
            self.fatal = None

        def start(self):
            self.fatal = "the sink actor failed to start 2 times in a row (OSError: x)"
            return self

        def snapshot(self) -> StreamStats:
            return StreamStats()

        def stop(self, drain: bool) -> StreamStats:
            stopped.append(drain)
            return StreamStats()

    monkeypatch.setattr(pipeline, "StreamJob", JobThatMustStop)
    config = config_from_dict({"stream": {"status_interval_s": 0.01}})
    with pytest.raises(IdProxyError, match=r"sink actor failed to start 2 times in a row"):
        pipeline.run_until_stopped(config, threading.Event())
    assert stopped == [True]
