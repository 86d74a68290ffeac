"""Topic set-up and inspection: create topics, read end and committed offsets, read a topic.

Used at start-up (``kafka.ensure_topics``), by ``idproxy publish``, the demo, tests and
benchmarks. Production topics are usually created by the platform (see ``deploy/``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable

from idproxy_stream.config import KafkaConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.stream.clients import common_settings, make_admin, with_extra_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)

REACHABLE_TIMEOUT_MS = 5_000  # a broker that is up answers a bootstrap in milliseconds


class KafkaUnavailableError(IdProxyError, RuntimeError):
    """No broker answers at ``kafka.bootstrap_servers``, or a topic the job needs is missing."""


def check_kafka_reachable(
    config: KafkaConfig, topics: Iterable[str] = (), timeout_ms: int = REACHABLE_TIMEOUT_MS
) -> None:
    """Raise :class:`KafkaUnavailableError` unless a broker answers within ``timeout_ms``.

    ``topics``: each must exist (the message names the setting that names it).
    """
    try:
        admin = make_admin(config, bootstrap_timeout_ms=timeout_ms)
    except KafkaError as error:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at kafka.bootstrap_servers={config.bootstrap_servers} "
            f"({type(error).__name__} within {timeout_ms / 1000:g} s): start the broker "
            "(`idproxy broker` runs a local one) or fix kafka.bootstrap_servers"
        ) from None
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    settings = {
        config.topic: "kafka.topic",
        config.dead_letter_topic: "kafka.dead_letter_topic",
        config.output_topic: "kafka.output_topic",
    }
    for topic in topics:
        if topic not in existing:
            raise KafkaUnavailableError(
                f"topic {topic!r} ({settings.get(topic, 'topic')}) does not exist on "
                f"{config.bootstrap_servers}: create it (deploy/create_topics.py) or set "
                "kafka.ensure_topics: true"
            )


def ensure_topics(config: KafkaConfig, topics: Iterable[str], partitions: int) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = make_admin(config)
    try:
        existing = set(admin.list_topics())
        missing = [topic for topic in dict.fromkeys(topics) if topic not in existing]
        if missing:
            try:
                settings = {"num_partitions": partitions, "replication_factor": 1}
                admin.create_topics({name: settings for name in missing})
            except TopicAlreadyExistsError:
                logger.info("topics %s were created concurrently", missing)
            logger.info("created topics %s with %d partitions", missing, partitions)
        return missing
    finally:
        admin.close()


def stream_topics(config: KafkaConfig) -> list[str]:
    """The topics a stream job uses: input, dead letters and (when set) output."""
    topics = [config.topic, config.dead_letter_topic]
    return [*topics, config.output_topic] if config.output_topic else topics


def _plain_consumer(config: KafkaConfig, group_id: str | None = None) -> KafkaConsumer:
    settings = {
        **common_settings(config, "reader"),
        "group_id": group_id,
        "enable_auto_commit": False,
    }
    return KafkaConsumer(
        **with_extra_settings(
            settings, config.consumer_extra, KafkaConsumer, "kafka.consumer_extra"
        )
    )


def topic_partitions(config: KafkaConfig, topic: str) -> list[TopicPartition]:
    """The topic's partitions (waits briefly for metadata of a just-created topic)."""
    consumer = _plain_consumer(config)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return [TopicPartition(topic, p) for p in sorted(partitions)]
            if time.monotonic() > deadline:
                raise ValueError(f"topic {topic!r} does not exist on {config.bootstrap_servers}")
            time.sleep(0.1)
    finally:
        consumer.close()


def end_offsets(config: KafkaConfig, topic: str) -> dict[int, int]:
    """Partition -> the broker's end offset (offset of the next record to be written)."""
    partitions = topic_partitions(config, topic)
    consumer = _plain_consumer(config)
    try:
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(
    config: KafkaConfig, topic: str, group_id: str | None = None
) -> dict[int, int]:
    """Partition -> the group's committed offset (partitions without a commit are absent)."""
    group = group_id or config.group_id
    admin = make_admin(config)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset is not None and meta.offset >= 0
    }


def read_topic(
    config: KafkaConfig, topic: str, idle_timeout_s: float = 1.0
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` as ``(partition, offset, key, value)``, read without a group.

    Reads at least to each partition's end offset as the broker reported it when called, then
    until no record arrived for ``idle_timeout_s`` (tansu under-reports the end of a partition
    written in multi-record batches, so the end offset alone is not trusted).
    """
    partitions = topic_partitions(config, topic)
    consumer = _plain_consumer(config)
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
        positions = {tp.partition: 0 for tp in partitions}
        records: list[tuple[int, int, bytes | None, bytes | None]] = []
        last_record = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=100)
            for tp, messages in batch.items():
                for message in messages:
                    records.append((tp.partition, message.offset, message.key, message.value))
                    positions[tp.partition] = message.offset + 1
            if batch:
                last_record = time.monotonic()
            reached_ends = all(positions[p] >= ends[p] for p in ends)
            if reached_ends and time.monotonic() - last_record > idle_timeout_s:
                return records
    finally:
        consumer.close()
