"""A local Ray started the way the jobs start one (``cluster/local_ray.py: ensure_ray``) listens
on loopback only: every TCP socket any of its processes listens on — GCS, raylet, object
manager, core workers (driver and actor), dashboard and runtime-env agents — is bound to a
loopback address, read from ``/proc`` while an actor runs."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc"
)

START_LOCAL_RAY = textwrap.dedent(
    """
    import os, sys
    import ray
    from idproxy_stream.cluster.local_ray import ensure_ray
    from idproxy_stream.config import RayConfig

    assert ensure_ray(RayConfig(num_cpus=1, temp_dir=sys.argv[1]))

    @ray.remote(num_cpus=0.1)
    class Probe:
        def pid(self):
            return os.getpid()

    probe = Probe.remote()
    print(ray.get(probe.pid.remote()), flush=True)  # the actor's core worker is up
    sys.stdin.read()  # hold Ray up until the test has looked
    ray.shutdown()
    """
)


def process_tree(root: int) -> set[int]:
    """``root`` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket on the machine."""
    listening = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)  # host-order 32-bit words
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            listening[int(fields[9])] = (socket.inet_ntop(family, packed), int(port, 16))
    return listening


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_address_parsing_tells_loopback_from_every_interface() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")


def test_a_local_ray_started_by_the_jobs_listens_on_loopback_only() -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit 107 bytes
    driver = subprocess.Popen(
        [sys.executable, "-c", START_LOCAL_RAY, temp_dir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        actor_pid = int(driver.stdout.readline())
        tree = process_tree(driver.pid)
        listening = listening_sockets()
        bound = {
            (pid, *listening[inode])
            for pid in tree
            for inode in socket_inodes(pid)
            if inode in listening
        }
    finally:
        driver.stdin.close()
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert actor_pid in tree
    listeners = {pid for pid, _, _ in bound}
    assert driver.pid in listeners and actor_pid in listeners  # core workers found
    assert len(bound) >= 5, bound  # GCS, raylet, workers, agents: the scan saw them
    wide = sorted((pid, address, port) for pid, address, port in bound if not is_loopback(address))
    assert not wide, f"listening beyond loopback: {wide}"
