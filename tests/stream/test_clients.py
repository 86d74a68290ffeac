"""kafka-python clients from config: pass-through settings reach the clients, mistakes are named."""

from __future__ import annotations

import pytest

from idproxy_stream.config import ConfigError, KafkaConfig
from idproxy_stream.stream.clients import (
    admin_settings,
    consumer_settings,
    make_consumer,
    make_producer,
    producer_settings,
)


class TokenProvider:
    """Stands in for a kafka-python AbstractTokenProvider (OAUTHBEARER)."""

    def token(self) -> str:
        return "token"


def make_token_provider() -> TokenProvider:
    return TokenProvider()


def test_extra_settings_pass_through_to_each_kind_of_client() -> None:
    config = KafkaConfig(
        consumer_extra={"fetch_max_bytes": 12_345, "ssl_certfile": "/etc/kafka/client.pem"},
        producer_extra={"compression_type": "gzip", "ssl_certfile": "/etc/kafka/client.pem"},
    )
    consumer = consumer_settings(config)
    assert (consumer["fetch_max_bytes"], consumer["ssl_certfile"]) == (
        12_345,
        "/etc/kafka/client.pem",
    )
    assert producer_settings(config)["compression_type"] == "gzip"
    admin = admin_settings(config)
    assert admin["ssl_certfile"] == "/etc/kafka/client.pem"
    assert "fetch_max_bytes" not in admin  # a consumer-only setting stays with the consumer


def test_a_secret_comes_from_the_env_var_an_env_key_names(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_KEY_PASSWORD", "s3cret")
    config = KafkaConfig(consumer_extra={"ssl_password_env": "KAFKA_KEY_PASSWORD"})
    assert consumer_settings(config)["ssl_password"] == "s3cret"
    with pytest.raises(
        ConfigError, match=r"kafka.consumer_extra.ssl_password: a secret .*\.ssl_password_env"
    ):
        consumer_settings(KafkaConfig(consumer_extra={"ssl_password": "s3cret"}))


def test_an_oauth_token_provider_is_named_by_module_and_callable() -> None:
    path = f"{__name__}:make_token_provider"
    config = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        consumer_extra={"sasl_oauth_token_provider": path},
    )
    assert isinstance(consumer_settings(config)["sasl_oauth_token_provider"], TokenProvider)
    broken = KafkaConfig(consumer_extra={"sasl_oauth_token_provider": "no.such.module:f"})
    with pytest.raises(ConfigError, match="sasl_oauth_token_provider: cannot import"):
        consumer_settings(broken)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"fetch_max_byte": 1},
            r"kafka.consumer_extra.fetch_max_byte: KafkaConsumer has no setting",
        ),
        (
            {"group_id": "other"},
            r"kafka.consumer_extra.group_id: group_id is already set from kafka",
        ),
        ({"enable_auto_commit": True}, r"idproxy fixes enable_auto_commit \(offsets are committed"),
    ],
)
def test_a_setting_the_consumer_cannot_take_is_named(extra, message) -> None:
    with pytest.raises(ConfigError, match=message):
        consumer_settings(KafkaConfig(consumer_extra=extra))


def test_the_producer_keeps_acks_all_whatever_the_config_says() -> None:
    with pytest.raises(ConfigError, match=r"kafka.producer_extra.acks: idproxy fixes acks"):
        producer_settings(KafkaConfig(producer_extra={"acks": 1}))


def test_real_clients_take_the_pass_through_settings(broker) -> None:
    config = KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers,
        consumer_extra={"fetch_max_bytes": 4_000_000, "receive_buffer_bytes": 65_536},
        producer_extra={"compression_type": "gzip"},
    )
    consumer = make_consumer(config)
    producer = make_producer(config)
    try:
        assert consumer.config["fetch_max_bytes"] == 4_000_000
        assert consumer.config["receive_buffer_bytes"] == 65_536
        assert producer.config["compression_type"] == "gzip"
    finally:
        consumer.close()
        producer.close()
