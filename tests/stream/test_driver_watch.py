"""A source's view of its driver's process: alive while it runs, gone once it ended (a zombie
counts as ended), and a reused pid is not mistaken for it."""

from __future__ import annotations

import os
import subprocess
import sys

from idproxy_stream.stream.driver_watch import DriverWatch, process_start_ticks


def test_a_driver_is_gone_once_its_process_ends_and_a_reused_pid_is_not_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        ticks = process_start_ticks(child.pid)
        assert ticks is not None
        watch = DriverWatch(node_id="node-a", pid=child.pid, start_ticks=ticks)
        assert not watch.driver_gone()
        assert watch.watchable_from("node-a") and not watch.watchable_from("node-b")
        reused = DriverWatch(node_id="node-a", pid=child.pid, start_ticks=ticks + 1)
        assert reused.driver_gone()  # same pid, another process
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped: Z
        assert watch.driver_gone()
    finally:
        child.kill()
        child.wait()
    assert watch.driver_gone()
