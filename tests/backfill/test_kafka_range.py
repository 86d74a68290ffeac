"""``backfill/kafka_range.py``: bounded reads of an offset range from the embedded broker."""

from __future__ import annotations

import uuid

import pytest
from tests_helpers import new_event

from idproxy_stream.backfill.kafka_range import (
    OffsetRange,
    parse_offsets,
    range_work,
    read_range,
    resolve_range,
)
from idproxy_stream.backfill.runner import BackfillError
from idproxy_stream.config import KafkaConfig, config_from_dict
from idproxy_stream.stream.messages import Rejection, WorkItem
from idproxy_stream.stream.publish import publish_events
from idproxy_stream.stream.topics import end_offsets, ensure_topics


@pytest.fixture
def kafka(broker) -> KafkaConfig:
    topic = f"range-{uuid.uuid4().hex[:8]}"
    config = KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topic=topic,
        fetch_max_wait_ms=10,
        request_timeout_ms=5_000,
    )
    ensure_topics(config, [topic], 2)
    return config


def test_offsets_are_parsed_from_the_command_line_forms():
    assert parse_offsets("earliest") == "earliest"
    assert parse_offsets(" latest ") == "latest"
    assert parse_offsets("0:120, 1:95") == {0: 120, 1: 95}
    for bad in ("0-120", "0:x", "first", "0:-1"):
        with pytest.raises(ValueError, match=r"PARTITION:OFFSET|>= 0"):
            parse_offsets(bad)


def test_batched_topic_is_read_to_the_exact_end_the_broker_under_reports(kafka):
    payloads = [b"record-%04d" % index for index in range(600)]
    published = publish_events(kafka, payloads)  # batched: tansu reports ends too low
    true_ends = published.end_offsets()
    assert sum(end_offsets(kafka, kafka.topic).values()) <= sum(true_ends.values())
    offset_range = resolve_range(kafka, kafka.topic, "earliest", true_ends)
    assert offset_range.size == 600
    records = list(read_range(kafka, offset_range, idle_timeout_s=5))
    assert sorted(value for _, _, _, value in records) == payloads
    assert {(p, o) for p, o, _, _ in records} == set(published.positions)


def test_a_range_reads_only_its_slice_of_each_listed_partition(kafka):
    published = publish_events(kafka, [b"v%03d" % i for i in range(40)], one_record_per_batch=True)
    ends = published.end_offsets()
    partition = min(ends)
    offset_range = resolve_range(kafka, kafka.topic, {partition: 2}, {partition: 5})
    assert offset_range == OffsetRange(kafka.topic, {partition: 2}, {partition: 5})
    read = [(p, o) for p, o, _, _ in read_range(kafka, offset_range, idle_timeout_s=5)]
    assert read == [(partition, 2), (partition, 3), (partition, 4)]
    # "latest" start and end: an empty range, read at once.
    empty = resolve_range(kafka, kafka.topic, "latest", "latest")
    assert empty.size == 0 and list(read_range(kafka, empty, idle_timeout_s=5)) == []


def test_bad_ranges_are_refused_with_what_to_fix(kafka):
    with pytest.raises(BackfillError, match=r"partitions \[0, 1\], not \[7\]"):
        resolve_range(kafka, kafka.topic, "earliest", {7: 10})
    with pytest.raises(BackfillError, match="is after end"):
        resolve_range(kafka, kafka.topic, {0: 5}, {0: 2})
    publish_events(kafka, [b"only"], one_record_per_batch=True)
    beyond = OffsetRange(kafka.topic, {0: 0, 1: 0}, {0: 50, 1: 50})
    with pytest.raises(BackfillError, match="reaches past the end of the log"):
        list(read_range(kafka, beyond, idle_timeout_s=1.0))


def test_records_decode_into_work_items_or_refusals(kafka):
    events = [new_event(40_000 + i) for i in range(3)]
    published = publish_events(kafka, [*events, b"{not json"], one_record_per_batch=True)
    config = config_from_dict({"kafka": kafka.model_dump(mode="json")})
    offset_range = resolve_range(kafka, kafka.topic, "earliest", published.end_offsets())
    work = list(range_work(config, offset_range))
    items = [entry for entry in work if isinstance(entry, WorkItem)]
    assert sorted(item.event.item_id for item in items) == [e.item_id for e in events]
    assert all((item.partition, item.offset) in published.positions for item in items)
    [refused] = [entry for entry in work if isinstance(entry, Rejection)]
    assert (refused.reason, refused.stage) == ("not_json", "decode")
    assert (refused.partition, refused.offset) == published.positions[-1]
