"""The ``jobs/*.py`` entrypoints submitted with ``ray job submit`` to a real Ray head.

Each job runs on the head the session started (``ray start --head``), with the repository as
``--working-dir``, against the embedded broker, and is checked by its effect: rows in the store,
features on disk, committed offsets, and the JSON line it prints.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
from tests_helpers import STAGE1_VERSION, STAGE2_VERSION, new_event, wait_until, write_config

from idproxy_stream.config import config_from_dict
from idproxy_stream.encoders.features import read_feature_table
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.store.base import build_store
from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.publish import publish_events
from idproxy_stream.stream.topics import (
    committed_offsets,
    ensure_topics,
    stream_topics,
)

from .conftest import in_process_proxies


def last_json(logs: str) -> dict:
    """The last JSON object a job printed on a line of its own."""
    for line in reversed(logs.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result in the job's logs:\n{logs[-3000:]}")


def result_line(logs: str, key: str) -> dict:
    """The JSON object a job printed under ``key``."""
    return last_json(logs)[key]


def stored(config) -> list:
    if not config.store.sqlite.path.exists():
        return []
    with build_store(config.store) as store:
        return list(store.scan())


def test_stream_job_writes_a_row_per_event_and_drains_on_ray_job_stop(
    ray_head, job_settings, tmp_path
):
    raw = job_settings()
    config = config_from_dict(raw)
    ensure_topics(config.kafka, stream_topics(config.kafka), config.kafka.topic_partitions)
    job = ray_head.submit(
        [sys.executable, "jobs/stream.py", "--config", str(write_config(raw, tmp_path / "s.yaml"))],
        env_vars={"RAY_JOB_STOP_WAIT_TIME_S": "90"},
    )
    events = [new_event(20_000 + index) for index in range(30)]
    published = publish_events(config.kafka, [*events, b"not json"], one_record_per_batch=True)
    ends = published.end_offsets()

    def caught_up() -> bool:
        return committed_offsets(config.kafka, config.kafka.topic) == ends

    wait_until(caught_up, 240, "the stream job to commit every published record")
    ray_head.ray_cli("job", "stop", f"--address={ray_head.dashboard_url}", job)
    assert ray_head.wait_for(job, {"STOPPED"}, 120) == "STOPPED"

    final = result_line(ray_head.logs(job), "stream_stopped")  # printed after the drain
    assert (final["events_in"], final["proxies"], final["dead_letters"]) == (31, 30, 1)
    rows = stored(config)
    assert sorted(row.item_id for row in rows) == [event.item_id for event in events]
    assert {row.model_version for row in rows} == {STAGE2_VERSION}  # the registry's LATEST
    assert {row.kafka_topic for row in rows} == {config.kafka.topic}
    # The job computed what the stream's worker computes for these events here.
    by_position = dict(zip(published.positions, [*events, None], strict=True))
    items = [
        WorkItem(config.kafka.topic, p, o, e) for (p, o), e in by_position.items() if e is not None
    ]
    expected = in_process_proxies(config, STAGE2_VERSION, items[:8])
    for row in rows:
        if row.item_id in expected:
            np.testing.assert_allclose(row.proxy, expected[row.item_id], rtol=1e-4, atol=1e-5)


def test_encode_job_writes_features_of_every_catalogue_item(
    ray_head, job_settings, staged_bundle, tmp_path
):
    output = tmp_path / "features"
    raw = job_settings(
        extract={
            "output_path": str(output),
            "num_workers": 1,
            "worker_num_cpus": 0.25,
            "batch_size": 64,
        }
    )
    config = config_from_dict(raw)
    path = write_config(raw, tmp_path / "encode.yaml")
    job = ray_head.submit([sys.executable, "jobs/encode.py", "--config", str(path)])
    assert ray_head.wait_for(job, {"SUCCEEDED"}, 240) == "SUCCEEDED"

    summary = last_json(ray_head.logs(job))  # jobs/encode.py prints its summary flat
    assert (summary["items_total"], summary["items_encoded"]) == (240, 240)
    written = read_feature_table(output, fingerprint=encoder_fingerprint(config.encoder))
    reference = read_feature_table(staged_bundle.features_dir)  # the same encoder, in-process
    order, reference_order = np.argsort(written.item_ids), np.argsort(reference.item_ids)
    np.testing.assert_array_equal(written.item_ids[order], reference.item_ids[reference_order])
    np.testing.assert_allclose(
        written.global_embedding[order],
        reference.global_embedding[reference_order],
        rtol=1e-4,
        atol=1e-5,
    )


def publish_shifted_version(model_dir, base: str, name: str) -> str:
    """Publish (not as LATEST) a copy of ``base`` whose proxies differ.

    Every floating tensor of the state (weights and the projector's calibration buffers) is
    scaled by 1.5: scaling weights alone would leave the unit-norm projector direction unchanged.
    """
    import torch

    from idproxy_stream.artifacts import BundleLayout
    from idproxy_stream.proxy.registry import load_version, publish_version

    registry = BundleLayout(model_dir).registry
    model, manifest = load_version(registry, base)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1.5)
    publish_version(model, replace(manifest, version=name), registry, make_latest=False)
    return name


def test_backfill_job_recomputes_a_kafka_offset_range_with_a_named_version(
    ray_head, job_settings, staged_bundle, tmp_path
):
    raw = job_settings()
    config = config_from_dict(raw)
    version = publish_shifted_version(
        staged_bundle.model_dir, STAGE1_VERSION, f"v3-{config.kafka.group_id}"
    )
    ensure_topics(config.kafka, stream_topics(config.kafka), config.kafka.topic_partitions)
    events = [new_event(30_000 + index) for index in range(40)]
    # A batching producer: tansu then reports partition ends too low, so the job is given the
    # exact end offsets of what was published (see backfill/kafka_range.py).
    published = publish_events(config.kafka, [*events, b"\xff\xfe"], one_record_per_batch=False)
    end = ",".join(f"{p}:{o}" for p, o in sorted(published.end_offsets().items()))
    job = ray_head.submit(
        [
            sys.executable,
            "jobs/backfill.py",
            "--config",
            str(write_config(raw, tmp_path / "backfill.yaml")),
            "--source",
            "kafka",
            "--end",
            end,
            "--model-version",
            version,
        ]
    )
    assert ray_head.wait_for(job, {"SUCCEEDED"}, 240) == "SUCCEEDED"

    report = result_line(ray_head.logs(job), "backfill")
    assert report["model_version"] == version  # named, not LATEST (v2-fine)
    assert (report["records"], report["rows_written"]) == (41, 40)
    assert report["refused"] == {"not_json": 1}
    rows = {row.item_id: row for row in stored(config)}
    assert sorted(rows) == [event.item_id for event in events]
    assert {row.model_version for row in rows.values()} == {version}
    positions = dict(zip([e.item_id for e in events], published.positions, strict=False))
    assert all(
        (row.kafka_partition, row.kafka_offset) == positions[item_id]
        for item_id, row in rows.items()
    )
    items = [WorkItem(config.kafka.topic, *positions[event.item_id], event) for event in events[:8]]
    named = in_process_proxies(config, version, items)
    latest = in_process_proxies(config, STAGE2_VERSION, items)
    for item_id, proxy in named.items():
        np.testing.assert_allclose(rows[item_id].proxy, proxy, rtol=1e-4, atol=1e-6)
        assert not np.allclose(rows[item_id].proxy, latest[item_id], rtol=1e-2, atol=0)
