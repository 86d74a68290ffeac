"""kafka-python clients built from :class:`KafkaConfig`: consumer, producer, admin.

The consumer never auto-commits: the source commits offsets itself once the rows they cover
are durable. Producers wait for all in-sync replicas (``acks="all"``) because a dead letter or
an output record counts as handled only once the broker has it. SASL credentials come from the
environment variables the config names, never from the config itself.

Every other kafka-python setting passes through ``kafka.consumer_extra`` /
``kafka.producer_extra`` (the admin client takes the ``consumer_extra`` keys it knows, so the
same TLS files reach it). A key ending in ``_env`` names the environment variable that holds
the value; ``sasl_oauth_token_provider`` may name a ``module:callable`` that returns the
token provider kafka-python's OAUTHBEARER needs.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

from idproxy_stream.config import ConfigError, KafkaConfig, resolve_secret
from idproxy_stream.events import DeadLetter

# kafka-python emits many DeprecationWarnings on import under Python 3.11.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.record.legacy_records import LegacyRecordBatchBuilder

# Kafka's default broker limit on a record batch (``message.max.bytes``, which a topic's
# ``max.message.bytes`` inherits): a dead letter over it would be refused by such a broker.
KAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_048_588
# Settings that are secrets: given literally in a config they would be stored with it.
SECRET_SETTINGS = frozenset({"sasl_plain_password", "ssl_password", "sasl_oauth_token"})
# Settings the stream's delivery guarantees rest on, whatever the config says.
FIXED_SETTINGS = {
    "enable_auto_commit": "offsets are committed only once their rows are durable",
    "acks": "a record counts as sent only once every in-sync replica has it",
}


def security_settings(config: KafkaConfig) -> dict[str, Any]:
    """Connection security keyword arguments shared by every client."""
    settings: dict[str, Any] = {"security_protocol": config.security_protocol}
    if config.sasl_mechanism is not None:
        settings["sasl_mechanism"] = config.sasl_mechanism
        settings["sasl_plain_username"] = resolve_secret(config.sasl_username_env)
        settings["sasl_plain_password"] = resolve_secret(config.sasl_password_env)
    if config.ssl_cafile is not None:
        settings["ssl_cafile"] = str(config.ssl_cafile)
    return settings


def common_settings(config: KafkaConfig, client_suffix: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": config.bootstrap_servers.split(","),
        "client_id": f"{config.client_id}-{client_suffix}",
        "request_timeout_ms": config.request_timeout_ms,
        **security_settings(config),
    }


def _token_provider(path: str, setting: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"{setting}: cannot import {path!r}; name a module:callable that returns a "
            "kafka-python AbstractTokenProvider"
        ) from None
    return factory()


def with_extra_settings(
    settings: dict[str, Any], extra: Mapping[str, Any], client: type, section: str
) -> dict[str, Any]:
    """``settings`` plus the pass-through ``extra`` ones for ``client`` (its DEFAULT_CONFIG).

    Raises :class:`ConfigError` naming ``section.<key>`` for a key the client does not know,
    one the config already sets by a named setting, a delivery setting idproxy fixes, or a
    secret given literally instead of through ``<key>_env``.
    """
    merged = dict(settings)
    for key, value in extra.items():
        setting = f"{section}.{key}"
        name = key.removesuffix("_env") if key.endswith("_env") else key
        if name != key:
            value = resolve_secret(str(value))
        elif name in SECRET_SETTINGS:
            raise ConfigError(
                f"{setting}: a secret must not be written in the config; put it in an "
                f"environment variable and name that with {setting}_env"
            )
        if name not in client.DEFAULT_CONFIG:
            raise ConfigError(
                f"{setting}: {client.__name__} has no setting {name!r}; check its spelling "
                "against kafka-python's documentation"
            )
        if name in FIXED_SETTINGS:
            raise ConfigError(f"{setting}: idproxy fixes {name} ({FIXED_SETTINGS[name]})")
        if name in settings:
            raise ConfigError(
                f"{setting}: {name} is already set from kafka.* ({settings[name]!r}); "
                "change the named kafka setting instead"
            )
        if name == "sasl_oauth_token_provider" and isinstance(value, str):
            value = _token_provider(value, setting)
        merged[name] = value
    return merged


def consumer_settings(
    config: KafkaConfig, client_suffix: str = "source", **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments of the stream's group consumer (manual commits)."""
    settings = {
        "group_id": config.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": config.auto_offset_reset,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "max_poll_interval_ms": config.max_poll_interval_ms,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        "max_poll_records": config.max_poll_records,
        "check_crcs": config.check_crcs,
        **common_settings(config, client_suffix),
        **overrides,
    }
    return with_extra_settings(
        settings, config.consumer_extra, KafkaConsumer, "kafka.consumer_extra"
    )


def dead_letter_record_bytes(config: KafkaConfig) -> int:
    """The serialized size of the largest dead-letter record the source can send: the
    largest letter (:meth:`DeadLetter.max_json_bytes` for ``kafka.topic`` and
    ``kafka.dead_letter_value_bytes``) as the value, a key of at most
    ``dead_letter_value_bytes`` (``outbox.dead_letter_key``), in the record format with the
    most overhead kafka-python may use (v2, or v1 wrapped for compression)."""
    prefix = config.dead_letter_value_bytes
    key, value = bytes(prefix), bytes(DeadLetter.max_json_bytes(config.topic, prefix))
    return max(
        DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []),
        LegacyRecordBatchBuilder.estimate_size_in_bytes(1, "gzip", key, value),
    )


def dead_letter_request_bytes(config: KafkaConfig) -> int:
    """``max_request_size`` of the dead-letter producer: what its largest record needs
    (:func:`dead_letter_record_bytes`, about 22 kB with the default 4 KiB prefix), never more
    than Kafka's default broker limit (:data:`KAFKA_DEFAULT_MESSAGE_MAX_BYTES`). A letter over
    that (a prefix over about 280 kB) is refused at once and given up, as such a broker would
    refuse it."""
    return min(dead_letter_record_bytes(config), KAFKA_DEFAULT_MESSAGE_MAX_BYTES)


def producer_settings(
    config: KafkaConfig,
    client_suffix: str = "producer",
    one_record_per_batch: bool = False,
    max_request_size: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a producer that waits for all replicas.

    ``one_record_per_batch`` sends every record in its own produce batch (slower). Use it
    against the embedded tansu broker when exact end offsets matter: tansu reports a
    partition's end as the last *batch's* base offset + 1 (measured; see ENV_NOTES).
    ``max_request_size`` defaults to what an event of ``kafka.max_event_bytes`` needs.
    """
    batching: dict[str, Any] = {"linger_ms": config.producer_linger_ms}
    if one_record_per_batch:
        batching = {"linger_ms": 0, "batch_size": 1}
    if max_request_size is None:
        max_request_size = max(config.max_event_bytes * 2, 1_048_576)
    settings = {
        "acks": "all",
        "max_request_size": max_request_size,
        **batching,
        **common_settings(config, client_suffix),
    }
    return with_extra_settings(
        settings, config.producer_extra, KafkaProducer, "kafka.producer_extra"
    )


def admin_settings(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of an admin client: the ``consumer_extra`` keys an admin knows."""
    known = {
        key: value
        for key, value in config.consumer_extra.items()
        if key.removesuffix("_env") in KafkaAdminClient.DEFAULT_CONFIG
    }
    settings = {**common_settings(config, "admin"), **overrides}
    return with_extra_settings(settings, known, KafkaAdminClient, "kafka.consumer_extra")


def make_consumer(config: KafkaConfig, client_suffix: str = "source") -> KafkaConsumer:
    """A group consumer with manual commits (call ``subscribe`` with a listener yourself)."""
    return KafkaConsumer(**consumer_settings(config, client_suffix))


def make_producer(
    config: KafkaConfig, client_suffix: str = "producer", one_record_per_batch: bool = False
) -> KafkaProducer:
    """A producer that waits for all replicas (see :func:`producer_settings`)."""
    return KafkaProducer(**producer_settings(config, client_suffix, one_record_per_batch))


def make_dead_letter_producer(config: KafkaConfig, client_suffix: str = "dlq") -> KafkaProducer:
    """The source's dead-letter producer, sized from the letters it sends
    (:func:`dead_letter_request_bytes`), not from ``kafka.max_event_bytes``."""
    settings = producer_settings(
        config, client_suffix, max_request_size=dead_letter_request_bytes(config)
    )
    return KafkaProducer(**settings)


def make_admin(config: KafkaConfig, **overrides: Any) -> KafkaAdminClient:
    """An admin client; ``overrides`` are kafka-python settings (``bootstrap_timeout_ms``)."""
    return KafkaAdminClient(**admin_settings(config, **overrides))
