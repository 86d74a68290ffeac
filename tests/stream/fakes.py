"""Fakes of what the stream's source talks to: actor handles and their runtime (for the
dispatcher), a Kafka consumer and producer (for the loop). In-process, thread-safe enough for
a source running ``run()`` on a background thread while a test drives them."""

from __future__ import annotations

import threading
import warnings
from collections import namedtuple

from idproxy_stream.events import DeadLetterReason
from idproxy_stream.stream.dispatch import ActorDied, ActorInitFailed, ResultLost, TaskRaised
from idproxy_stream.stream.messages import BatchOutcome, Rejection, WrittenRow

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import TopicPartition

FAILURES = {
    "raise": TaskRaised,
    "die": ActorDied,
    "lost": ResultLost,
    "init": ActorInitFailed,  # the actor's constructor raised: it never started
}
Message = namedtuple("Message", "offset key value timestamp")


# ------------------------------------------------------------------------------ actors


class FakeRef:
    def __init__(self, value=None, error: Exception | None = None, ready: bool = True) -> None:
        self.value, self.error, self.ready = value, error, ready


class FakeRuntime:
    """Refs are ready when their fake actor says so (or once :meth:`release` runs)."""

    def __init__(self) -> None:
        self.changed = threading.Event()
        self.hold = False  # new refs start not ready
        self._held: list[FakeRef] = []
        self._lock = threading.Lock()

    def ref(self, value=None, error: Exception | None = None) -> FakeRef:
        with self._lock:
            ref = FakeRef(value, error, ready=not self.hold)
            if self.hold:
                self._held.append(ref)
            return ref

    def release(self, keep_holding: bool = False) -> None:
        with self._lock:
            self.hold = keep_holding
            for ref in self._held:
                ref.ready = True
            self._held.clear()
        self.changed.set()

    def wait(self, refs, timeout_s):
        ready = [ref for ref in refs if ref.ready]
        if not ready and timeout_s > 0:
            self.changed.wait(timeout_s)
            self.changed.clear()
            ready = [ref for ref in refs if ref.ready]
        return ready

    def get(self, ref: FakeRef, timeout_s=None):
        if ref.error is not None:
            raise ref.error
        return ref.value


class FakeMethod:
    def __init__(self, call) -> None:
        self.remote = call


class FakeWorker:
    """``encode`` resolves with the next behaviour of ``script`` ("ok", "raise", "die", "lost")."""

    def __init__(self, script: list[str], runtime: FakeRuntime) -> None:
        self.script, self.runtime = list(script), runtime
        self.calls: list[list[int]] = []
        self.encode = FakeMethod(self._encode)

    def _encode(self, items):
        self.calls.append([item.offset for item in items])
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour == "ok":
            return self.runtime.ref(value=list(items))
        return self.runtime.ref(error=FAILURES[behaviour](behaviour))


class FakeSink:
    """``write`` acknowledges every row, refusing ``void_ids`` as void proxies."""

    def __init__(self, script: list[str], runtime: FakeRuntime, void_ids=frozenset()) -> None:
        self.script, self.runtime, self.void_ids = list(script), runtime, void_ids
        self.written: list[int] = []  # item ids, every time one is written
        self.writes = 0
        self.refused_versions: tuple[str, ...] = ()  # what the worker reported refusing
        self.write = FakeMethod(self._write)
        self.close = FakeMethod(lambda: self.runtime.ref())

    def _write(self, encoded: FakeRef):
        self.writes += 1
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour != "ok":
            return self.runtime.ref(error=FAILURES[behaviour](behaviour))
        items = encoded.value
        rows = tuple(
            WrittenRow(i.partition, i.offset, i.event.item_id, "ok")
            for i in items
            if i.event.item_id not in self.void_ids
        )
        refused = tuple(
            Rejection(
                i.partition, i.offset, i.event.item_id, DeadLetterReason.PROXY_VOID, "void", "sink"
            )
            for i in items
            if i.event.item_id in self.void_ids
        )
        self.written += [row.item_id for row in rows]
        outcome = BatchOutcome(
            rows, refused, "v1", len(items), 0.0, 0.0, refused_versions=self.refused_versions
        )
        return self.runtime.ref(value=outcome)


class FakeSlot:
    """An ActorSlot whose replacement actors follow ``scripts`` in turn."""

    def __init__(self, make, scripts: list[list[str]]) -> None:
        self.make, self.scripts = make, list(scripts)
        self.generation = self.restarts = 0
        self.handle = make(self.scripts.pop(0) if self.scripts else [])
        self.stopped = False

    def replace(self, generation: int) -> bool:
        if generation != self.generation:
            return False
        self.handle = self.make(self.scripts.pop(0) if self.scripts else [])
        self.generation += 1
        self.restarts += 1
        return True

    def stop(self) -> None:
        self.stopped = True


# ------------------------------------------------------------------------------- Kafka


class FakeFuture:
    def __init__(self, done: bool) -> None:
        self.is_done, self._ok, self.exception = done, done, None

    def resolve(self) -> None:
        self.is_done = self._ok = True

    def succeeded(self) -> bool:
        return self._ok


class FakeProducer:
    """Acknowledges every send at once, or (``hold``) once :meth:`acknowledge_all` runs."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[FakeFuture] = []
        self._lock = threading.Lock()

    def send(self, topic, key=None, value=None):
        with self._lock:
            self.sent.append((topic, key, value))
            self.futures.append(FakeFuture(done=not self.hold))
            return self.futures[-1]

    def acknowledge_all(self) -> None:
        with self._lock:
            self.hold = False
            for future in self.futures:
                future.resolve()

    def close(self, timeout=None) -> None:
        pass


class FakeConsumer:
    """A group consumer of one topic: a log per partition, fetch positions, commits, pauses.

    Rebalances happen inside :meth:`poll` (on the polling thread, as kafka-python does):
    the first poll assigns every partition; :meth:`reassign` schedules an eager rebalance.
    """

    def __init__(self, topic: str, partitions=(0, 1)) -> None:
        self.topic = topic
        self.log = {p: [] for p in partitions}
        self.position = dict.fromkeys(partitions, 0)
        self.committed: dict[int, int] = {}
        self.paused: set[int] = set()
        self.owned: set[int] = set()
        self.listener = None
        self._next_assignment: set[int] | None = set(partitions)
        self._lock = threading.Lock()
        self._arrived = threading.Event()

    def publish(self, partition: int, value: bytes, key: bytes | None = None) -> int:
        with self._lock:
            self.log[partition].append((key, value))
            self._arrived.set()
            return len(self.log[partition]) - 1

    def reassign(self, partitions: set[int]) -> None:
        with self._lock:
            self._next_assignment = set(partitions)

    def _tps(self, partitions) -> set[TopicPartition]:
        return {TopicPartition(self.topic, p) for p in partitions}

    # -- the KafkaConsumer methods the source calls

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return self._tps(self.owned)

    def poll(self, timeout_ms: int, max_records: int):
        with self._lock:
            new = self._next_assignment
            self._next_assignment = None
        if new is not None:  # eager: revoke everything, then assign
            if self.owned:
                self.listener.on_partitions_revoked(self._tps(self.owned))
            for partition in new - self.owned:
                self.position[partition] = self.committed.get(partition, 0)
            self.owned = new
            self.listener.on_partitions_assigned(self._tps(new))
        records = self._fetch(max_records)
        if not records and timeout_ms:
            self._arrived.wait(timeout_ms / 1000)
            self._arrived.clear()
            records = self._fetch(max_records)
        return records

    def _fetch(self, max_records: int):
        records = {}
        with self._lock:
            for partition in sorted(self.owned - self.paused):
                log, start = self.log[partition], self.position[partition]
                taken = log[start : start + max_records - sum(map(len, records.values()))]
                if taken:
                    records[TopicPartition(self.topic, partition)] = [
                        Message(start + i, key, value, 1_700_000_000_000)
                        for i, (key, value) in enumerate(taken)
                    ]
                    self.position[partition] = start + len(taken)
        return records

    def pause(self, *tps) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, *tps) -> None:
        self.paused -= {tp.partition for tp in tps}

    def seek(self, tp, offset: int) -> None:
        self.position[tp.partition] = offset

    def commit(self, offsets, timeout_ms=None) -> None:
        with self._lock:
            self.committed.update({tp.partition: meta.offset for tp, meta in offsets.items()})

    def highwater(self, tp) -> int:
        return len(self.log[tp.partition])

    def close(self, autocommit=False) -> None:
        pass
