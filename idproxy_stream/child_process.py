"""Stopping a child process the package (or its tests) started: SIGTERM, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def stop_child(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM ``process`` (SIGCONT first, in case it is frozen), SIGKILL it if it lingers
    past ``timeout_s``, and reap it. A process that already exited is only reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
