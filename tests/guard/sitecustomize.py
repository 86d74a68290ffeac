"""Loaded by every Python process the test suite starts (``tests/conftest.py`` puts this folder
on ``PYTHONPATH``): Ray workers, ``ray start`` nodes, CLI subprocesses and pytest itself.

It refuses TCP connections to the loopback ports named in ``IDPROXY_TEST_FORBIDDEN_PORTS``
(the default Redis port 6379), so a test that would silently use a Redis the machine happens
to run fails instead: the suite must only use the Redis server it starts itself.
"""

from __future__ import annotations

import os
import socket

LOOPBACK_NAMES = ("localhost", "::1", "0.0.0.0")


def _forbidden_ports() -> frozenset[int]:
    text = os.environ.get("IDPROXY_TEST_FORBIDDEN_PORTS", "")
    return frozenset(int(part) for part in text.split(",") if part.strip())


def _refuse(address: object, forbidden: frozenset[int]) -> None:
    if not (isinstance(address, tuple) and len(address) >= 2):
        return
    host, port = str(address[0]), address[1]
    if port in forbidden and (host.startswith("127.") or host in LOOPBACK_NAMES):
        raise ConnectionRefusedError(
            f"connection to {host}:{port} refused by the test guard: the tests must not use a "
            "service the machine runs there (tests/guard/sitecustomize.py)"
        )


def install_guard() -> None:
    """Patch ``socket.socket.connect``/``connect_ex`` in this process (idempotent)."""
    forbidden = _forbidden_ports()
    if not forbidden or getattr(socket.socket, "_idproxy_guarded", False):
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded_connect(self, address):
        _refuse(address, forbidden)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _refuse(address, forbidden)
        return connect_ex(self, address)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.socket._idproxy_guarded = True


install_guard()
