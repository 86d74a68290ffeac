"""StreamSource, the Kafka loop, with a fake consumer, producer and actors (no Kafka, no Ray).

``run()`` loops on a background thread as it does in its actor; the tests publish records to
the fake consumer's log, hold or release the fake actors' results and the dead letters'
acknowledgements, and check what is committed. The end-to-end proof with the real broker,
Ray and the encoder is in ``test_faults.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from tests_helpers import wait_until

import idproxy_stream.stream.source as source_module
from idproxy_stream.config import KafkaConfig, StreamConfig
from idproxy_stream.events import DeadLetter, NewItemEvent
from idproxy_stream.stream.actors import ActorSpec
from idproxy_stream.stream.metrics import readiness
from idproxy_stream.stream.source import SourceSettings, StreamSource
from tests.stream.fakes import (
    FakeConsumer,
    FakeProducer,
    FakeRuntime,
    FakeSink,
    FakeSlot,
    FakeWorker,
)

TOPIC = "items"
VOID_ID = 7_777


@dataclass
class Lane:
    source: StreamSource
    consumer: FakeConsumer
    producer: FakeProducer
    runtime: FakeRuntime
    thread: threading.Thread

    @property
    def sink(self) -> FakeSink:
        return self.source.dispatcher.sink.handle

    def publish(self, partition: int, item_id: int | None) -> int:
        """An event for ``item_id``, or a record that is not JSON for None; its offset."""
        if item_id is None:
            return self.consumer.publish(partition, b"\xff not json")
        created = datetime(2026, 1, 1, tzinfo=UTC)
        event = NewItemEvent(item_id=item_id, created_at=created, title=f"item {item_id}")
        return self.consumer.publish(partition, event.to_json_bytes(), str(item_id).encode())

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_json_bytes(value) for _, _, value in self.producer.sent]


@pytest.fixture
def start_lane(monkeypatch) -> Iterator:
    lanes: list[Lane] = []

    def start(hold_acks: bool = False, hold_results: bool = False, **stream) -> Lane:
        consumer, producer, runtime = FakeConsumer(TOPIC), FakeProducer(hold_acks), FakeRuntime()
        runtime.hold = hold_results

        def slot(spec: ActorSpec, role: str) -> FakeSlot:
            if role == "worker":
                return FakeSlot(lambda script: FakeWorker(script, runtime), [])
            return FakeSlot(lambda script: FakeSink(script, runtime, {VOID_ID}), [])

        monkeypatch.setattr(source_module, "ActorSlot", slot)
        monkeypatch.setattr(source_module, "make_consumer", lambda kafka, name: consumer)
        monkeypatch.setattr(
            source_module, "make_dead_letter_producer", lambda kafka, name: producer
        )
        settings = SourceSettings(
            kafka=KafkaConfig(topic=TOPIC, dead_letter_topic=f"{TOPIC}.dlq"),
            stream=StreamConfig(
                **{"num_workers": 1, "max_batch_size": 4, "max_wait_ms": 0, **stream}
            ),
        )
        source = StreamSource(settings, ActorSpec(object), ActorSpec(object), "lane")
        source.dispatcher.runtime = runtime
        thread = threading.Thread(target=source.run, daemon=True)
        lane = Lane(source, consumer, producer, runtime, thread)
        lanes.append(lane)
        thread.start()
        return lane

    yield start
    for lane in lanes:
        lane.runtime.release()
        lane.producer.acknowledge_all()
        lane.source.stop(drain=False)
        lane.thread.join(timeout=30)


def test_each_record_is_committed_once_its_row_or_dead_letter_is_durable(start_lane) -> None:
    lane = start_lane()
    valid = {0: [1, 2, 3, VOID_ID, 4], 1: [11, 12, 13]}
    for partition, item_ids in valid.items():
        for item_id in item_ids:
            lane.publish(partition, item_id)
    bad = lane.publish(1, None)
    wait_until(lambda: lane.consumer.committed == {0: 5, 1: 4}, 30, "commits to the end")
    assert sorted(lane.sink.written) == [1, 2, 3, 4, 11, 12, 13]  # each once
    letters = {(d.partition, d.offset): d for d in lane.dead_letters()}
    assert set(letters) == {(0, 3), (1, bad)}
    assert (letters[(0, 3)].reason, letters[(0, 3)].item_id) == ("proxy_void", VOID_ID)
    assert letters[(1, bad)].reason == "not_json"
    assert letters[(1, bad)].original_value == b"\xff not json"
    stats = lane.source.snapshot()
    assert (stats.events_in, stats.proxies_total, stats.dead_letters_total) == (9, 7, 2)
    assert stats.in_flight == 0


def test_an_unacknowledged_dead_letter_holds_back_the_commit_of_later_records(
    start_lane,
) -> None:
    lane = start_lane(hold_acks=True)
    for item_id in (1, None, 2, 3):
        lane.publish(0, item_id)
    wait_until(lambda: sorted(lane.sink.written) == [1, 2, 3], 30, "every row written")
    wait_until(lambda: lane.consumer.committed.get(0) == 1, 30, "the first record committed")
    assert lane.source.ledger.position(0) == 1  # offsets 2 and 3 wait behind the dead letter
    assert lane.source.ledger.in_flight == 1
    lane.producer.acknowledge_all()
    wait_until(lambda: lane.consumer.committed.get(0) == 4, 30, "commits past the dead letter")
    assert json.loads(lane.producer.sent[0][2])["offset"] == 1


def test_partitions_pause_at_the_in_flight_bound_and_resume_below_it(start_lane) -> None:
    lane = start_lane(hold_results=True, max_in_flight=6, resume_below=2, max_batch_size=2)
    for item_id in range(100, 120):
        lane.publish(0, item_id)
    wait_until(lambda: lane.source.ledger.in_flight == 6, 30, "the bound to fill")
    wait_until(lambda: lane.consumer.paused == {0, 1}, 30, "partitions paused")
    lane.runtime.release()  # results flow from now on
    wait_until(lambda: lane.consumer.committed.get(0) == 20, 30, "every record committed")
    stats = lane.source.snapshot()
    assert stats.peak_in_flight == 6 and stats.pauses >= 1 and stats.resumes >= 1
    assert sorted(lane.sink.written) == list(range(100, 120))


def test_work_of_a_partition_that_moves_away_never_moves_its_commit(start_lane) -> None:
    lane = start_lane(hold_results=True)
    for item_id in (1, 2, 3):
        lane.publish(0, item_id)
        lane.publish(1, 10 + item_id)
    wait_until(lambda: lane.source.ledger.in_flight == 6, 30, "both partitions in flight")
    lane.consumer.reassign({1})  # an eager rebalance hands partition 0 to another member
    wait_until(lambda: lane.source.snapshot().assigned == (1,), 30, "the rebalance")
    assert lane.source.ledger.in_flight == 3  # partition 0's records are no longer held
    lane.runtime.release()
    wait_until(lambda: lane.consumer.committed.get(1) == 3, 30, "partition 1 committed")
    wait_until(lambda: sorted(lane.sink.written) == [1, 2, 3, 11, 12, 13], 30, "late writes")
    assert 0 not in lane.consumer.committed  # its late writes (idempotent rows) moved nothing
    assert lane.source.ledger.in_flight == 0


def test_a_stop_drains_in_flight_work_and_commits_it(start_lane) -> None:
    lane = start_lane(hold_results=True)
    for item_id in (1, 2, 3):
        lane.publish(0, item_id)
    wait_until(lambda: lane.source.ledger.in_flight == 3, 30, "records in flight")
    lane.source.stop(drain=True)
    lane.runtime.release()
    lane.thread.join(timeout=30)
    assert not lane.thread.is_alive() and lane.consumer.committed == {0: 3}
    assert lane.source.dispatcher.sink.stopped  # actors ended with the loop


HOSTILE_RECORDS = {
    "created_at_out_of_range": b'{"item_id":5,"created_at":"0001-01-01T00:00:00+01:00"}',
    "wrong_shape": b'{"item_id":' + b"9" * 5_000 + b',"created_at":1}',
    "not_json": b"[" * 100_000 + b"]" * 100_000,
}


def test_records_that_used_to_kill_the_source_are_dead_lettered_and_the_loop_goes_on(
    start_lane,
) -> None:
    lane = start_lane()
    offsets = {}
    for position, (reason, value) in enumerate(HOSTILE_RECORDS.items()):
        lane.publish(0, 100 + position)
        offsets[lane.consumer.publish(0, value)] = reason
    lane.publish(0, 200)
    wait_until(lambda: lane.consumer.committed == {0: 7}, 30, "commits to the end")
    assert sorted(lane.sink.written) == [100, 101, 102, 200]
    letters = {d.offset: d for d in lane.dead_letters()}
    assert {offset: d.reason for offset, d in letters.items()} == offsets
    assert all(len(d.message) <= 300 for d in letters.values())
    assert lane.thread.is_alive()


def test_a_failing_sink_makes_the_lane_not_ready_within_seconds_until_it_writes_again(
    start_lane,
) -> None:
    lane = start_lane()
    lane.publish(0, 1)
    wait_until(lambda: lane.consumer.committed.get(0) == 1, 30, "the first row written")
    assert readiness(lane.source.snapshot(), time.time()).ready
    lane.sink.script = ["raise"] * 1_000  # the store goes down
    lane.publish(0, 2)
    failing_since = time.monotonic()
    wait_until(lambda: not readiness(lane.source.snapshot(), time.time()).ready, 5, "not ready")
    assert time.monotonic() - failing_since < 5
    verdict = readiness(lane.source.snapshot(), time.time())
    assert verdict.reason.startswith("the sink has failed for ")
    assert lane.source.snapshot().sink_errors >= 1
    lane.sink.script.clear()  # the store is back
    wait_until(lambda: lane.consumer.committed.get(0) == 2, 30, "the row written after all")
    assert readiness(lane.source.snapshot(), time.time()).ready
    assert sorted(lane.sink.written) == [1, 2]


def test_a_refused_model_version_reported_with_batches_is_counted_once(start_lane) -> None:
    lane = start_lane()
    lane.sink.refused_versions = ("v2",)  # every later batch names it
    for item_id in (1, 2, 3):  # three batches, each naming v2
        lane.publish(0, item_id)
        wait_until(lambda n=item_id: lane.consumer.committed.get(0) == n, 30, f"row {item_id}")
    assert lane.source.snapshot().refused_versions == 1
    lane.sink.refused_versions = ("v2", "v3")
    lane.publish(0, 4)
    wait_until(lambda: lane.consumer.committed.get(0) == 4, 30, "row 4")
    assert lane.source.snapshot().refused_model_versions == {"v2", "v3"}
