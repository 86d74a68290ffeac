"""Store fixtures: a record factory, and each backend on real storage (file, Redis server).

The Redis client and per-test key prefix are in ``tests/conftest.py`` (the stream tests use
them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis

from idproxy_stream.events import ProxyRecord
from idproxy_stream.store.base import FeatureStore
from idproxy_stream.store.parquet import ParquetProxyLog
from idproxy_stream.store.redis import RedisStore
from idproxy_stream.store.sqlite import SqliteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIM = 8


def make_record(
    item_id: int,
    model_version: str = "m1",
    *,
    computed_s: float = 0.0,
    event_s: float | None = None,
    offset: int | None = None,
    seed: int | None = None,
    id_space_fingerprint: str = "idspace0",
    dim: int = DIM,
    void: bool = False,
) -> ProxyRecord:
    """A record whose proxy is a function of (item_id, seed), so rows can be told apart."""
    rng = np.random.default_rng(item_id if seed is None else (item_id, seed))
    return ProxyRecord(
        item_id=item_id,
        proxy=rng.normal(size=dim).astype(np.float32),
        model_version=model_version,
        encoder_fingerprint="enc0",
        id_space_fingerprint=id_space_fingerprint,
        computed_at=T0 + timedelta(seconds=computed_s),
        source_event_ts=None if event_s is None else T0 + timedelta(seconds=event_s),
        kafka_topic=None if offset is None else "new-items",
        kafka_partition=None if offset is None else 3,
        kafka_offset=offset,
        neighbours=np.array([11, 12, 13]),
        neighbour_similarities=np.array([0.9, 0.8, 0.7]),
        void=void,
        void_score=0.25,
        status="void_flagged" if void else "ok",
    )


def open_store(kind: str, tmp_path, request: pytest.FixtureRequest) -> FeatureStore:
    """The ``kind`` backend; only the Redis one asks for the Redis fixtures."""
    if kind == "sqlite":
        return SqliteStore(tmp_path / "proxies.sqlite")
    if kind == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        return RedisStore(client, key_prefix=request.getfixturevalue("redis_prefix"))
    return ParquetProxyLog(tmp_path / "log", row_group_size=4)


@pytest.fixture(params=["sqlite", "redis", "parquet"])
def store(request, tmp_path) -> Iterator[FeatureStore]:
    with open_store(request.param, tmp_path, request) as opened:
        yield opened
