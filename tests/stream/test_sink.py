"""ProxySink: durable idempotent writes with the neighbour check, void dead letters."""

from __future__ import annotations

import logging

import pytest

from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.sink import ProxySink, SinkSettings
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings
from tests.stream.conftest import event, stored_rows


@pytest.fixture
def encoded(stream_config):
    config = stream_config()
    worker = ProxyWorker(WorkerSettings.of(config))
    items = [WorkItem(config.kafka.topic, 1, 10 + i, event(400_000 + i)) for i in range(5)]
    return config, worker.encode(items)


def test_written_rows_are_durable_checked_and_carry_their_coordinates(encoded) -> None:
    config, batch = encoded
    sink = ProxySink(SinkSettings.of(config))
    outcome = sink.write(batch)
    sink.close()
    rows = {record.item_id: record for record in stored_rows(config)}  # a fresh connection
    assert sorted(rows) == [400_000 + i for i in range(5)]
    assert [w.item_id for w in outcome.written] == sorted(rows)
    record = rows[400_002]
    assert (record.kafka_topic, record.kafka_partition, record.kafka_offset) == (
        config.kafka.topic,
        1,
        12,
    )
    assert record.model_version == "v1" and record.source_event_ts == event(400_002).created_at
    assert record.neighbours.shape == (config.index.k,)
    assert record.status in ("ok", "void_flagged")
    assert sum(outcome.status_counts.values()) == 5


def test_writing_the_same_batch_twice_leaves_one_row_per_item(encoded) -> None:
    config, batch = encoded
    sink = ProxySink(SinkSettings.of(config))
    sink.write(batch)
    first = {r.item_id: r for r in stored_rows(config)}
    sink.write(batch)  # a re-delivery after a crash: same events, computed again
    sink.close()
    rows = {r.item_id: r for r in stored_rows(config)}
    assert len(stored_rows(config)) == 5 and set(rows) == set(first)
    for item_id, row in rows.items():
        assert row.order_key()[:2] == first[item_id].order_key()[:2]  # same event and offset
        assert row.computed_at >= first[item_id].computed_at


def test_void_proxies_become_dead_letters_under_that_policy(stream_config, encoded) -> None:
    _, batch = encoded
    config = stream_config(index={"k": 5, "void_policy": "dead_letter"})
    sink = ProxySink(SinkSettings.of(config))
    sink.checker.threshold = -1.0  # every distance exceeds it: every proxy is void
    outcome = sink.write(batch)
    sink.close()
    assert not outcome.written and stored_rows(config) == []
    assert {r.reason for r in outcome.rejected} == {"proxy_void"}
    assert {r.offset for r in outcome.rejected} == {10, 11, 12, 13, 14}


def test_building_a_sink_leaves_the_root_log_handlers_alone(stream_config) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ProxySink(SinkSettings.of(stream_config())).close()
    assert (list(root.handlers), root.level) == (handlers, level)
