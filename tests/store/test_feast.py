"""``store/feast.py``: rows our store writes are read back by the real ``feast`` 0.67
``FeatureStore.get_online_features``, from Redis and from Feast's sqlite online store.

feast 0.67 pins older pandas / prometheus-client / redis than this project's environment, so
it runs in a virtualenv of its own, built on first use and cached outside the repository
(``IDPROXY_FEAST_VENV``, default ``~/.cache/idproxy-feast/feast-0.67.0``); the test skips when that
virtualenv cannot be built (no package index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from idproxy_stream.config import FeastConfig, StoreConfig
from idproxy_stream.store.base import build_store
from idproxy_stream.store.feast import murmur3_32

from .conftest import T0, make_record

FEAST_REQUIREMENT = "feast[redis]==0.67.0"
READBACK = Path(__file__).with_name("feast_readback.py")


def feast_venv() -> Path:
    return Path(
        os.environ.get("IDPROXY_FEAST_VENV", Path.home() / ".cache/idproxy-feast/feast-0.67.0")
    )


@pytest.fixture(scope="session")
def feast_python() -> Path:
    """The Python of a virtualenv holding feast 0.67 (built once, then reused)."""
    venv = feast_venv()
    python = venv / "bin" / "python"
    ready = venv / ".idproxy-ready"
    if not ready.is_file():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", FEAST_REQUIREMENT],
                check=True,
                timeout=1_200,
                capture_output=True,
            )
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"cannot build the feast virtualenv in {venv}: {error}")
        ready.write_text(FEAST_REQUIREMENT + "\n")
    return python


def read_with_feast(python: Path, repo: Path, online: str, connection: str, dtype, item_ids):
    result = subprocess.run(
        [str(python), str(READBACK), str(repo), online, connection, dtype, *map(str, item_ids)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_murmur3_matches_the_published_vectors():
    # reference values of MurmurHash3_x86_32 (seed 0), as mmh3.hash(key, signed=False)
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def written(tmp_path, feast: FeastConfig):
    records = [
        make_record(101, "v7", event_s=60.0),
        make_record(202, "v7", event_s=120.0, void=True),
    ]
    config = StoreConfig(sqlite={"path": tmp_path / "ours.sqlite"}, feast=feast)
    with build_store(config) as store:
        store.upsert(records)
        assert set(store.get([101, 202])) == {101, 202}  # our own reads still work
    return records


def check(response: dict, records) -> None:
    for position, record in enumerate(records):
        np.testing.assert_allclose(response["proxy"][position], record.proxy, rtol=1e-6)
        assert response["model_version"][position] == "v7"
        assert response["void"][position] is bool(record.void)
        assert response["neighbour_distance"][position] == pytest.approx(0.25)
        assert response["proxy__ts"][position] == int(record.source_event_ts.timestamp())
    assert records[0].source_event_ts > T0


@pytest.mark.parametrize("dtype", ["int64", "string"])
def test_feast_reads_our_rows_from_its_sqlite_online_store(feast_python, tmp_path, dtype):
    online = tmp_path / "online_store.db"
    feast = FeastConfig(online="sqlite", sqlite_path=online, entity_key_dtype=dtype)
    records = written(tmp_path, feast)
    response = read_with_feast(
        feast_python, tmp_path / "repo", "sqlite", str(online), dtype, [101, 202]
    )
    check(response, records)


def test_feast_reads_our_rows_from_redis(feast_python, tmp_path, redis_url, redis_client):
    url = urlparse(redis_url)
    feast = FeastConfig(online="redis", redis_url=redis_url, project="idproxy")
    try:
        records = written(tmp_path, feast)
        connection = f"{url.hostname}:{url.port},db={(url.path or '/0').lstrip('/') or 0}"
        response = read_with_feast(
            feast_python, tmp_path / "repo", "redis", connection, "int64", [101, 202]
        )
        check(response, records)
    finally:
        for key in redis_client.scan_iter(match=b"*idproxy"):
            redis_client.delete(key)


def test_feast_rows_in_redis_expire_with_the_cold_start_window(
    redis_url, redis_client, redis_prefix
):
    """``store.ttl_s`` expires the Feast row like the store's own keys: EXPIREAT at the item's
    creation plus the window; a row already past its window is not written."""
    from idproxy_stream.store.feast import entity_key_bytes

    feast = FeastConfig(online="redis", redis_url=redis_url, project="idproxy-ttl")
    key = entity_key_bytes(101, "item_id", "int64") + b"idproxy-ttl"
    try:
        window = 20 * 365 * 86_400  # the records are stamped in 2026: alive for the test
        ours = {"online": "redis", "redis": {"url": redis_url, "key_prefix": redis_prefix}}
        config = StoreConfig(**ours, feast=feast, ttl_s=window)
        with build_store(config) as store:
            store.upsert([make_record(101, "v7", event_s=60.0)])
        expected = int(T0.timestamp()) + 60 + window
        assert redis_client.execute_command("EXPIRETIME", key) == expected
        redis_client.delete(key)
        past = StoreConfig(**ours, feast=feast, ttl_s=86_400)
        with build_store(past) as store:
            store.upsert([make_record(101, "v7", event_s=60.0)])
        assert not redis_client.exists(key)
    finally:
        redis_client.delete(key)


def test_a_wrong_entity_dtype_fails_at_load_naming_the_setting():
    from idproxy_stream.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as error:
        config_from_dict({"store": {"feast": {"entity_key_dtype": "int32"}}}, "test settings")
    assert "store.feast.entity_key_dtype" in str(error.value)
    assert "\n" not in str(error.value).strip()
