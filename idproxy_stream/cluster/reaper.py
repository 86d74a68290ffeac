"""Ends a private local Ray with the process that started it, however that process dies.

Ray 2.60 ties its GCS and raylet to the driver that started them (the kernel kills them when
the driver dies), and workers follow their raylet within a second or two; but the dashboard
and runtime-env agents outlive a SIGKILLed driver indefinitely (their raylet check then blocks
reporting to the dead GCS; measured: still alive 40 s later, every crash leaking two
processes). :func:`start_reaper` starts ``python -m idproxy_stream.cluster.reaper SESSION_DIR``
beside the driver, reading a pipe whose other end only the driver holds. When the driver is
gone the pipe reads end-of-file, and the reaper SIGKILLs every process of that Ray session:
those with a file open under the session directory (every Ray process writes its logs there)
whose command line is Ray's (a ``ray::`` process title, or the session's path among its
arguments, as GCS, raylet and agents have), except drivers (a ``python-core-driver-*`` log).
Whoever else connected to it, or still holds one of its files, is left alone.

The reaper imports nothing beyond the standard library, ignores SIGINT and SIGTERM (a Ctrl-C
or a process-group SIGTERM reaches it too; it must outlive the driver to clean up), and exits
once no process of the session is left (or after ``REAP_DEADLINE_S``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

REAP_DEADLINE_S = 10.0
DRIVER_LOG_PREFIX = "python-core-driver-"
RAY_TITLE = "ray::"


def start_reaper(session_dir: str) -> subprocess.Popen:
    """Start the reaper of the Ray session in ``session_dir``.

    Its stdin is a pipe whose write end stays open in this process, on purpose, until it
    exits (a file descriptor, not a file object, so nothing closes it early); the descriptor
    is not inherited by later children, so only this process's end closes the pipe.
    """
    read_end, write_end = os.pipe()
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "idproxy_stream.cluster.reaper", session_dir],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)


def session_processes(session_dir: str) -> set[int]:
    """Pids of live processes (other than this one) of the Ray session in ``session_dir``: a
    file open under it and a Ray command line (:func:`is_ray_command`), drivers excluded."""
    real_dir = os.path.realpath(session_dir).rstrip("/")
    prefix = real_dir + "/"
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            targets = [
                os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")
            ]
            with open(f"/proc/{name}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        inside = [target for target in targets if target.startswith(prefix)]
        if (
            inside
            and not any(DRIVER_LOG_PREFIX in target for target in inside)
            and is_ray_command(cmdline, {session_dir.rstrip("/"), real_dir})
        ):
            found.add(int(name))
    return found


def is_ray_command(cmdline: str, session_paths: set[str]) -> bool:
    """Whether a command line (arguments joined by spaces) is one of a Ray session's processes:
    a worker's ``ray::`` title, or the session directory (or its name) among the arguments."""
    if RAY_TITLE in cmdline:
        return True
    names = {os.path.basename(path) for path in session_paths}
    return any(marker in cmdline for marker in session_paths | names if marker)


def reap(session_dir: str, deadline_s: float = REAP_DEADLINE_S) -> None:
    """SIGKILL the session's processes until none is left or ``deadline_s`` passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        pids = session_processes(session_dir)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)  # let the kernel tear them down before looking again


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    session_dir = sys.argv[1]
    while sys.stdin.buffer.read(4096):  # the driver never writes: this returns at its end
        pass
    reap(session_dir)


if __name__ == "__main__":
    main()
