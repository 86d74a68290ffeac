"""kafka-python clients built from :class:`KafkaConfig`: consumer, producer, admin.

The consumer never auto-commits: the source commits offsets itself once the rows they cover
are durable. Producers wait for all in-sync replicas (``acks="all"``) because a dead letter or
an output record counts as handled only once the broker has it. SASL credentials come from the
environment variables the config names, never from the config itself.
"""

from __future__ import annotations

import warnings
from typing import Any

from idproxy_stream.config import KafkaConfig, resolve_secret

# kafka-python emits many DeprecationWarnings on import under Python 3.11.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


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


def make_consumer(config: KafkaConfig, client_suffix: str = "source") -> KafkaConsumer:
    """A group consumer with manual commits (call ``subscribe`` with a listener yourself)."""
    return KafkaConsumer(
        group_id=config.group_id,
        enable_auto_commit=False,
        auto_offset_reset=config.auto_offset_reset,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        max_poll_interval_ms=config.max_poll_interval_ms,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        max_poll_records=config.max_poll_records,
        check_crcs=config.check_crcs,
        **common_settings(config, client_suffix),
    )


def make_producer(
    config: KafkaConfig, client_suffix: str = "producer", one_record_per_batch: bool = False
) -> KafkaProducer:
    """A producer that waits for all replicas.

    ``one_record_per_batch`` sends every record in its own produce batch (slower). Use it
    against the embedded tansu broker when exact end offsets matter: tansu reports a
    partition's end as the last *batch's* base offset + 1 (measured; see ENV_NOTES).
    """
    batching: dict[str, Any] = {"linger_ms": config.producer_linger_ms}
    if one_record_per_batch:
        batching = {"linger_ms": 0, "batch_size": 1}
    return KafkaProducer(
        acks="all",
        max_request_size=max(config.max_event_bytes * 2, 1_048_576),
        **batching,
        **common_settings(config, client_suffix),
    )


def make_admin(config: KafkaConfig) -> KafkaAdminClient:
    return KafkaAdminClient(**common_settings(config, "admin"))
