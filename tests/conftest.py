"""Shared fixtures: a tiny synthetic dataset, its split, and planted content features; the
session's embedded broker; MiniLM features of the tiny catalogue and the bundle the training
jobs stage from them; Redis.

The planted features are a noisy linear function of the generator's true item factors, so
content really does predict what the ranker learns about an item, in milliseconds and without
running an encoder (encoder tests run the real encoders).

Services: the session starts its own Redis server on a free loopback port (``redis_url``;
``IDPROXY_TEST_REDIS_URL`` points the tests at another one instead), and every Python process
the tests start refuses connections to the default Redis port 6379 (``tests/guard``), so no test
can depend on a Redis the machine happens to run.
Helpers that tests import (waiting on a condition, config factories) are in
``tests_helpers.py``.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from redis_server import RedisServer
from tests_helpers import (
    STAGE1_VERSION,
    STAGE2_VERSION,
    STAGED_TRAINING,
    planted_feature_table,
    training_config,
)

from idproxy_stream.config import RankerConfig, SplitConfig, SyntheticDataConfig
from idproxy_stream.data.schema import RecDataset
from idproxy_stream.data.split import ColdStartSplit, build_cold_start_split
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.encoders.features import FeatureTable

# Ray starts its workers at niceness 15: on a CI machine with any other load the tests' actors
# would then starve behind it. Every Ray the tests start (in-process or `ray start`, which
# inherits the environment) runs its workers at the tests' own priority instead.
os.environ.setdefault("RAY_worker_niceness", "0")

DEFAULT_REDIS_PORT = 6379
GUARD_DIR = Path(__file__).parent / "guard"


def forbidden_ports(environ=os.environ) -> str:
    """The default Redis port, unless ``IDPROXY_TEST_REDIS_URL`` deliberately names it."""
    override = environ.get("IDPROXY_TEST_REDIS_URL")
    if override and (urlparse(override).port or DEFAULT_REDIS_PORT) == DEFAULT_REDIS_PORT:
        return ""
    return str(DEFAULT_REDIS_PORT)


def install_port_guard() -> None:
    """Guard this process and (through PYTHONPATH) every Python process it starts."""
    os.environ["IDPROXY_TEST_FORBIDDEN_PORTS"] = forbidden_ports()
    paths = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    if str(GUARD_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), *paths])
    spec = importlib.util.spec_from_file_location(
        "idproxy_test_guard", GUARD_DIR / "sitecustomize.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


install_port_guard()

# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). Tests that start
# Ray, the broker or stream subprocesses go to one worker, one after another, as in a serial
# run (two Rays at once would starve each other's actors on two cores); the CPU-bound training
# and evaluation tests share the other worker's time.
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one torch thread each
    import torch

    torch.set_num_threads(1)

SERVICE_DIRS = {"stream", "cluster", "backfill", "runbooks"}
RAY_FIXTURES = {"ray_cluster", "ray_local"}
RAY_MODULES = {"test_ray_extract.py", "test_encode_cli.py"}


def pytest_collection_modifyitems(config, items) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        path = Path(str(item.path)).relative_to(tests_root)
        if (
            path.parts[0] in SERVICE_DIRS
            or path.name in RAY_MODULES
            or RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.xdist_group("services"))


TINY_SPLIT = SplitConfig(warm_min_interactions=40, cold_min=16, cold_max=40, warmup_size=3)
TINY_RANKER = RankerConfig(epochs=10, batch_size=128, learning_rate=1e-2, patience=3, num_threads=1)


@pytest.fixture(scope="session")
def tiny_dataset() -> RecDataset:
    return generate_synthetic(
        SyntheticDataConfig(num_items=300, num_users=300, interactions_per_user=40, seed=3)
    )


@pytest.fixture(scope="session")
def tiny_split(tiny_dataset: RecDataset) -> ColdStartSplit:
    return build_cold_start_split(tiny_dataset, TINY_SPLIT)


@pytest.fixture(scope="session")
def planted_features(tiny_dataset: RecDataset) -> FeatureTable:
    return planted_feature_table(tiny_dataset)


@pytest.fixture(scope="session")
def encoded_parts(tiny_dataset, tiny_split):
    """(vocab, {part name: RankerInputs}) for the tiny split."""
    from idproxy_stream.ranker.inputs import FeatureVocab, ItemSideFeatures, encode_samples

    vocab = FeatureVocab.from_dataset(tiny_dataset)
    side = ItemSideFeatures.from_dataset(tiny_dataset, vocab)
    parts = {
        name: encode_samples(frame, tiny_dataset, vocab, side)
        for name, frame in tiny_split.parts.items()
    }
    return vocab, parts


@pytest.fixture(scope="session")
def tiny_ranker(encoded_parts):
    """A reference ranker trained on the tiny warm split (frozen: do not train it further)."""
    from idproxy_stream.ranker.training import train_ranker

    vocab, parts = encoded_parts
    ranker, _ = train_ranker(parts["warm_train"], parts["warm_valid"], TINY_RANKER, vocab)
    return ranker


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """URL of the session's own Redis server (or of ``IDPROXY_TEST_REDIS_URL`` when set)."""
    override = os.environ.get("IDPROXY_TEST_REDIS_URL")
    if override:
        yield override
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the real Redis server the tests use (see DEVELOPERS.md)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A unique key prefix whose keys are deleted after the test."""
    prefix = f"idproxy-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1_000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The embedded tansu broker, on a free loopback port, for the whole session."""
    from idproxy_stream.stream.broker import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "broker.log") as running:
        yield running


@pytest.fixture(scope="session")
def features_dir(tmp_path_factory) -> Path:
    """MiniLM features of the tiny catalogue, written where ``jobs/encode.py`` would put them."""
    from idproxy_stream.config import config_from_dict
    from idproxy_stream.data.loading import load_dataset
    from idproxy_stream.encoders.extract import extract_features
    from idproxy_stream.encoders.registry import build_encoder

    config = config_from_dict(STAGED_TRAINING)
    folder = tmp_path_factory.mktemp("features")
    table = extract_features(
        build_encoder(config.encoder),
        load_dataset(config.data).items,
        batch_size=64,
        text_fields=config.encoder.text_fields,
        image_config=config.encoder.images,
        layer_config=config.encoder.layers,
    )
    table.write_parquet(folder / f"part-{table.encoder_fingerprint}-0.parquet")
    return folder


@dataclass(frozen=True)
class StagedBundle:
    model_dir: Path
    features_dir: Path
    stage1_report: object
    stage2_report: object


@pytest.fixture(scope="session")
def staged_bundle(tmp_path_factory, features_dir) -> StagedBundle:
    """Ranker + Stage 1 (``v1-coarse``) then Stage 2 (``v2-fine``, LATEST), by the job functions."""
    from idproxy_stream.training.jobs import run_stage1, run_stage2

    model_dir = tmp_path_factory.mktemp("bundle") / "model"
    config = training_config(features_dir)
    first = run_stage1(config, model_dir, STAGE1_VERSION)
    second = run_stage2(config, model_dir, STAGE1_VERSION, STAGE2_VERSION)
    return StagedBundle(model_dir, features_dir, first, second)
