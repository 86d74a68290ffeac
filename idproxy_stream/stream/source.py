"""The source: a Kafka group consumer that feeds the workers and commits what is durable.

One :class:`StreamSource` runs per consumer (a threaded Ray actor; :meth:`StreamSource.run`
loops on one thread, which alone touches the ``KafkaConsumer``). It owns its worker actors and
its sink actor and replaces them when they die. Per loop:

1. **poll** at most as many records as the in-flight bound leaves room for (records beyond it
   are sought back and fetched again later). Each record is registered with the
   :class:`OffsetTracker` and decoded into a :class:`NewItemEvent`; an invalid one becomes a
   dead letter at once. Valid events go to the :class:`DynamicBatcher`.
2. **backpressure**: at ``max_in_flight`` records received but not yet durably handled, every
   assigned partition is paused; at ``resume_below`` they resume. Polling goes on either way,
   so the member stays in the group.
3. **dispatch** released batches to the least-loaded worker (``worker_queue_depth`` each):
   ``worker.encode`` -> an ``ObjectRef``; once it resolves, ``sink.write(ref)`` gets the
   worker's output straight from the object store.
4. **collect** sink acknowledgements: written rows complete their offsets; refusals become
   dead letters, whose offsets complete once the broker has the dead letter.
5. **commit** per partition the offset after the contiguous run of completed records, at
   most every ``commit_interval_ms``. A failed commit is retried later; nothing else waits.

Failures: a dead worker or sink (``RayActorError``) is replaced and its batches are re-sent;
a worker that raises retries the batch up to ``max_attempts`` times, then dead-letters its
events (``processing_failed``); a sink that raises (store down) is retried with back-off,
never dead-lettered. When a partition really leaves this consumer (rebalanced away, or group
membership lost) its in-flight work is abandoned without commit (its completions turn stale);
the new owner re-reads from the last commit and the idempotent upsert makes the replay
harmless. Partitions that an eager rebalance revokes and hands straight back keep their work,
because kafka-python keeps their fetch positions.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from idproxy_stream.config import AppConfig
from idproxy_stream.events import DeadLetter, InvalidEventError, decode_new_item_event
from idproxy_stream.stream.actors import ActorSlot, ActorSpec
from idproxy_stream.stream.backpressure import Backpressure
from idproxy_stream.stream.batching import DynamicBatcher
from idproxy_stream.stream.clients import make_consumer, make_producer
from idproxy_stream.stream.logs import configure_logging
from idproxy_stream.stream.messages import BatchOutcome, Rejection, WorkItem
from idproxy_stream.stream.metrics import StreamStats
from idproxy_stream.stream.offsets import OffsetTracker, Ticket

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

logger = logging.getLogger(__name__)

SINK_RETRY_BASE_S = 0.5
SINK_RETRY_MAX_S = 10.0
LAG_REFRESH_S = 1.0
COLLECT_WAIT_S = 0.02


@dataclass
class HeldRecord:
    """A record received and not yet durably handled; keeps the bytes for its dead letter."""

    ticket: Ticket
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    item_id: int | None = None


@dataclass
class Flight:
    """A batch on its way through a worker (``stage="encode"``) and then the sink."""

    items: list[WorkItem]
    tickets: list[Ticket]
    attempts: int
    stage: str
    worker_index: int
    worker_generation: int
    sink_generation: int = -1
    encode_ref: ray.ObjectRef | None = None


@dataclass
class Retry:
    """A batch to send again, not before ``not_before`` (monotonic seconds)."""

    items: list[WorkItem]
    tickets: list[Ticket]
    attempts: int
    not_before: float = 0.0


@dataclass
class PendingDeadLetter:
    """A dead letter on its way to the broker; its record completes once it is acknowledged."""

    ticket: Ticket
    letter: DeadLetter
    key: bytes | None
    future: object | None = None
    error: Exception | None = None


class _RebalanceListener(ConsumerRebalanceListener):
    """Forwards kafka-python's callbacks (they run on its IO thread) to the source."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked) -> None:
        self.source.partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned) -> None:
        self.source.partitions_assigned(assigned)

    def on_partitions_lost(self, lost) -> None:
        self.source.partitions_lost(lost)


class StreamSource:
    """Consumer, offset tracker, batcher and supervisor of one lane of the stream.

    Run as a threaded Ray actor (``max_concurrency >= 2``) so that :meth:`snapshot` and
    :meth:`stop` answer while :meth:`run` loops.
    """

    def __init__(
        self,
        config: AppConfig,
        worker_spec: ActorSpec,
        sink_spec: ActorSpec,
        name: str = "source-0",
        setup_logging: bool = True,
    ) -> None:
        if setup_logging:
            configure_logging(config.stream.log_level, config.stream.log_format)
        self.config = config
        self.name = name
        stream = config.stream
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._drain_on_stop = True
        self.stats = StreamStats()
        self.tracker = OffsetTracker()
        self.backpressure = Backpressure(stream.max_in_flight, stream.resume_below)
        self.batcher: DynamicBatcher[tuple[WorkItem, Ticket]] = DynamicBatcher(
            stream.max_batch_size, stream.max_wait_ms / 1000
        )
        self.held: dict[tuple[int, int], HeldRecord] = {}
        self._pending_revocation: set[int] = set()
        self.flights: dict[ray.ObjectRef, Flight] = {}
        self.retries: list[Retry] = []
        self.dead_letter_sends: list[PendingDeadLetter] = []
        self.workers = [ActorSlot(worker_spec, "worker") for _ in range(stream.num_workers)]
        self.worker_load = [0] * stream.num_workers
        self.sink = ActorSlot(sink_spec, "sink")
        self.consumer = None
        self.producer = None
        self._last_commit = 0.0
        self._last_lag = 0.0

    # ------------------------------------------------------------------ control (any thread)

    def ping(self) -> str:
        return self.name

    def stop(self, drain: bool = True) -> None:
        """Ask :meth:`run` to finish: drain in-flight work and commit, or abandon it."""
        self._drain_on_stop = drain
        self._stop_requested.set()

    def handles(self) -> dict:
        """The current worker and sink actor handles (for operators and fault tests)."""
        return {"workers": [slot.handle for slot in self.workers], "sink": self.sink.handle}

    def snapshot(self) -> StreamStats:
        """A copy of this source's counters."""
        with self._lock:
            self.stats.in_flight = len(self.held)
            self.stats.peak_in_flight = self.backpressure.peak_in_flight
            self.stats.paused = self.backpressure.paused
            self.stats.pauses = self.backpressure.pauses
            self.stats.resumes = self.backpressure.resumes
            self.stats.restarts["worker"] = sum(slot.restarts for slot in self.workers)
            self.stats.restarts["sink"] = self.sink.restarts
            return copy.deepcopy(self.stats)

    # ---------------------------------------------------------- rebalance (kafka IO thread)
    #
    # The tracker must forget a partition exactly when kafka-python drops its fetch state, or
    # the two disagree on where the partition resumes. Under the eager protocol a revocation
    # is only a notice: partitions that stay assigned keep their fetch position (kafka-python
    # preserves it), so their in-flight work must be kept too, or the records it covers would
    # be skipped. Partitions are therefore forgotten when they are really gone: at the next
    # assignment (eager), at once when already dropped (cooperative), or when lost.

    def partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        if not partitions:
            return
        still_held = {tp.partition for tp in self.consumer.assignment()}
        with self._lock:
            self._pending_revocation |= partitions & still_held
            self._forget(partitions - still_held)

    def partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        current = {tp.partition for tp in self.consumer.assignment()}
        with self._lock:
            self._forget(self._pending_revocation - current)
            self._pending_revocation.clear()
            self.stats.assigned = tuple(sorted(current))
            self.stats.rebalances += 1
        logger.info("%s: partitions %s assigned", self.name, sorted(current))

    def partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        partitions = {tp.partition for tp in lost}
        with self._lock:
            self._pending_revocation -= partitions
            self._forget(partitions)

    def _forget(self, partitions: set[int]) -> None:
        """Abandon the partitions' in-flight work without commit (caller holds the lock)."""
        if not partitions:
            return
        self.tracker.forget(partitions)
        for key in [key for key in self.held if key[0] in partitions]:
            del self.held[key]
        self.batcher.remove(lambda entry: entry[0].partition not in partitions)
        self.stats.assigned = tuple(p for p in self.stats.assigned if p not in partitions)
        for partition in partitions:
            self.stats.lag.pop(partition, None)
        logger.info(
            "%s: partitions %s gone; their in-flight work is abandoned without commit",
            self.name,
            sorted(partitions),
            extra={"partitions": sorted(partitions)},
        )

    # ------------------------------------------------------------------------ the loop

    def run(self) -> StreamStats:
        """Consume until :meth:`stop`; returns the final counters."""
        kafka = self.config.kafka
        self.consumer = make_consumer(kafka, self.name)
        self.consumer.subscribe([kafka.topic], listener=_RebalanceListener(self))
        self.producer = make_producer(kafka, f"{self.name}-dlq")
        drain_deadline: float | None = None
        logger.info("%s: consuming %s as group %s", self.name, kafka.topic, kafka.group_id)
        try:
            while True:
                if self._stop_requested.is_set():
                    if not self._drain_on_stop:
                        break
                    if drain_deadline is None:
                        drain_deadline = time.monotonic() + self.config.stream.drain_timeout_s
                        logger.info("%s: draining %d in-flight records", self.name, len(self.held))
                    if not self.held:
                        break
                    if time.monotonic() > drain_deadline:
                        logger.warning(
                            "%s: drain timed out with %d records in flight; they will be "
                            "re-read from the last commit",
                            self.name,
                            len(self.held),
                        )
                        break
                self._poll(draining=drain_deadline is not None)
                self._dispatch(draining=drain_deadline is not None)
                self._collect()
                self._check_dead_letters()
                self._commit()
                self._refresh_lag()
            self._commit(force=True)
        finally:
            self._close()
        return self.snapshot()

    def _poll(self, draining: bool) -> None:
        consumer = self.consumer
        with self._lock:
            in_flight = len(self.held)
            action = self.backpressure.update(in_flight)
            paused = self.backpressure.paused
        assignment = consumer.assignment()
        if action == "pause":
            logger.info(
                "%s: %d records in flight: pausing %d partitions",
                self.name,
                in_flight,
                len(assignment),
            )
        elif action == "resume" and not draining:
            consumer.resume(*assignment)
            logger.info("%s: %d records in flight: resuming", self.name, in_flight)
        if paused or draining:
            consumer.pause(*assignment)  # again each loop: covers newly assigned partitions
        budget = self.backpressure.poll_budget(in_flight, self.config.kafka.max_poll_records)
        busy = self.flights or self.retries or self.dead_letter_sends or len(self.batcher)
        records = consumer.poll(timeout_ms=0 if busy else 100, max_records=budget)
        if not records:
            return
        room = self.config.stream.max_in_flight - in_flight
        now = time.monotonic()
        letters: list[PendingDeadLetter] = []
        for tp, messages in records.items():
            for message in messages:
                if room <= 0 or draining:
                    self._seek_back(tp, message.offset)
                    break
                room -= 1
                letter = self._accept(tp, message, now)
                if letter is not None:
                    letters.append(letter)
        self._send_dead_letters(letters)

    def _seek_back(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``offset`` again later (a record polled beyond the in-flight bound)."""
        try:
            self.consumer.seek(tp, offset)
        except KafkaError as error:  # revoked meanwhile: the new owner reads it
            logger.debug("%s: cannot seek %s back to %d: %s", self.name, tp, offset, error)

    def _accept(self, tp: TopicPartition, message, now: float) -> PendingDeadLetter | None:
        """Register one record; a valid event is queued, an invalid one dead-lettered."""
        stream, kafka = self.config.stream, self.config.kafka
        try:
            event = decode_new_item_event(
                message.value,
                kafka.max_event_bytes,
                stream.max_text_chars,
                kafka.unknown_event_fields,
            )
            error = None
        except InvalidEventError as invalid:
            event, error = None, invalid
        with self._lock:
            ticket = self.tracker.begin(tp.partition, message.offset)
            held = HeldRecord(ticket, message.key, message.value, message.timestamp)
            self.held[(tp.partition, message.offset)] = held
            self.stats.events_in += 1
            if self.stats.first_event_at is None:
                self.stats.first_event_at = time.time()
            if event is not None:
                held.item_id = event.item_id
                item = WorkItem(tp.topic, tp.partition, message.offset, event)
                self.batcher.add((item, ticket), now)
                return None
            rejection = Rejection(
                tp.partition, message.offset, error.item_id, error.reason, str(error), "decode"
            )
            return self._dead_letter(ticket, rejection, None)

    # --------------------------------------------------------------------- dispatching

    def _dispatch(self, draining: bool) -> None:
        depth = self.config.stream.worker_queue_depth
        now = time.monotonic()
        for retry in [retry for retry in self.retries if retry.not_before <= now]:
            if min(self.worker_load) >= depth:
                return
            self.retries.remove(retry)
            live = self._current(zip(retry.items, retry.tickets, strict=True))
            if live:
                self._submit([item for item, _ in live], [t for _, t in live], retry.attempts)
        capacity = sum(max(0, depth - load) for load in self.worker_load)
        if capacity <= 0:
            return
        with self._lock:
            batches = self.batcher.ready(float("inf") if draining else now, limit=capacity)
        for batch in batches:
            self._submit([item for item, _ in batch], [ticket for _, ticket in batch], 0)

    def _current(self, pairs) -> list[tuple[WorkItem, Ticket]]:
        """The (item, ticket) pairs whose records are still held under the same ticket."""
        with self._lock:
            return [
                (item, ticket)
                for item, ticket in pairs
                if (held := self.held.get(item.key)) is not None and held.ticket == ticket
            ]

    def _submit(self, items: list[WorkItem], tickets: list[Ticket], attempts: int) -> None:
        index = min(range(len(self.workers)), key=self.worker_load.__getitem__)
        slot = self.workers[index]
        ref = slot.handle.encode.remote(items)
        self.flights[ref] = Flight(items, tickets, attempts, "encode", index, slot.generation)
        self.worker_load[index] += 1

    # ----------------------------------------------------------------------- collecting

    def _collect(self) -> None:
        if not self.flights:
            return
        refs = list(self.flights)
        # Returns as soon as one batch completes; the timeout only bounds how long new records
        # and due partial batches wait, so it trades a little latency for a quiet loop.
        depth = self.config.stream.worker_queue_depth
        with self._lock:
            due = self.batcher.seconds_until_due(time.monotonic())
        if due is None or min(self.worker_load) >= depth:  # nothing could be dispatched now
            due = COLLECT_WAIT_S
        wait_s = min(COLLECT_WAIT_S, due)
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            flight = self.flights.pop(ref)
            if flight.stage == "encode":
                self._encoded(ref, flight)
            else:
                self._written(ref, flight)

    def _encoded(self, ref: ray.ObjectRef, flight: Flight) -> None:
        self.worker_load[flight.worker_index] -= 1
        try:
            ray.get(ref)
        except RayActorError as error:
            self.workers[flight.worker_index].replace(flight.worker_generation)
            self._retry(flight, flight.attempts + 1, f"worker died: {error}", 0.0)
            return
        except RayTaskError as error:
            self._retry(flight, flight.attempts + 1, f"worker raised: {error}", 0.0)
            return
        except RayError as error:
            self._retry(flight, flight.attempts, f"worker result lost: {error}", 0.0)
            return
        flight.stage = "write"
        flight.encode_ref = ref
        flight.sink_generation = self.sink.generation
        self.flights[self.sink.handle.write.remote(ref)] = flight

    def _written(self, ref: ray.ObjectRef, flight: Flight) -> None:
        try:
            outcome: BatchOutcome = ray.get(ref)
        except RayActorError as error:
            self.sink.replace(flight.sink_generation)
            self._retry(flight, flight.attempts, f"sink died: {error}", 0.0)
            return
        except RayError as error:
            with self._lock:
                self.stats.sink_errors += 1
            delay = min(SINK_RETRY_MAX_S, SINK_RETRY_BASE_S * 2 ** min(self.stats.sink_errors, 5))
            logger.error(
                "%s: sink failed, retrying the batch in %.1f s: %s", self.name, delay, error
            )
            self._retry(flight, flight.attempts, "sink failed", delay, count_attempt=False)
            return
        self._complete(flight, outcome)

    def _retry(
        self, flight: Flight, attempts: int, why: str, delay: float, count_attempt: bool = True
    ) -> None:
        with self._lock:
            self.stats.retries += 1
        if count_attempt and attempts >= self.config.stream.max_attempts:
            logger.error(
                "%s: batch failed %d times (%s): dead-lettering it", self.name, attempts, why
            )
            letters = []
            with self._lock:
                for item, ticket in zip(flight.items, flight.tickets, strict=True):
                    rejection = Rejection(
                        item.partition,
                        item.offset,
                        item.event.item_id,
                        "processing_failed",
                        f"failed {attempts} times: {why}",
                        "worker",
                    )
                    letter = self._dead_letter(ticket, rejection, None)
                    if letter is not None:
                        letters.append(letter)
            self._send_dead_letters(letters)
            return
        logger.warning("%s: re-sending a batch of %d (%s)", self.name, len(flight.items), why)
        self.retries.append(Retry(flight.items, flight.tickets, attempts, time.monotonic() + delay))

    def _complete(self, flight: Flight, outcome: BatchOutcome) -> None:
        """Account a durable batch: complete written offsets, dead-letter the refusals."""
        tickets = {(t.partition, t.offset): t for t in flight.tickets}
        now = time.time()
        letters = []
        with self._lock:
            stats = self.stats
            stats.batches += 1
            stats.batch_size.observe(outcome.batch_size)
            stats.encode_seconds.observe(outcome.encode_seconds)
            stats.model_version = outcome.model_version
            stats.last_write_at = now
            for row in outcome.written:
                stats.proxies_out[row.status] += 1
                stats.rows_by_version[outcome.model_version] += 1
                held = self._finish(tickets[(row.partition, row.offset)])
                if held is not None and held.timestamp_ms is not None:
                    stats.latency_seconds.observe(max(0.0, now - held.timestamp_ms / 1000))
            for rejection in outcome.rejected:
                ticket = tickets[(rejection.partition, rejection.offset)]
                letter = self._dead_letter(ticket, rejection, outcome.model_version)
                if letter is not None:
                    letters.append(letter)
        self._send_dead_letters(letters)

    def _finish(self, ticket: Ticket) -> HeldRecord | None:
        """Complete a record (caller holds the lock); None when its ticket is stale."""
        key = (ticket.partition, ticket.offset)
        held = self.held.get(key)
        if held is None or held.ticket != ticket or not self.tracker.complete(ticket):
            return None
        del self.held[key]
        return held

    # --------------------------------------------------------------------- dead letters

    def _dead_letter(
        self, ticket: Ticket, rejection: Rejection, model_version: str | None
    ) -> PendingDeadLetter | None:
        """The dead letter for a held record (caller holds the lock); None if stale."""
        held = self.held.get((ticket.partition, ticket.offset))
        if held is None or held.ticket != ticket:
            return None
        letter = DeadLetter.for_record(
            reason=rejection.reason,
            message=rejection.message,
            stage=rejection.stage,
            topic=self.config.kafka.topic,
            partition=ticket.partition,
            offset=ticket.offset,
            value=held.value,
            key=held.key,
            timestamp_ms=held.timestamp_ms,
            item_id=rejection.item_id if rejection.item_id is not None else held.item_id,
            model_version=model_version,
        )
        return PendingDeadLetter(ticket, letter, held.key, None)

    def _send_dead_letters(self, letters: list[PendingDeadLetter]) -> None:
        """Send (outside the lock: a full producer buffer may block)."""
        for pending in letters:
            try:
                pending.future = self.producer.send(
                    self.config.kafka.dead_letter_topic,
                    key=pending.key,
                    value=pending.letter.to_json_bytes(),
                )
            except KafkaError as error:  # e.g. no metadata while the broker is away
                pending.future = None
                pending.error = error
            self.dead_letter_sends.append(pending)
            logger.info(
                "dead letter: %s at %s/%d@%d",
                pending.letter.reason,
                pending.letter.topic,
                pending.letter.partition,
                pending.letter.offset,
                extra={"reason": pending.letter.reason, "item_id": pending.letter.item_id},
            )

    def _check_dead_letters(self) -> None:
        """Complete the offsets of dead letters the broker acknowledged; re-send failures."""
        if not self.dead_letter_sends:
            return
        done = [p for p in self.dead_letter_sends if p.future is None or p.future.is_done]
        failed = []
        with self._lock:
            for pending in done:
                self.dead_letter_sends.remove(pending)
                if pending.future is not None and pending.future.succeeded():
                    if self._finish(pending.ticket) is not None:
                        self.stats.dead_letters[pending.letter.reason] += 1
                        self.stats.last_write_at = time.time()
                elif self.tracker.is_current(pending.ticket):
                    failed.append(pending)
        for pending in failed:
            error = pending.error if pending.future is None else pending.future.exception
            logger.warning("re-sending a dead letter (%s): %s", pending.letter.reason, error)
        self._send_dead_letters(failed)

    # ---------------------------------------------------------------------- committing

    def _commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.config.stream.commit_interval_ms / 1000:
            return
        self._last_commit = now
        assigned = {tp.partition for tp in self.consumer.assignment()}
        with self._lock:
            positions = {
                p: offset for p, offset in self.tracker.commit_positions().items() if p in assigned
            }
        if not positions:
            return
        topic = self.config.kafka.topic
        offsets = {
            TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()
        }
        try:
            self.consumer.commit(offsets, timeout_ms=self.config.kafka.request_timeout_ms)
        except KafkaError as error:
            with self._lock:
                self.stats.commit_failures += 1
            logger.warning("%s: offset commit failed, retrying later: %r", self.name, error)
            return
        with self._lock:
            self.tracker.mark_committed(positions)
            self.stats.committed.update(positions)
            self.stats.commits += 1

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < LAG_REFRESH_S:
            return
        self._last_lag = now
        lag = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            with self._lock:
                done = self.tracker.position(tp.partition) or self.stats.committed.get(tp.partition)
            if done is not None:
                lag[tp.partition] = max(0, highwater - done)
        with self._lock:
            self.stats.lag.update(lag)

    # ------------------------------------------------------------------------ shutdown

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception as error:
                logger.warning("%s: closing the consumer: %s", self.name, error)
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception as error:
                logger.warning("%s: closing the dead-letter producer: %s", self.name, error)
        try:
            ray.get(self.sink.handle.close.remote(), timeout=30)
        except Exception as error:
            logger.warning("%s: closing the sink: %s", self.name, error)
        for slot in [*self.workers, self.sink]:
            slot.stop()
        logger.info("%s: stopped", self.name)
