"""Ray workers the tests start cannot reach the machine's own Redis on its default port either."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(
    os.environ.get("IDPROXY_TEST_FORBIDDEN_PORTS") != "6379",
    reason="IDPROXY_TEST_REDIS_URL names port 6379 on purpose: guard off",
)
def test_ray_workers_of_the_tests_cannot_connect_to_the_default_redis_port(ray_cluster) -> None:
    @ray_cluster.remote(num_cpus=0.1)
    def connect_to_default_redis() -> str:
        import redis

        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except redis.ConnectionError as error:
            return str(error)
        return "connected"

    assert "refused by the test guard" in ray_cluster.get(connect_to_default_redis.remote())
