"""kafka-python clients from config: pass-through settings reach the clients, mistakes are named."""

from __future__ import annotations

import warnings

import pytest

from idproxy_stream.config import ConfigError, KafkaConfig
from idproxy_stream.events import DeadLetter, DeadLetterReason
from idproxy_stream.stream.clients import (
    admin_settings,
    consumer_settings,
    dead_letter_record_bytes,
    dead_letter_request_bytes,
    make_consumer,
    make_dead_letter_producer,
    make_producer,
    producer_settings,
)
from idproxy_stream.stream.ledger import HeldRecord
from idproxy_stream.stream.messages import Rejection
from idproxy_stream.stream.offsets import Ticket
from idproxy_stream.stream.outbox import dead_letter_for, dead_letter_key
from idproxy_stream.stream.topics import ensure_topics, read_topic

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.errors import MessageSizeTooLargeError


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


def largest_dead_letter(config: KafkaConfig) -> tuple[bytes, bytes]:
    """(key, value) of the largest dead-letter record the source can build for ``config``: a
    record whose key and value exceed the prefix, a message of escaped control characters,
    the longest reason and model version, int64 extremes."""
    held = HeldRecord(
        Ticket(2**31 - 1, 2**63 - 1, 0),
        key=b"k" * (config.dead_letter_value_bytes + 10),
        value=b"v" * (config.dead_letter_value_bytes + 10),
        timestamp_ms=-(2**63),
        item_id=-(2**63),
    )
    reason = max(DeadLetterReason, key=len)
    rejection = Rejection(2**31 - 1, 2**63 - 1, None, reason, "\x01" * 5_000, "worker")
    prefix = config.dead_letter_value_bytes
    letter = dead_letter_for(held, rejection, config.topic, "v" * 128, prefix)
    return dead_letter_key(held.key, prefix), letter.to_json_bytes()


@pytest.mark.parametrize("prefix_bytes", [0, 4_096, 200_000])
def test_the_dead_letter_producer_is_sized_for_the_largest_letter_not_the_event_limit(
    prefix_bytes, broker
) -> None:
    """The request size covers the largest letter the outbox can build (with its key) for the
    configured prefix, whatever kafka.max_event_bytes says, and the real broker takes it."""
    topic = "t" * 200
    config = KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topic=topic,
        dead_letter_topic=f"dlq-{prefix_bytes}",
        dead_letter_value_bytes=prefix_bytes,
        max_event_bytes=40_000_000,  # the event limit no longer sizes the letters' producer
    )
    key, value = largest_dead_letter(config)
    assert len(value) <= DeadLetter.max_json_bytes(topic, prefix_bytes)
    limit = dead_letter_request_bytes(config)
    assert limit == dead_letter_record_bytes(config) < 1_048_588
    assert producer_settings(config)["max_request_size"] == 80_000_000  # events: unchanged
    ensure_topics(config, [config.dead_letter_topic], 1)
    producer = make_dead_letter_producer(config)
    try:
        assert producer.config["max_request_size"] == limit
        assert producer._estimate_size_in_bytes(key, value) <= limit
        producer.send(config.dead_letter_topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()
    [(_, _, read_key, read_value)] = read_topic(config, config.dead_letter_topic)
    assert (read_key, read_value) == (key, value)
    assert DeadLetter.from_json_bytes(read_value).value_truncated


def test_a_letter_over_kafkas_default_message_limit_is_refused_by_the_producer(broker) -> None:
    """A prefix over ~280 kB builds letters a broker left at its defaults would refuse: the
    producer refuses them at once (the source then gives them up, test_outbox.py)."""
    config = KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers, dead_letter_value_bytes=1_000_000
    )
    key, value = largest_dead_letter(config)
    assert dead_letter_record_bytes(config) > 1_048_588 == dead_letter_request_bytes(config)
    producer = make_dead_letter_producer(config)
    try:
        with pytest.raises(MessageSizeTooLargeError):  # before anything is sent
            producer.send(config.dead_letter_topic, key=key, value=value)
    finally:
        producer.close()
