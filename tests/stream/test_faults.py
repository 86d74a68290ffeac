"""Fault tests: each injects a fault mid-stream and proves the exactly-once effect.

Every test publishes events with unique ids plus one of every bad input, injects its fault
while work is in flight, publishes more, lets the job finish, and then checks (see
``assert_exactly_once_effect``): every valid event has exactly one row, no row is missing or
duplicated, committed offsets equal the end offsets, and every invalid record is in the
dead-letter topic with its reason and original bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray
import yaml

from idproxy_stream.config import with_updates
from idproxy_stream.stream.publish import publish_events
from idproxy_stream.stream.topics import committed_offsets
from tests.cluster.conftest import end_processes, session_processes
from tests.stream.conftest import (
    T0,
    Mix,
    assert_exactly_once_effect,
    bad_records,
    dead_letters,
    event,
    joined,
    offsets_committed_to_end,
    publish,
    stored_item_ids,
    stored_rows,
    wait_until,
)


def two_parts(tmp_path: Path, bundle, first_id: int, valid_first: int = 200) -> tuple[Mix, Mix]:
    """A first part (a backlog of valid events and every bad input) and a second, later part."""
    first, second = Mix(), Mix()
    first.add_valid(range(first_id, first_id + valid_first // 2))
    bad_records(first, tmp_path / "images", bundle, base_id=first_id + 5_000)
    first.add_valid(range(first_id + valid_first // 2, first_id + valid_first))
    second.add_valid(range(first_id + 10_000, first_id + 10_060))
    return first, second


def busy(job, min_rows: int = 16, min_in_flight: int = 40):
    """True once rows are being written and a backlog is in flight (a fault lands mid-batch)."""
    stats = job.refresh()
    return stats.proxies_total >= min_rows and stats.in_flight >= min_in_flight


def test_fault_worker_killed_mid_batch(stream_config, start_job, bundle, tmp_path) -> None:
    config = stream_config(stream={"num_workers": 2, "max_batch_size": 8})
    job = start_job(config, "worker-kill")
    first, second = two_parts(tmp_path, bundle, 1_000_000)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job), 120, "the job to be busy")
    ray.kill(job.handles()[0]["workers"][0])
    reports.append(publish(config, second.payloads))
    assert_exactly_once_effect(config, joined(first, second), reports)
    stats = job.refresh()
    assert stats.restarts["worker"] == 1
    assert stats.retries >= 1  # the killed worker's batches were re-sent


def test_fault_sink_killed(stream_config, start_job, bundle, tmp_path) -> None:
    config = stream_config(stream={"num_workers": 2, "max_batch_size": 8})
    job = start_job(config, "sink-kill")
    first, second = two_parts(tmp_path, bundle, 2_000_000)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job), 120, "the job to be busy")
    ray.kill(job.handles()[0]["sink"])
    reports.append(publish(config, second.payloads))
    assert_exactly_once_effect(config, joined(first, second), reports)
    stats = job.refresh()
    assert stats.restarts["sink"] == 1 and stats.retries >= 1


def start_cli_job(config, tmp_path: Path, name: str) -> subprocess.Popen:
    """``idproxy stream --config`` in its own process, on this session's Ray cluster."""
    gcs = ray.get_runtime_context().gcs_address
    raw = config.model_dump(mode="json")
    raw["ray"]["address"] = gcs
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    log = (tmp_path / f"{name}.log").open("wb")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "idproxy_stream.cli", "stream", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def test_fault_whole_job_sigkilled_and_restarted(stream_config, bundle, tmp_path, ray_cluster):
    config = stream_config(stream={"max_batch_size": 4})
    first, second = two_parts(tmp_path, bundle, 3_000_000, valid_first=300)
    reports = [publish(config, first.payloads)]
    job = start_cli_job(config, tmp_path, "first")
    try:
        wait_until(lambda: len(stored_rows(config)) >= 20, 180, "the first job to write rows")
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        job.kill()
    committed = sum(committed_offsets(config.kafka, config.kafka.topic).values())
    assert committed < len(first.payloads), "the job finished before the kill: not mid-stream"
    reports.append(publish(config, second.payloads))
    restarted = start_cli_job(config, tmp_path, "restarted")
    try:
        assert_exactly_once_effect(config, joined(first, second), reports, timeout_s=240)
        restarted.send_signal(signal.SIGTERM)  # drains, commits and exits
        assert restarted.wait(timeout=120) == 0
    finally:
        restarted.kill()
    assert b"stopped:" in (tmp_path / "restarted.log").read_bytes()


def test_fault_broker_frozen_longer_than_the_session_timeout(
    stream_config, start_job, bundle, tmp_path, broker
) -> None:
    config = stream_config()
    job = start_job(config, "freeze")
    first, second = two_parts(tmp_path, bundle, 4_000_000)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job, min_in_flight=20), 120, "the job to be busy")
    broker.freeze()
    try:
        # The fault itself, not a synchronisation: the broker is silent for 2 session timeouts.
        time.sleep(2 * config.kafka.session_timeout_ms / 1000)
    finally:
        broker.thaw()
    reports.append(publish(config, second.payloads))
    assert_exactly_once_effect(config, joined(first, second), reports, timeout_s=180)


def test_fault_rebalance_while_busy(stream_config, start_job, bundle, tmp_path) -> None:
    config = stream_config()
    job_a = start_job(config, "a")
    first, second = two_parts(tmp_path, bundle, 5_000_000, valid_first=300)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job_a, min_in_flight=20), 120, "job a to be busy")
    job_b = start_job(config, "b")  # joins the group: the partitions are split
    reports.append(publish(config, second.payloads))
    wait_until(lambda: job_b.refresh().proxies_total > 0, 120, "job b to write rows")
    job_b.stop(drain=True)  # leaves: job a takes every partition back
    assert_exactly_once_effect(config, joined(first, second), reports)
    wait_until(lambda: job_a.refresh().assigned == (0, 1, 2, 3), 60, "a to own every partition")
    assert job_a.refresh().rebalances >= 3  # joined, b joined, b left


# Records that each stopped every partition (issue 12, items 1 and 2), with their reasons.
POISON = [
    (b'{"item_id":5,"created_at":"0001-01-01T00:00:00+01:00"}', "created_at_out_of_range"),
    (b'{"item_id":' + b"9" * 5_000 + b',"created_at":1}', "wrong_shape"),
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),
    (b'{"item_id":6,"created_at":"9999-12-31T23:59:59Z"}', "created_at_out_of_range"),
    (b'{"item_id":7,"created_at":"2100-01-01T00:00:00Z"}', "created_at_out_of_range"),
    (b'{"item_id":8,"title":"' + b"x" * 2_000_000 + b'","created_at":1}', "event_too_large"),
]


def test_fault_poisoned_records_are_dead_lettered_once_and_every_valid_event_stored(
    stream_config, start_job, tmp_path
) -> None:
    """The source survives every record above: valid events around them are all stored, each
    bad one has one bounded dead letter, and every partition commits to its end."""
    config = stream_config(stream={"max_batch_size": 8})
    job = start_job(config, "poison")
    mix = Mix()
    mix.add_valid(range(6_000_000, 6_000_030))
    for value, reason in POISON:
        mix.add(value, reason)
        mix.add_valid([6_000_100 + len(mix.payloads)])
    mix.add_valid(range(6_000_030, 6_000_060))
    # The 2 MB record needs a producer that may send it; the job's limit stays at 200 kB.
    publisher = with_updates(config.kafka, max_event_bytes=5_000_000)
    reports = [publish_events(publisher, mix.payloads, one_record_per_batch=True)]
    assert_exactly_once_effect(config, mix, reports)
    stats = job.refresh()
    assert stats.restarts["source"] == 0, "a record killed the source actor"
    assert stats.dead_letters_total == len(POISON) and stats.dead_letters_given_up == 0
    letters = [letter for letter in dead_letters(config) if letter.reason == "event_too_large"]
    assert [len(letter.to_json_bytes()) < 8_000 for letter in letters] == [True]
    assert letters[0].value_truncated and letters[0].value_bytes == len(POISON[-1][0])


def current_worker(job):
    return job.handles()[0]["workers"][0]


def test_fault_bad_image_and_three_worker_deaths_in_a_row_lose_no_valid_event(
    stream_config, start_job, tmp_path
) -> None:
    """Issue 12 items 3 and 4. A NUL byte in an image URI is that item's dead letter only
    (``image_invalid``), never its batch's; and one worker killed three times in a row, each
    time with batches in flight, dead-letters nothing (deaths are not attempts: a batch that
    keeps meeting them is bisected, and an event alone has ``max_worker_deaths``)."""
    config = stream_config(stream={"num_workers": 1, "max_batch_size": 16, "max_attempts": 3})
    job = start_job(config, "deaths")
    mix = Mix()
    mix.add_valid(range(7_000_000, 7_000_100))
    for item_id in (7_000_500, 7_000_501):
        nul = event(item_id, image_uri="file:///x.png%00.jpg").to_json_bytes()
        mix.add(nul, "image_invalid", item_id)
    mix.add_valid(range(7_000_100, 7_000_200))
    reports = [publish(config, mix.payloads)]
    wait_until(lambda: busy(job, min_rows=16, min_in_flight=40), 120, "the job to be busy")
    for _ in range(3):
        worker = current_worker(job)
        ray.kill(worker)
        wait_until(
            lambda worker=worker: current_worker(job)._actor_id != worker._actor_id,
            60,
            "the dead worker to be replaced",
        )
    assert_exactly_once_effect(config, mix, reports)
    stats = job.refresh()
    assert stats.restarts["worker"] == 3 and stats.dead_letters == {"image_invalid": 2}


def test_fault_a_dead_letter_the_broker_refuses_is_given_up_and_the_partition_commits(
    stream_config, start_job, tmp_path
) -> None:
    """Issue 12 item 2: a dead letter over the producer's max_request_size was re-sent every
    loop forever and its partition never committed. With a 1 MB prefix configured, the letter
    of a 900 kB record is too large (MessageSizeTooLargeError): it is given up, logged and
    counted, and every partition still commits to its end."""
    config = stream_config(kafka={"dead_letter_value_bytes": 1_000_000})
    job = start_job(config, "give-up")
    mix = Mix()
    mix.add_valid(range(8_000_000, 8_000_020))
    huge = b'{"item_id":9,"title":"' + b"x" * 900_000 + b'","created_at":1}'
    mix.add(huge, "event_too_large")
    mix.add_valid(range(8_000_020, 8_000_040))
    publisher = with_updates(config.kafka, max_event_bytes=5_000_000)
    publish_events(publisher, mix.payloads, one_record_per_batch=True)
    wait_until(lambda: offsets_committed_to_end(config), 120, "offsets committed to the end")
    assert sorted(stored_item_ids(config)) == sorted(mix.valid_item_ids)
    stats = job.refresh()
    assert stats.dead_letters_given_up == 1 and stats.dead_letters_total == 0
    assert dead_letters(config) == []


def test_fault_a_damaged_version_published_while_running_is_refused_and_nothing_is_lost(
    stream_config, start_job, bundle, tmp_path
) -> None:
    """Issue 12 item 5: a truncated ``proxy_model.safetensors`` published as LATEST while the job
    runs is refused by the running worker and by its replacement after a kill (which serves
    the version the driver checked at start); every event is stored by v1, none dead-lettered."""
    from idproxy_stream.artifacts import BundleLayout
    from idproxy_stream.proxy.registry import load_version, publish_version

    model_dir = tmp_path / "model"
    shutil.copytree(bundle.model_dir, model_dir)
    config = stream_config(
        stream={"model_dir": str(model_dir), "num_workers": 1, "max_batch_size": 8}
    )
    job = start_job(config, "damaged")
    first, second = Mix(), Mix()
    first.add_valid(range(9_000_000, 9_000_060))
    second.add_valid(range(9_000_100, 9_000_160))
    reports = [publish(config, first.payloads)]
    wait_until(lambda: job.refresh().proxies_total >= 8, 120, "rows from v1")
    registry = BundleLayout(model_dir).registry
    model, manifest = load_version(registry, "v1")
    manifest.version = "v2"
    weights = publish_version(model, manifest, registry) / "proxy_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1_000])  # damaged after publishing
    worker = current_worker(job)
    ray.kill(worker)
    reports.append(publish(config, second.payloads))
    assert_exactly_once_effect(config, joined(first, second), reports)
    assert {row.model_version for row in stored_rows(config)} == {"v1"}
    assert job.refresh().restarts["worker"] == 1


def test_fault_a_sigkilled_driver_takes_every_process_of_its_local_ray_with_it(
    stream_config, tmp_path
) -> None:
    """Issue 12: after `idproxy stream` (with its own local Ray) was SIGKILLed, its actors
    wrote for seconds and Ray's dashboard and runtime-env agents lived on (40 s and more), so
    repeated crashes leaked processes. Now its reaper ends every process of that Ray at once:
    none of the job's processes is left within seconds, and the store stops changing."""
    config = stream_config(stream={"max_batch_size": 4})
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths are short
    raw = config.model_dump(mode="json")
    raw["ray"] = {**raw["ray"], "num_cpus": 2, "temp_dir": str(ray_dir)}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    mix = Mix()
    mix.add_valid(range(10_000_000, 10_003_000))  # a backlog it is still working on when killed
    publish(config, mix.payloads)
    log = (tmp_path / "stream.log").open("wb")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, "-m", "idproxy_stream.cli", "stream", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(stored_rows(config)) >= 20, 240, "the job to write rows")
        assert len(session_processes(child.pid)) >= 5  # driver, GCS, raylet, agents, actors
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        killed_at = time.monotonic()
        wait_until(lambda: not session_processes(child.pid), 10, "no process of the job left")
        gone_after_s = time.monotonic() - killed_at
        rows = len(stored_rows(config))
        committed = committed_offsets(config.kafka, config.kafka.topic)
    finally:
        child.kill()
        end_processes(session_processes(child.pid))
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert gone_after_s < 5, f"the job's processes outlived its driver by {gone_after_s:.1f} s"
    assert rows < len(mix.payloads), "the job finished before the kill: not mid-stream"
    # Nothing of the job is left to write or commit: what it left stays as it was.
    assert len(stored_rows(config)) == rows
    assert committed_offsets(config.kafka, config.kafka.topic) == committed


def padded_event(item_id: int, total_bytes: int) -> bytes:
    """A valid event of exactly ``total_bytes``, padded with a field the schema ignores."""
    fields = {"item_id": item_id, "created_at": T0.isoformat(), "title": f"film {item_id}"}
    bare = len(json.dumps({**fields, "padding": ""}).encode())
    return json.dumps({**fields, "padding": "p" * (total_bytes - bare)}).encode()


def poisoned_records(mix: Mix, config, tmp_path: Path, bundle, base_id: int) -> None:
    """Every class of bad record the stream knows, each with the reason of its dead letter."""
    bad_records(mix, tmp_path / "images", bundle, base_id)  # bad images, NaN, mature, ...
    for value, reason in POISON:  # 5,000-digit id, deep nesting, created_at range, 2 MB
        mix.add(value, reason)
    limit = config.kafka.max_event_bytes
    mix.add(padded_event(base_id + 20, limit), None, base_id + 20)  # at the limit: valid
    mix.add(padded_event(base_id + 21, limit + 1), "event_too_large")
    nul = event(base_id + 22, image_uri="file:///x.png%00.jpg").to_json_bytes()
    mix.add(nul, "image_invalid")
    for value, reason in [
        (b"", "not_json"),
        (b'{"item_id": 23, "created_at": 1, "title": "\xc3\x28"}', "not_json"),
        (b'{"a":' * 30_000 + b"1" + b"}" * 30_000, "not_json"),
        (b"null", "wrong_shape"),
        (b'{"item_id": 24}', "missing_field"),
        (b'{"item_id": "25", "created_at": 1}', "wrong_shape"),
        (b'{"item_id": true, "created_at": 1}', "wrong_shape"),
        (b'{"item_id": 26, "created_at": 1, "title": 5}', "wrong_shape"),
        (b'{"item_id": 27, "created_at": 1, "tags": "drama"}', "wrong_shape"),
        (b'{"item_id": 28, "created_at": "2026-01-01T00:00:00"}', "wrong_shape"),
        (b'{"item_id": 29, "created_at": "1899-12-31T00:00:00Z"}', "created_at_out_of_range"),
        (b'{"item_id": 30, "created_at": Infinity}', "non_finite_number"),
        (b'{"schema_version": 2, "item_id": 31, "created_at": 1}', "unsupported_schema_version"),
        (b'{"item_id": 32, "created_at": 1, "image_uri": "data:,x", "image_base64": "AA=="}',
         "wrong_shape"),
    ]:  # fmt: skip
        mix.add(value, reason)


def test_fault_a_poisoned_backlog_stores_every_valid_event_and_dead_letters_each_bad_once(
    stream_config, start_job, bundle, tmp_path
) -> None:
    """Issue 12: one backlog of 1,000 valid events with every class of bad record shuffled
    among them. All valid events are stored once, every bad record has exactly one dead letter
    (counted by its coordinates), nothing is given up, no source dies, and every partition
    commits to its end."""
    config = stream_config(stream={"max_batch_size": 32, "max_wait_ms": 20})
    job = start_job(config, "poisoned-backlog")
    bad = Mix()
    poisoned_records(bad, config, tmp_path, bundle, base_id=11_005_000)
    valid = Mix()
    valid.add_valid(range(11_000_000, 11_001_000))
    order = list(range(len(bad.payloads) + len(valid.payloads)))
    random.Random(12).shuffle(order)
    both = joined(valid, bad)
    mix = Mix(
        [both.payloads[i] for i in order],
        [both.keys[i] for i in order],
        [both.expected_reason[i] for i in order],
    )
    publisher = with_updates(config.kafka, max_event_bytes=5_000_000)  # may send the 2 MB one
    reports = [publish_events(publisher, mix.payloads, one_record_per_batch=True)]
    assert_exactly_once_effect(config, mix, reports, timeout_s=240)
    letters = Counter((letter.partition, letter.offset) for letter in dead_letters(config))
    bad_count = sum(reason is not None for reason in mix.expected_reason)
    assert set(letters.values()) == {1}, "a bad record has more than one dead letter"
    assert len(letters) == bad_count
    stats = job.refresh()
    assert stats.restarts["source"] == 0 and stats.dead_letters_given_up == 0
    assert len(mix.valid_item_ids) >= 1_000


def test_fault_a_sink_that_cannot_start_stops_the_job_with_its_cause_and_loses_nothing(
    stream_config, start_job, bundle, tmp_path
) -> None:
    """Issue 12 item 6: a sink whose constructor raised was rebuilt forever (131-244
    generations in minutes) while the job looked healthy. Now its replacements back off, its
    batches are re-sent uncounted, and after ``stream.max_actor_start_failures`` in a row the
    job stops with the cause; nothing was dead-lettered, and a job started once the store is
    fixed stores every event exactly once."""
    config = stream_config(stream={"max_batch_size": 8, "max_actor_start_failures": 1})
    job = start_job(config, "unbuildable")
    first, second = two_parts(tmp_path, bundle, 6_000_000)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job), 120, "the job to be busy")
    # The database moves away (the sink keeps its open files) and a directory takes its
    # place: every new sink fails in its constructor, opening the store.
    database = config.store.sqlite.path
    moved = tmp_path / "moved"
    moved.mkdir()
    files = sorted(database.parent.glob(database.name + "*"))
    for path in files:
        path.rename(moved / path.name)
    database.mkdir()
    ray.kill(job.handles()[0]["sink"])
    wait_until(lambda: job.fatal is not None, 180, "the job to give up on its sink")
    assert "the sink actor failed to start 2 times in a row" in job.fatal
    assert "database" in job.fatal.lower()  # the constructor's own error, one line
    assert "\n" not in job.fatal
    assert dead_letters(config) == [] or all(
        letter.reason not in ("worker_died", "processing_failed") for letter in dead_letters(config)
    )
    job.stop(drain=False, timeout_s=30)
    database.rmdir()
    for path in files:
        (moved / path.name).rename(path)
    reports.append(publish(config, second.payloads))
    start_job(config, "fixed")
    assert_exactly_once_effect(config, joined(first, second), reports)


def actor_pid(handle) -> int:
    """The process id of a live actor, from Ray's actor table."""
    from ray._private import state

    return int(state.actors(handle._actor_id.hex())["Pid"])


def test_fault_a_frozen_worker_is_replaced_at_the_batch_deadline_and_nothing_is_lost(
    stream_config, start_job, bundle, tmp_path
) -> None:
    """Issue 12 item 7: a SIGSTOPped worker froze its partition's commits for the whole stop.
    Now a batch without a result ``stream.batch_deadline_s`` after it was sent has its worker
    replaced and is re-sent: the frozen worker is left behind, and every event is stored once
    with the offsets at the end although it was never resumed."""
    config = stream_config(stream={"num_workers": 1, "max_batch_size": 8, "batch_deadline_s": 5})
    job = start_job(config, "frozen")
    first, second = two_parts(tmp_path, bundle, 8_000_000)
    reports = [publish(config, first.payloads)]
    wait_until(lambda: busy(job), 120, "the job to be busy")
    frozen = actor_pid(current_worker(job))
    os.kill(frozen, signal.SIGSTOP)
    try:
        reports.append(publish(config, second.payloads))
        assert_exactly_once_effect(config, joined(first, second), reports)
    finally:  # replacing it killed it (SIGKILL ends a stopped process); if not, resume it
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    stats = job.refresh()
    assert stats.restarts["worker"] >= 1 and stats.retries >= 1
