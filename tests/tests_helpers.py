"""Helpers shared by several test folders (importable because tests/ is on sys.path)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from idproxy_stream.data.schema import RecDataset
from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.events import NewItemEvent

REPO = Path(__file__).resolve().parents[1]
PLANTED_DIM = 24
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The versions the training jobs publish into the session's staged bundle (conftest.py).
STAGE1_VERSION = "v1-coarse"
STAGE2_VERSION = "v2-fine"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def new_event(item_id: int) -> NewItemEvent:
    """A valid event for an item the ranker has never seen (ids >= 10,000)."""
    return NewItemEvent(
        item_id=item_id,
        created_at=T0 + timedelta(seconds=item_id % 1000),
        title=f"A new film number {item_id}",
        tags=("drama", "new" if item_id % 2 else "classic"),
    )


def merge_sections(raw: dict[str, Any], sections: dict[str, dict]) -> dict[str, Any]:
    """``raw`` with each of ``sections`` merged into its section (one level deep)."""
    merged = dict(raw)
    for section, values in sections.items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged


def job_test_settings(
    bootstrap_servers: str, model_dir: Path, store_path: Path, **sections: dict
) -> dict[str, Any]:
    """Raw config of one stream or backfill test: the tiny training settings, a topic and
    group of its own on the test broker (with the settings that form a group in about a
    second), test-sized actors serving ``model_dir``, a sqlite store at ``store_path``; then
    ``sections`` merged in per section."""
    suffix = uuid.uuid4().hex[:8]
    raw = {
        **TINY_TRAINING,
        "kafka": {
            "bootstrap_servers": bootstrap_servers,
            "topic": f"items-{suffix}",
            "dead_letter_topic": f"items-{suffix}.dlq",
            "group_id": f"group-{suffix}",
            "session_timeout_ms": 2_000,
            "heartbeat_interval_ms": 500,
            "fetch_max_wait_ms": 10,
            "request_timeout_ms": 5_000,
        },
        "stream": {
            "model_dir": str(model_dir),
            "num_workers": 1,
            "worker_num_cpus": 0.25,
            "source_num_cpus": 0.1,
            "sink_num_cpus": 0.1,
            "max_batch_size": 16,
            "metrics_port": None,
            "log_level": "WARNING",
        },
        "store": {"sqlite": {"path": str(store_path)}},
    }
    return merge_sections(raw, sections)


# Settings of a model bundle small enough to train in seconds (stream and cluster tests).
TINY_TRAINING = {
    "data": {
        "synthetic": {
            "num_items": 240,
            "num_users": 120,
            "interactions_per_user": 40,
            "with_images": False,
        }
    },
    "split": {"warm_min_interactions": 30, "cold_min": 16, "cold_max": 30, "warmup_size": 5},
    "ranker": {"epochs": 1},
    "stage1": {"epochs": 10, "tau": 10},
    "stage2": {"epochs": 1},
    "encoder": {"layers": {"calibration_size": 64}},
    "index": {"k": 5},
}


# The staged bundle (conftest.py: Stage 1, then Stage 2 by the training jobs) trains longer and
# publishes Stage 2's own model (no ridge blend), which its tests inspect.
STAGED_TRAINING = {**TINY_TRAINING, "stage2": {"epochs": 2, "ridge_fallback": False}}


def planted_feature_table(dataset: RecDataset, noise: float = 0.1, seed: int = 0) -> FeatureTable:
    """(N, D) global and (N, 2, D) cluster states that are noisy linear maps of true factors."""
    generator = np.random.default_rng(seed)
    factors = np.asarray(dataset.metadata["item_factors"], dtype=np.float32)
    bias = np.asarray(dataset.metadata["item_bias"], dtype=np.float32)[:, None]
    latent = np.concatenate([factors, bias], axis=1)
    projection = generator.normal(size=(latent.shape[1], PLANTED_DIM)).astype(np.float32)
    global_embedding = latent @ projection
    global_embedding += noise * generator.normal(size=global_embedding.shape).astype(np.float32)
    second = latent @ generator.normal(size=projection.shape).astype(np.float32)
    cluster_states = np.stack([global_embedding, second], axis=1).astype(np.float32)
    count = len(dataset.items)
    return FeatureTable(
        item_ids=dataset.items["item_id"].to_numpy(np.int64),
        global_embedding=global_embedding.astype(np.float32),
        cluster_states=cluster_states,
        clusters=LayerClusters(boundaries=(0, 1), num_layers=2),
        encoder_fingerprint="planted-test-features",
        image_errors=np.array([None] * count, dtype=object),
        text_truncated=np.zeros(count, dtype=bool),
    )


def training_config(features_dir: Path, **sections: dict):
    """The staged bundle's training settings, reading the features in ``features_dir``."""
    from idproxy_stream.config import config_from_dict

    raw = {**STAGED_TRAINING, "extract": {"output_path": str(features_dir)}}
    return config_from_dict(merge_sections(raw, sections), "test settings")


def write_config(raw: dict, path: Path) -> Path:
    """Write a raw config as the YAML file a job reads (validated first)."""
    import json

    import yaml

    from idproxy_stream.config import config_from_dict

    config_from_dict(raw, "test settings")
    path.write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
    return path
