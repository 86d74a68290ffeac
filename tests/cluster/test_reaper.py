"""The local Ray's reaper: once the process that started it is gone, however it died, every
process of its Ray session is killed, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

from tests_helpers import wait_until

from idproxy_stream.cluster.reaper import session_processes
from tests.cluster.conftest import _alive, end_processes

HOLD_FILE = "import sys, time; held = open(sys.argv[1], 'a'); time.sleep(600)"
# Holds a session file, its path only in the environment: not a Ray command line (a test
# process that read one of Ray's logs, say).
HOLD_FROM_ENV = "import os, time; held = open(os.environ['HOLD'], 'a'); time.sleep(600)"
STARTER = """
import os, subprocess, sys, time
from idproxy_stream.cluster.reaper import start_reaper
session, hold, hold_from_env = sys.argv[1], sys.argv[2], sys.argv[3]
worker = subprocess.Popen([sys.executable, "-c", hold, session + "/logs/worker-1.out"])
driver = subprocess.Popen([sys.executable, "-c", hold, session + "/logs/python-core-driver-1.log"])
bystander = subprocess.Popen(
    [sys.executable, "-c", hold_from_env], env={**os.environ, "HOLD": session + "/logs/x.log"}
)
start_reaper(session)
print(worker.pid, driver.pid, bystander.pid, flush=True)
time.sleep(600)
"""


def test_the_reaper_kills_its_sessions_processes_when_its_starter_is_sigkilled(tmp_path):
    session = tmp_path / "session_1"
    (session / "logs").mkdir(parents=True)
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(session), HOLD_FILE, HOLD_FROM_ENV],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker, driver, bystander = map(int, starter.stdout.readline().split())
    try:
        # The worker holds a log of the session; the other driver's log marks it as a driver;
        # the bystander holds one too, but its command line is not Ray's.
        wait_until(lambda: _held_open(bystander, session), 30, "the bystander's file")
        wait_until(lambda: session_processes(str(session)) == {worker}, 30, "the worker's log")
        assert _alive(worker) and _alive(driver)  # nothing is reaped while the starter lives
        starter.kill()
        starter.wait(timeout=30)
        wait_until(lambda: not _alive(worker), 10, "the reaper to kill the session's worker")
        assert _alive(driver), "a driver connected to the session is not the reaper's to kill"
        assert _alive(bystander), "a process that is not Ray's is not the reaper's to kill"
    finally:
        starter.kill()
        end_processes({worker, driver, bystander})


def _held_open(pid: int, session) -> bool:
    """Whether ``pid`` has a file open under ``session`` (so only its command line spares it)."""
    fds = os.listdir(f"/proc/{pid}/fd")
    return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(session)) for fd in fds)
