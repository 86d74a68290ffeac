"""Cluster fixtures: a real Ray head started with ``ray start --head``, and job settings on the
session's broker and staged bundle (``tests/conftest.py``: Stage 1, then Stage 2).

The head runs on free loopback ports with a temp dir this fixture owns and token auth off
(``RAY_AUTH_MODE=disabled``). ``ray stop`` would stop every Ray on the machine — other
sessions' included — so teardown ends exactly the processes this head started instead: those
in the session ``ray start`` ran in, plus their descendants (job drivers start their own
session under the job supervisor actor). Jobs go through ``ray job submit`` / ``ray job stop``
(the CLI a user runs); their status and logs are read over the head's HTTP job API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import REPO, job_test_settings, merge_sections, wait_until

from idproxy_stream.config import AppConfig

RAY_BIN = Path(sys.executable).parent / "ray"
HEAD_RESOURCES = {"cpu_node": 100, "encoder_node": 100}


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


# --------------------------------------------------------------------------- processes


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) for every process, read from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def session_processes(session_id: int) -> set[int]:
    """Live processes of ``session_id`` and all their descendants (in any session)."""
    table = _process_table()
    members = {pid for pid, (_, sid) in table.items() if sid == session_id}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in members} - members
        members |= children
        grew = bool(children)
    return {pid for pid in members if _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def end_processes(pids: set[int], grace_s: float = 2.0) -> None:
    """SIGTERM ``pids``, then SIGKILL what is still alive after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------- head


@dataclass
class RayHead:
    """A Ray head node started with ``ray start --head`` in its own session."""

    temp_dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    submitted: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=lambda: dict(HEAD_RESOURCES))

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    def start(self) -> RayHead:
        """Launch ``ray start --head`` (returns at once; :meth:`wait_ready` waits for it)."""
        command = [
            str(RAY_BIN),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.ports['gcs']}",
            f"--dashboard-port={self.ports['dashboard']}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--ray-client-server-port={self.ports['client']}",
            f"--node-manager-port={self.ports['node_manager']}",
            f"--object-manager-port={self.ports['object_manager']}",
            f"--metrics-export-port={self.ports['metrics']}",
            f"--dashboard-agent-listen-port={self.ports['agent_http']}",
            f"--dashboard-agent-grpc-port={self.ports['agent_grpc']}",
            f"--runtime-env-agent-port={self.ports['runtime_env']}",
            f"--temp-dir={self.temp_dir}",
            "--num-cpus=2",
            f"--resources={json.dumps(self.resources)}",
            "--disable-usage-stats",
        ]
        log = (self.temp_dir / "ray-start.log").open("wb")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> RayHead:
        """Block until ``ray start`` finished and the job API answers."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ray start took over {timeout_s} s") from None
        if code != 0:
            log = (self.temp_dir / "ray-start.log").read_text(errors="replace")
            raise AssertionError(f"ray start failed ({code}):\n{log[-3000:]}")
        client = self.client()
        wait_until(lambda: _answers(client), timeout_s, "the Ray job API")
        return self

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url)

    def ray_cli(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``ray ARGS`` against this head; fails the test on a non-zero exit."""
        done = subprocess.run(
            [str(RAY_BIN), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
        assert done.returncode == 0, f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def submit(
        self,
        entrypoint: list[str],
        env_vars: dict[str, str] | None = None,
        entrypoint_resources: dict[str, float] | None = None,
    ) -> str:
        """``ray job submit --no-wait --working-dir <repo>`` the entrypoint; returns its id."""
        self.wait_ready()
        submission_id = f"idproxy-test-{uuid.uuid4().hex[:8]}"
        runtime_env = {"env_vars": {"RAY_AUTH_MODE": "disabled", **(env_vars or {})}}
        args = [
            "job",
            "submit",
            f"--address={self.dashboard_url}",
            f"--submission-id={submission_id}",
            f"--working-dir={REPO}",
            f"--runtime-env-json={json.dumps(runtime_env)}",
            "--no-wait",
        ]
        if entrypoint_resources:
            args.append(f"--entrypoint-resources={json.dumps(entrypoint_resources)}")
        self.ray_cli(*args, "--", *entrypoint)
        self.submitted.append(submission_id)
        return submission_id

    def status(self, submission_id: str) -> str:
        return str(self.client().get_job_status(submission_id).value)

    def logs(self, submission_id: str) -> str:
        return self.client().get_job_logs(submission_id)

    def wait_for(self, submission_id: str, statuses: set[str], timeout_s: float) -> str:
        """Wait until the job reaches one of ``statuses``; its logs are in the failure."""
        terminal = {"SUCCEEDED", "FAILED", "STOPPED"}
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(submission_id)
            if status in statuses:
                return status
            if status in terminal or time.monotonic() > deadline:
                raise AssertionError(
                    f"job {submission_id} is {status}, expected {statuses}:\n"
                    f"{self.logs(submission_id)[-4000:]}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop this head's jobs, then end every process it started; remove its temp dir."""
        if self.process is not None and self.process.poll() is not None:
            client = self.client()
            for submission_id in self.submitted:
                try:
                    if self.status(submission_id) in ("PENDING", "RUNNING"):
                        client.stop_job(submission_id)
                except Exception:  # the head may be half-started
                    pass
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            end_processes(session_processes(self.process.pid))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


WORKER_NODE_PORTS = [
    "node_manager",
    "object_manager",
    "metrics",
    "agent_http",
    "agent_grpc",
    "runtime_env",
]


@dataclass
class RayWorkerNode:
    """A second Ray node on this machine: ``ray start --address=<head>`` with its own ports,
    temp dir and resources, in its own session (so its processes can be found and ended)."""

    head: RayHead
    resources: dict[str, float]
    num_cpus: int = 2
    temp_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="idp-rn-", dir="/tmp"))
    )
    process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> RayWorkerNode:
        """Start the node and wait until ``ray start`` has returned (the raylet runs)."""
        ports = dict(zip(WORKER_NODE_PORTS, free_ports(len(WORKER_NODE_PORTS)), strict=True))
        command = [
            str(RAY_BIN),
            "start",
            f"--address={self.head.gcs_address}",
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={ports['node_manager']}",
            f"--object-manager-port={ports['object_manager']}",
            f"--metrics-export-port={ports['metrics']}",
            f"--dashboard-agent-listen-port={ports['agent_http']}",
            f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--runtime-env-agent-port={ports['runtime_env']}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            f"--resources={json.dumps(self.resources)}",
            "--disable-usage-stats",
        ]
        log_path = self.temp_dir / "ray-start.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.head.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        code = self.process.wait(timeout=timeout_s)
        if code != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"ray start --address failed ({code}):\n{tail}")
        return self

    def processes(self) -> set[int]:
        assert self.process is not None
        return session_processes(self.process.pid)

    def raylet_pid(self) -> int:
        """The pid of this node's raylet."""
        for pid in self.processes():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if command.endswith(b"/raylet"):
                return pid
        raise AssertionError("the worker node has no raylet")

    def stop(self) -> None:
        """End every process of this node; remove its temp dir."""
        if self.process is not None:
            end_processes(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _answers(client) -> bool:
    try:
        client.list_jobs()
        return True
    except Exception:
        return False


def new_ray_head(
    resources: dict[str, float] | None = None, extra_env: dict[str, str] | None = None
) -> RayHead:
    """A 2-CPU head (not started) on free loopback ports with its own short temp dir;
    ``extra_env`` reaches its processes (Ray reads ``RAY_<setting>`` system settings there)."""
    # Unix socket paths live under the temp dir: keep it short (pytest's tmp paths are long).
    temp_dir = Path(tempfile.mkdtemp(prefix="idp-ray-", dir="/tmp"))
    names = ["gcs", "dashboard", "client", *WORKER_NODE_PORTS]  # a head has a node's ports too
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    env.pop("RAY_ADDRESS", None)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    return RayHead(temp_dir, ports, env, resources=dict(resources or HEAD_RESOURCES))


@pytest.fixture(scope="session")
def ray_head() -> RayHead:
    """A 2-CPU Ray head advertising ``cpu_node`` and ``encoder_node``; started in the
    background (tests wait for it with ``wait_ready``/``submit``), ended at session end."""
    head = new_ray_head()
    head.start()
    yield head
    head.stop()


# ------------------------------------------------------------------------- settings


@pytest.fixture
def job_settings(tmp_path, broker, staged_bundle) -> Callable[..., dict]:
    """Factory: raw config sections for one test (own topic, group, store) on the bundle."""

    def make(**sections) -> dict:
        raw = job_test_settings(
            broker.bootstrap_servers,
            staged_bundle.model_dir,
            tmp_path / "proxies.sqlite",
            stage2={"epochs": 2},
            extract={"output_path": str(staged_bundle.features_dir)},
            kafka={"ensure_topics": True, "topic_partitions": 2},
            stream={"drain_timeout_s": 30, "status_interval_s": 0.5},
            backfill={
                "num_workers": 2,
                "worker_num_cpus": 0.25,
                "sink_num_cpus": 0.1,
                "batch_size": 16,
                "idle_timeout_s": 10,
            },
            cluster={
                "source_resources": {"cpu_node": 0.01},
                "sink_resources": {"cpu_node": 0.01},
                "worker_resources": {"encoder_node": 0.01},
            },
        )
        return merge_sections(raw, sections)

    return make


def in_process_proxies(config: AppConfig, version: str, items) -> dict[int, np.ndarray]:
    """Item id -> proxy that a worker pinned to ``version`` computes here, for comparison."""
    from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings

    worker = ProxyWorker(WorkerSettings.of(config, model_version=version))
    batch = worker.encode(list(items))
    return {row.item_id: batch.proxies[i] for i, row in enumerate(batch.rows)}
