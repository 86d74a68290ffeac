"""Stream fixtures: a real tansu broker, a local Ray, a tiny trained model bundle, and helpers
to publish a mix of valid and invalid records and to check the job's effect.

Everything is real: kafka-python against tansu on a free loopback port, Ray actors, the packaged
MiniLM encoder, a ranker + ProxyModel trained once per session on a small synthetic catalogue,
the sqlite store. Waiting is always on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests_helpers import T0, TINY_TRAINING, job_test_settings, wait_until

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, config_from_dict
from idproxy_stream.events import DeadLetter, NewItemEvent
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.store.base import build_store
from idproxy_stream.stream.publish import PublishReport, publish_events
from idproxy_stream.stream.topics import (
    committed_offsets,
    end_offsets,
    ensure_topics,
    read_topic,
    stream_topics,
)

MAX_TEXT_CHARS = 2_000
MAX_PIXELS = 1_000_000
__all__ = ["T0", "TINY_TRAINING", "wait_until"]  # imported from here by the stream tests


@dataclass(frozen=True)
class Bundle:
    model_dir: Path
    mature_item_id: int
    mature_threshold: int


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local 2-CPU Ray for the session (reused when another fixture already started one)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="idproxy-tests",
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        logging_level="WARNING",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Bundle:
    """A ranker + ProxyModel "v1" trained once on a tiny synthetic catalogue with MiniLM."""
    from idproxy_stream.training.bundle import train_model_bundle

    model_dir = tmp_path_factory.mktemp("bundle") / "model"
    config = config_from_dict(TINY_TRAINING)
    train_model_bundle(config, model_dir, version="v1")
    id_space = IdSpace.load(BundleLayout(model_dir).id_space)
    mature = int(id_space.item_ids[int(np.argmax(id_space.interaction_counts))])
    threshold = int(id_space.interaction_counts.max())
    return Bundle(model_dir, mature, threshold)


@pytest.fixture
def stream_config(tmp_path, broker, bundle) -> Callable[..., AppConfig]:
    """Factory: a config for one test (own topics, group, store), with section overrides."""

    def make(**sections) -> AppConfig:
        raw = job_test_settings(
            broker.bootstrap_servers,
            bundle.model_dir,
            tmp_path / "proxies.sqlite",
            encoder={
                **TINY_TRAINING["encoder"],
                "images": {
                    "allowed_roots": [str(tmp_path / "images")],
                    "max_pixels": MAX_PIXELS,
                    "http_timeout_s": 2.0,
                    # HTTP is off by default and loopback refused (SSRF); the fault tests'
                    # unreachable-URI record (http://127.0.0.1:9/...) needs both allowed.
                    "allow_http": True,
                    "http_allowed_hosts": ["127.0.0.1"],
                    "http_allow_private_addresses": True,
                },
            },
            reader={"maturity_threshold": bundle.mature_threshold},
            kafka={"max_event_bytes": 200_000, "topic_partitions": 4},
            stream={
                "max_text_chars": MAX_TEXT_CHARS,
                "model_poll_interval_s": 0.5,
                "drain_timeout_s": 60,
            },
        )
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values}
        config = config_from_dict(raw, "test settings")
        ensure_topics(config.kafka, stream_topics(config.kafka), config.kafka.topic_partitions)
        return config

    return make


# ----------------------------------------------------------------------------- records


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 1_200, height: int = 1_000) -> bytes:
    """A small file whose header declares more than MAX_PIXELS pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def event(item_id: int, created: datetime | None = None, **fields) -> NewItemEvent:
    return NewItemEvent(
        item_id=item_id,
        created_at=created or T0 + timedelta(seconds=item_id % 1000),
        title=fields.pop("title", f"A new film number {item_id}"),
        tags=fields.pop("tags", ("drama", "new")),
        **fields,
    )


@dataclass
class Mix:
    """Records to publish and what each must become: a row (valid) or a dead letter."""

    payloads: list[bytes] = field(default_factory=list)
    keys: list[int | None] = field(default_factory=list)
    expected_reason: list[str | None] = field(default_factory=list)  # None: must be a row

    def add(self, payload: bytes, reason: str | None, item_id: int | None = None) -> None:
        self.payloads.append(payload)
        self.keys.append(item_id)
        self.expected_reason.append(reason)

    def add_valid(self, item_ids) -> None:
        for item_id in item_ids:
            self.add(event(item_id).to_json_bytes(), None, item_id)

    @property
    def valid_item_ids(self) -> set[int]:
        return {k for k, r in zip(self.keys, self.expected_reason, strict=True) if r is None}


def joined(*mixes: Mix) -> Mix:
    """One mix: the records of ``mixes`` in order."""
    return Mix(
        [p for m in mixes for p in m.payloads],
        [k for m in mixes for k in m.keys],
        [r for m in mixes for r in m.expected_reason],
    )


def bad_records(mix: Mix, image_root: Path, bundle: Bundle, base_id: int) -> None:
    """One of every bad input, plus a duplicate and an event with a good image of each kind."""
    image_root.mkdir(parents=True, exist_ok=True)
    secret = image_root.parent / "outside" / "secret.png"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(png_bytes(8, 8))
    good_file = image_root / "good.png"
    good_file.write_bytes(png_bytes(16, 16, seed=1))
    inline = base64.b64encode(png_bytes(12, 12, seed=2)).decode()
    mix.add(b"\xff\xfe not json at all", "not_json")
    mix.add(json.dumps([1, 2, 3]).encode(), "wrong_shape")
    no_id = {"created_at": T0.isoformat(), "title": "no id"}
    mix.add(json.dumps(no_id).encode(), "missing_item_id")
    mix.add(event(base_id + 1, title="x" * (MAX_TEXT_CHARS + 1)).to_json_bytes(), "text_too_long")
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(64)).decode()
    mix.add(event(base_id + 2, image_base64=corrupt).to_json_bytes(), "image_undecodable")
    bomb = base64.b64encode(bomb_png()).decode()
    mix.add(event(base_id + 3, image_base64=bomb).to_json_bytes(), "image_decompression_bomb")
    unreachable = "http://127.0.0.1:9/poster.png"
    mix.add(event(base_id + 4, image_uri=unreachable).to_json_bytes(), "image_fetch_failed")
    traversal = f"file://{image_root}/../outside/secret.png"
    mix.add(event(base_id + 5, image_uri=traversal).to_json_bytes(), "image_outside_allowed_roots")
    mix.add(b'{"item_id": %d, "created_at": NaN}' % (base_id + 6), "non_finite_number")
    mix.add(event(bundle.mature_item_id).to_json_bytes(), "item_already_mature")
    # A duplicate (same item, later offset and event time) and images that are fine.
    mix.add(event(base_id + 7).to_json_bytes(), None, base_id + 7)
    later = T0 + timedelta(days=1)
    mix.add(event(base_id + 7, created=later).to_json_bytes(), None, base_id + 7)
    mix.add(event(base_id + 8, image_uri=good_file.as_uri()).to_json_bytes(), None, base_id + 8)
    mix.add(event(base_id + 9, image_base64=inline).to_json_bytes(), None, base_id + 9)


def publish(config: AppConfig, payloads: list[bytes]) -> PublishReport:
    """Send raw records, one per produce batch (tansu then reports exact end offsets)."""
    return publish_events(config.kafka, payloads, one_record_per_batch=True)


# ----------------------------------------------------------------------------- checks


def stored_rows(config: AppConfig) -> list:
    path = config.store.sqlite.path
    if not path.exists():
        return []
    with build_store(config.store) as store:
        return list(store.scan())


def stored_item_ids(config: AppConfig) -> list[int]:
    return [record.item_id for record in stored_rows(config)]


def dead_letters(config: AppConfig) -> list[DeadLetter]:
    return [
        DeadLetter.from_json_bytes(value)
        for _, _, _, value in read_topic(config.kafka, config.kafka.dead_letter_topic)
    ]


def offsets_committed_to_end(config: AppConfig) -> bool:
    ends = {p: o for p, o in end_offsets(config.kafka, config.kafka.topic).items() if o > 0}
    return committed_offsets(config.kafka, config.kafka.topic) == ends


def assert_exactly_once_effect(
    config: AppConfig, mix: Mix, reports: list[PublishReport], timeout_s: float = 120
) -> None:
    """Every valid item one row, offsets committed to the end, every invalid record dead."""
    wait_until(lambda: offsets_committed_to_end(config), timeout_s, "offsets committed to end")
    ids = stored_item_ids(config)
    assert sorted(ids) == sorted(set(ids)), "an item has more than one row"
    assert set(ids) == mix.valid_item_ids
    positions = [position for report in reports for position in report.positions]
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert committed_offsets(config.kafka, config.kafka.topic) == ends
    assert end_offsets(config.kafka, config.kafka.topic) == {**dict.fromkeys(range(4), 0), **ends}
    expected_dead = {
        position: (reason, payload)
        for position, reason, payload in zip(
            positions, mix.expected_reason, mix.payloads, strict=True
        )
        if reason is not None
    }
    found = {(letter.partition, letter.offset): letter for letter in dead_letters(config)}
    assert set(found) == set(expected_dead), "dead letters differ from the invalid records"
    for position, (reason, payload) in expected_dead.items():
        letter = found[position]
        assert letter.reason == reason, f"record at {position}: {letter.message}"
        # The letter holds the record's first bytes (all of a small one) and the whole digest.
        assert letter.original_value == payload[: config.kafka.dead_letter_value_bytes]
        assert letter.value_bytes == len(payload)
        assert letter.value_sha256 == hashlib.sha256(payload).hexdigest()
        assert letter.topic == config.kafka.topic


@pytest.fixture
def start_job(ray_cluster):
    """Factory: start a StreamJob and wait until it holds partitions; stopped at teardown."""
    from idproxy_stream.stream.pipeline import StreamJob

    jobs: list[StreamJob] = []

    def start(config: AppConfig, name: str = "job") -> StreamJob:
        job = StreamJob(config, f"{name}-{uuid.uuid4().hex[:6]}").start()
        jobs.append(job)
        job.wait_ready(timeout_s=180)
        return job

    yield start
    for job in jobs:
        if not job._stopping.is_set():
            job.stop(drain=False, timeout_s=60)
