"""A node goes away (issue 12, item 13): the stream on a two-node Ray cluster on this machine.

The head (``ray start --head``) advertises ``cpu_node`` and runs the driver, the sources and
the sink; a second node (``ray start --address=<head>``, its own ports and temp dir) advertises
``encoder_node`` — the GPU node's stand-in — and runs the encoder workers, placed there by the
same ``cluster.*_resources`` settings users set. Its raylet is SIGKILLed mid-stream; while no
node has the workers' resources the job says so (``/readyz`` 503 naming the replaced worker,
the replacements in ``/metrics``); a new node with those resources joins, the workers are
placed on it, and every event ends as exactly one row with the offsets committed to the end.
The head's health checks are shortened (``RAY_health_check_*``) so Ray declares the node dead
in seconds rather than its default half-minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from ray.util.state import list_actors, list_nodes

from idproxy_stream.stream.broker import free_port
from tests.cluster.conftest import RayHead, RayWorkerNode, new_ray_head
from tests.stream.conftest import (
    Mix,
    assert_exactly_once_effect,
    joined,
    publish,
    stored_rows,
    wait_until,
)

FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
WORKER_NODE_RESOURCES = {"encoder_node": 100}


@pytest.fixture
def head_and_worker_nodes():
    """A started head with ``cpu_node`` only, and a factory of worker nodes joining it."""
    head = new_ray_head({"cpu_node": 100}, FAST_NODE_DEATH).start().wait_ready()
    nodes: list[RayWorkerNode] = []

    def add_worker_node() -> RayWorkerNode:
        nodes.append(RayWorkerNode(head, WORKER_NODE_RESOURCES).start())
        return nodes[-1]

    try:
        yield head, add_worker_node
    finally:
        for node in nodes:
            node.stop()
        head.stop()


def encoder_node_ids(head: RayHead, state: str) -> set[str]:
    """Ids of the nodes in ``state`` (ALIVE, DEAD) that advertise the workers' resource."""
    return {
        node.node_id
        for node in list_nodes(
            address=head.dashboard_url, detail=True, raise_on_missing_output=False
        )
        if node.state == state and "encoder_node" in (node.resources_total or {})
    }


def worker_placement(head: RayHead) -> dict[str, str]:
    """Live encoder worker actor id -> the id of the node it runs on."""
    actors = list_actors(
        address=head.dashboard_url,
        filters=[("class_name", "=", "ProxyWorker"), ("state", "=", "ALIVE")],
        detail=True,
        raise_on_missing_output=False,
    )
    return {actor.actor_id: actor.node_id for actor in actors}


def wait_for_workers_on(head: RayHead, node_id: str, workers: int = 2) -> None:
    """Wait until exactly ``workers`` encoder workers are alive, all on ``node_id`` (Ray's state
    API lags its actors by a moment); the failure names where they were."""
    deadline = time.monotonic() + 60
    placed = worker_placement(head)
    while not (len(placed) == workers and set(placed.values()) == {node_id}):
        if time.monotonic() > deadline:
            raise AssertionError(f"workers not all on {node_id}: {placed}")
        time.sleep(0.5)
        placed = worker_placement(head)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:  # not serving yet
        return 0, str(error)


def wait_for_readyz(port: int, status: int, says: str, timeout_s: float) -> None:
    """Poll ``/readyz`` until it answers ``status`` with ``says`` in its reason; the failure
    names the last answer."""
    deadline = time.monotonic() + timeout_s
    answer = http_get(port, "/readyz")
    while not (answer[0] == status and says in answer[1]):
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz never answered {status} {says!r}: last {answer}")
        time.sleep(0.2)
        answer = http_get(port, "/readyz")


def metric(port: int, line_prefix: str) -> float:
    """The value of the first ``/metrics`` sample whose line starts with ``line_prefix``."""
    _, text = http_get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_fault_the_worker_node_dies_mid_stream_and_a_new_one_takes_its_workers(
    stream_config, tmp_path, head_and_worker_nodes
) -> None:
    head, add_worker_node = head_and_worker_nodes
    first_node = add_worker_node()
    wait_until(lambda: len(encoder_node_ids(head, "ALIVE")) == 1, 60, "the worker node to join")
    (first_node_id,) = encoder_node_ids(head, "ALIVE")
    port = free_port()
    config = stream_config(
        stream={"num_workers": 2, "max_batch_size": 4, "metrics_port": port},
        cluster={
            "source_resources": {"cpu_node": 0.01},
            "sink_resources": {"cpu_node": 0.01},
            "worker_resources": {"encoder_node": 0.01},
        },
    )
    before, during = Mix(), Mix()
    before.add_valid(range(20_000_000, 20_000_100))
    during.add_valid(range(20_000_100, 20_000_300))  # published while the node is gone
    reports = [publish(config, before.payloads)]
    raw = config.model_dump(mode="json")
    raw["ray"]["address"] = head.gcs_address
    path = tmp_path / "two-nodes.yaml"
    path.write_text(yaml.safe_dump(raw))
    log = (tmp_path / "two-nodes.log").open("wb")
    env = {**head.env, "PYTHONWARNINGS": "ignore"}
    job = subprocess.Popen(
        [sys.executable, "-m", "idproxy_stream.cli", "stream", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: len(stored_rows(config)) >= 20, 240, "rows from the first worker node")
        wait_for_workers_on(head, first_node_id)
        os.kill(first_node.raylet_pid(), signal.SIGKILL)
        wait_until(lambda: first_node_id in encoder_node_ids(head, "DEAD"), 60, "the node's death")
        # Events keep coming while no node has the workers' resource (the first part may be
        # written already: the workers' deaths show at the next batch sent to them).
        reports.append(publish(config, during.payloads))
        wait_for_readyz(port, 503, "worker actor was replaced", 60)
        assert metric(port, 'idproxy_stream_actor_restarts_total{role="worker"}') >= 1
        everything = joined(before, during)
        assert len(stored_rows(config)) < len(everything.payloads), "written without workers"

        second_node = add_worker_node()
        assert_exactly_once_effect(config, everything, reports, timeout_s=240)
        (second_node_id,) = encoder_node_ids(head, "ALIVE")
        assert second_node_id != first_node_id and second_node.raylet_pid()
        wait_for_workers_on(head, second_node_id)
        wait_for_readyz(port, 200, "consuming", 60)
        job.send_signal(signal.SIGTERM)  # drains, commits and exits
        assert job.wait(timeout=120) == 0
    finally:
        job.kill()
        log.close()
