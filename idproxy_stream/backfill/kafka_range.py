"""Backfill a Kafka offset range: re-read ``[start, end)`` of each partition and recompute.

The range is read with a plain kafka-python consumer (no group, no commits: the stream's
offsets are untouched) that is assigned the partitions, seeks to the start offsets and stops
each partition at its end offset. Records that do not decode are counted by reason (the
stream dead-lettered them when they arrived).

Why not Ray Data's ``read_kafka``: it is bounded too, but it caps the end of each partition
at the end offset the broker reports, and the embedded ``tansu`` broker reports the base
offset of a partition's last *batch* + 1 — on a topic written by a batching producer it
returned 1,204 of 2,000 records, also with explicit end offsets (measured; see
``docs/cluster.md``). kafka-python reads every record up to the end offsets asked for. With
``end="latest"`` the end offsets are those the broker reports when the backfill starts: exact
on Kafka, short on tansu after batched produces — pass explicit end offsets there.

Offsets are written ``earliest``, ``latest`` or ``PARTITION:OFFSET,...`` (e.g. ``0:120,1:95``).
A start mapping starts unlisted partitions at their earliest offset; an end mapping reads only
the partitions it lists.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from idproxy_stream.backfill.runner import BackfillError, BackfillReport, run_backfill
from idproxy_stream.config import AppConfig, KafkaConfig
from idproxy_stream.events import InvalidEventError, decode_new_item_event
from idproxy_stream.stream.clients import common_settings, with_extra_settings
from idproxy_stream.stream.messages import Rejection, WorkItem
from idproxy_stream.stream.topics import check_kafka_reachable, topic_partitions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, TopicPartition

logger = logging.getLogger(__name__)

OffsetSpec = Literal["earliest", "latest"] | dict[int, int]
Record = tuple[int, int, bytes | None, bytes | None]  # partition, offset, key, value


def parse_offsets(text: str) -> OffsetSpec:
    """``"earliest"``, ``"latest"`` or ``"0:120,1:95"`` -> the spec; ValueError says the form."""
    cleaned = text.strip()
    if cleaned in ("earliest", "latest"):
        return cleaned  # type: ignore[return-value]
    offsets: dict[int, int] = {}
    for part in cleaned.split(","):
        partition, sep, offset = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError(part)
            offsets[int(partition)] = int(offset)
        except ValueError:
            raise ValueError(
                f"offsets {text!r}: write earliest, latest or PARTITION:OFFSET pairs separated "
                "by commas, e.g. 0:120,1:95"
            ) from None
    if any(partition < 0 or offset < 0 for partition, offset in offsets.items()):
        raise ValueError(f"offsets {text!r}: partitions and offsets must be >= 0")
    return offsets


@dataclass(frozen=True)
class OffsetRange:
    """``[start[p], end[p])`` for each partition ``p`` of ``topic`` that is read."""

    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def size(self) -> int:
        """Offsets in the range (records, when the partitions have no gaps)."""
        return sum(max(0, self.end[p] - self.start[p]) for p in self.end)

    def describe(self) -> str:
        """``kafka:topic[0:10-20,1:0-5]``, for logs and reports."""
        parts = ",".join(f"{p}:{self.start[p]}-{self.end[p]}" for p in sorted(self.end))
        return f"kafka:{self.topic}[{parts}]"


def _consumer(config: KafkaConfig) -> KafkaConsumer:
    settings = with_extra_settings(
        {
            **common_settings(config, "backfill"),
            "group_id": None,
            "enable_auto_commit": False,
            "fetch_max_wait_ms": config.fetch_max_wait_ms,
            "max_poll_records": config.max_poll_records,
        },
        config.consumer_extra,
        KafkaConsumer,
        "kafka.consumer_extra",
    )
    settings.setdefault("max_partition_fetch_bytes", max(config.max_event_bytes * 2, 1_048_576))
    return KafkaConsumer(**settings)


def resolve_range(
    config: KafkaConfig, topic: str, start: OffsetSpec, end: OffsetSpec
) -> OffsetRange:
    """Turn start/end specs into offsets, checked against the broker's partitions and log start.

    Raises :class:`BackfillError` for an unknown partition, a start before the log's first
    retained offset, or a start after the end.
    """
    partitions = [tp.partition for tp in topic_partitions(config, topic)]
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = _consumer(config)
    try:
        first = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
        last = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()
    for spec in (start, end):
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - set(partitions))
            if unknown:
                raise BackfillError(
                    f"topic {topic} has partitions {partitions}, not {unknown}: fix the offsets"
                )
    starts = dict(first) if start in ("earliest", "latest") else {**first, **start}
    if start == "latest":
        starts = dict(last)
    ends = dict(last) if end == "latest" else dict(first) if end == "earliest" else dict(end)
    for partition, offset in ends.items():
        if starts[partition] < first[partition]:
            raise BackfillError(
                f"partition {partition} of {topic} starts at offset {first[partition]} (older "
                f"records were deleted), so it cannot be read from {starts[partition]}"
            )
        if starts[partition] > offset:
            raise BackfillError(
                f"partition {partition} of {topic}: start {starts[partition]} is after end "
                f"{offset}; the end offset is exclusive"
            )
    return OffsetRange(topic, {p: starts[p] for p in ends}, ends)


def read_range(
    config: KafkaConfig, offset_range: OffsetRange, idle_timeout_s: float
) -> Iterator[Record]:
    """Every record of the range, in offset order per partition.

    Raises :class:`BackfillError` when no record arrives for ``idle_timeout_s`` while some
    partition has not reached its end (the range reaches past the log).
    """
    remaining = {p for p in offset_range.end if offset_range.end[p] > offset_range.start[p]}
    if not remaining:
        return
    consumer = _consumer(config)
    tps = {p: TopicPartition(offset_range.topic, p) for p in remaining}
    try:
        consumer.assign(list(tps.values()))
        for partition, tp in tps.items():
            consumer.seek(tp, offset_range.start[partition])
        last_progress = time.monotonic()
        while remaining:
            polled = consumer.poll(timeout_ms=200)
            for tp, messages in polled.items():
                end = offset_range.end[tp.partition]
                for message in messages:
                    if tp.partition not in remaining or message.offset >= end:
                        break
                    yield tp.partition, message.offset, message.key, message.value
            progressed = bool(polled)
            for partition in list(remaining):
                # position, not the last offset seen: compaction and transaction markers
                # leave gaps in the offsets.
                if consumer.position(tps[partition]) >= offset_range.end[partition]:
                    remaining.discard(partition)
                    consumer.pause(tps[partition])
                    progressed = True
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout_s:
                positions = {p: consumer.position(tps[p]) for p in sorted(remaining)}
                ends = {p: offset_range.end[p] for p in sorted(remaining)}
                raise BackfillError(
                    f"{offset_range.describe()}: no records for {idle_timeout_s} s at positions "
                    f"{positions} before end offsets {ends}: the range reaches past the end of "
                    "the log; pass smaller end offsets"
                )
    finally:
        consumer.close()


def range_work(config: AppConfig, offset_range: OffsetRange) -> Iterator[WorkItem | Rejection]:
    """The range's records decoded like the stream decodes them (refusals for bad ones)."""
    kafka, stream = config.kafka, config.stream
    for partition, offset, _key, value in read_range(
        kafka, offset_range, config.backfill.idle_timeout_s
    ):
        try:
            event = decode_new_item_event(
                value,
                kafka.max_event_bytes,
                stream.max_text_chars,
                kafka.unknown_event_fields,
                kafka.max_future_skew_s,
            )
        except InvalidEventError as error:
            yield Rejection(partition, offset, error.item_id, error.reason, str(error), "decode")
            continue
        yield WorkItem(offset_range.topic, partition, offset, event)


def backfill_offset_range(
    config: AppConfig,
    topic: str | None = None,
    start: OffsetSpec = "earliest",
    end: OffsetSpec = "latest",
) -> BackfillReport:
    """Recompute proxies for the records of ``topic`` (default ``kafka.topic``) in the range."""
    topic = topic or config.kafka.topic
    check_kafka_reachable(config.kafka, [topic])
    offset_range = resolve_range(config.kafka, topic, start, end)
    logger.info("backfill range %s: %d offsets", offset_range.describe(), offset_range.size)
    work = range_work(config, offset_range)
    return run_backfill(config, work, offset_range.describe(), total=offset_range.size)
