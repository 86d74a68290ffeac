"""The source: a Kafka group consumer that feeds the workers and commits what is durable.

One :class:`StreamSource` runs per consumer (a threaded Ray actor; :meth:`StreamSource.run`
loops on one thread, which alone touches the ``KafkaConsumer``). Per loop:

1. **poll** at most as many records as the in-flight bound leaves room for (records beyond it
   are sought back and fetched again later). Each record is held by the
   :class:`~idproxy_stream.stream.ledger.InFlightLedger` and decoded into a
   :class:`NewItemEvent`; an invalid one becomes a dead letter at once, a valid one goes to
   the :class:`~idproxy_stream.stream.batching.DynamicBatcher`.
2. **backpressure**: at ``max_in_flight`` held records every assigned partition is paused; at
   ``resume_below`` they resume. Polling goes on either way, so the member stays in the group.
3. **dispatch** released batches (and due retries) through the
   :class:`~idproxy_stream.stream.dispatch.ActorDispatcher`: a worker encodes, the sink writes.
4. **collect** what the dispatcher finished: written rows complete their records in the
   ledger; refusals and given-up batches become dead letters
   (:class:`~idproxy_stream.stream.outbox.DeadLetterOutbox`), whose records complete once the
   broker acknowledges them.
5. **commit** per partition the ledger's commit position (the offset after the contiguous run
   of handled records), at most every ``commit_interval_ms``; a failed commit is retried later.

Rebalance callbacks only tell the ledger (:class:`_RebalanceListener`); which partitions'
work is abandoned, and which late news is ignored, is the ledger's one rule. Failures of
workers and the sink are the dispatcher's (its retry policy); see ``docs/stream.md``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings

from idproxy_stream.config import FrozenModel, KafkaConfig, StreamConfig
from idproxy_stream.events import DeadLetterReason, InvalidEventError, decode_new_item_event
from idproxy_stream.stream.actors import ActorSlot, ActorSpec
from idproxy_stream.stream.backpressure import Backpressure
from idproxy_stream.stream.batching import DynamicBatcher
from idproxy_stream.stream.clients import make_consumer, make_dead_letter_producer
from idproxy_stream.stream.dispatch import ActorDispatcher, Batch, GaveUp, RetryPolicy, Written
from idproxy_stream.stream.driver_watch import CHECK_INTERVAL_S, DriverWatch
from idproxy_stream.stream.ledger import InFlightLedger
from idproxy_stream.stream.messages import Rejection, WorkItem
from idproxy_stream.stream.metrics import StreamStats
from idproxy_stream.stream.offsets import Ticket
from idproxy_stream.stream.outbox import (
    DeadLetterOutbox,
    PendingLetter,
    dead_letter_for,
    dead_letter_key,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import KafkaError, MessageSizeTooLargeError
    from kafka.structs import OffsetAndMetadata

logger = logging.getLogger(__name__)

LAG_REFRESH_S = 1.0
COLLECT_WAIT_S = 0.02


class SourceSettings(FrozenModel):
    """What a source reads: the Kafka section and the stream section; ``driver``, the driver
    process to outlive by at most ``driver_watch.CHECK_INTERVAL_S`` (None: Ray alone)."""

    kafka: KafkaConfig
    stream: StreamConfig
    driver: DriverWatch | None = None


class _RebalanceListener(ConsumerRebalanceListener):
    """Forwards kafka-python's callbacks (they may run on its IO thread) to the ledger."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked) -> None:
        partitions = {tp.partition for tp in revoked}
        if partitions:
            still = self.source.assigned_partitions()
            self.source.partitions_gone(self.source.ledger.revoked(partitions, still))

    def on_partitions_assigned(self, assigned) -> None:
        current = self.source.assigned_partitions()
        self.source.partitions_gone(self.source.ledger.assigned(current))
        self.source.partitions_assigned(current)

    def on_partitions_lost(self, lost) -> None:
        self.source.partitions_gone(self.source.ledger.lost({tp.partition for tp in lost}))


class StreamSource:
    """The Kafka loop of one lane of the stream: consumer, ledger, batcher, dispatcher, outbox.

    Run as a threaded Ray actor (``max_concurrency >= 2``) so that :meth:`snapshot` and
    :meth:`stop` answer while :meth:`run` loops.
    """

    def __init__(
        self,
        settings: SourceSettings,
        worker_spec: ActorSpec,
        sink_spec: ActorSpec,
        name: str = "source-0",
    ) -> None:
        self.kafka, self.settings = settings.kafka, settings.stream
        self.driver = settings.driver
        self.name = name
        stream = self.settings
        self._stats_lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._drain_on_stop = True
        self.stats = StreamStats()
        self.ledger = InFlightLedger()
        self.backpressure = Backpressure(stream.max_in_flight, stream.resume_below)
        self.batcher: DynamicBatcher[tuple[WorkItem, Ticket]] = DynamicBatcher(
            stream.max_batch_size, stream.max_wait_ms / 1000
        )
        self.dispatcher = ActorDispatcher(
            [ActorSlot(worker_spec, "worker") for _ in range(stream.num_workers)],
            ActorSlot(sink_spec, "sink"),
            stream.worker_queue_depth,
            RetryPolicy(
                stream.max_attempts,
                max_worker_deaths=stream.max_worker_deaths,
                max_actor_start_failures=stream.max_actor_start_failures,
                batch_deadline_s=stream.batch_deadline_s,
            ),
            self.ledger.is_current,
        )
        self.outbox: DeadLetterOutbox | None = None
        self.consumer = None
        self._abandonments_seen = 0
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
        return {
            "workers": [slot.handle for slot in self.dispatcher.workers],
            "sink": self.dispatcher.sink.handle,
        }

    def snapshot(self) -> StreamStats:
        """A copy of this source's counters."""
        dispatcher, backpressure = self.dispatcher, self.backpressure
        with self._stats_lock:
            stats = self.stats
            stats.in_flight = self.ledger.in_flight
            stats.peak_in_flight = backpressure.peak_in_flight
            stats.paused, stats.pauses = backpressure.paused, backpressure.pauses
            stats.resumes = backpressure.resumes
            stats.retries = dispatcher.resends
            stats.bisections = dispatcher.bisections
            stats.sink_errors = dispatcher.sink_errors
            stats.stalls = dispatcher.stalls
            stats.restarts["worker"] = sum(slot.restarts for slot in dispatcher.workers)
            stats.restarts["sink"] = dispatcher.sink.restarts
            stats.taken_at = time.time()
            return copy.deepcopy(stats)

    def assigned_partitions(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def partitions_assigned(self, current: set[int]) -> None:
        with self._stats_lock:
            self.stats.assigned = tuple(sorted(current))
            self.stats.rebalances += 1
        logger.info("%s: partitions %s assigned", self.name, sorted(current))

    def partitions_gone(self, partitions: set[int]) -> None:
        """The ledger abandoned ``partitions``: stop reporting them."""
        if not partitions:
            return
        with self._stats_lock:
            self.stats.assigned = tuple(p for p in self.stats.assigned if p not in partitions)
            for partition in partitions:
                self.stats.lag.pop(partition, None)

    # ------------------------------------------------------------------------ the loop

    def run(self) -> StreamStats:
        """Consume until :meth:`stop`; returns the final counters."""
        kafka = self.kafka
        self.consumer = make_consumer(kafka, self.name)
        self.consumer.subscribe([kafka.topic], listener=_RebalanceListener(self))
        producer = make_dead_letter_producer(kafka, f"{self.name}-dlq")
        self.outbox = DeadLetterOutbox(
            producer,
            kafka.dead_letter_topic,
            self.ledger.is_current,
            (KafkaError,),
            fatal_errors=(MessageSizeTooLargeError,),
        )
        drain_deadline: float | None = None
        driver = self._watchable_driver()
        next_driver_check = 0.0
        logger.info("%s: consuming %s as group %s", self.name, kafka.topic, kafka.group_id)
        try:
            while True:
                if driver is not None and time.monotonic() >= next_driver_check:
                    next_driver_check = time.monotonic() + CHECK_INTERVAL_S
                    if driver.driver_gone():
                        logger.error(
                            "%s: the driver (pid %d) is gone: stopping; %d in-flight records "
                            "will be re-read from the last commit",
                            self.name,
                            driver.pid,
                            self.ledger.in_flight,
                        )
                        break
                if self._stop_requested.is_set():
                    if not self._drain_on_stop or not self.ledger.in_flight:
                        break
                    if drain_deadline is None:
                        drain_deadline = time.monotonic() + self.settings.drain_timeout_s
                        logger.info(
                            "%s: draining %d in-flight records", self.name, self.ledger.in_flight
                        )
                    if time.monotonic() > drain_deadline:
                        logger.warning(
                            "%s: drain timed out with %d records in flight; they will be "
                            "re-read from the last commit",
                            self.name,
                            self.ledger.in_flight,
                        )
                        break
                draining = drain_deadline is not None
                self._poll(draining)
                self._dispatch(draining)
                self._collect()
                self._complete_dead_letters()
                self._commit()
                self._refresh_lag()
            self._commit(force=True)
        finally:
            self._close(producer)
        return self.snapshot()

    def _watchable_driver(self) -> DriverWatch | None:
        """The driver to watch, when this actor runs on its node (else Ray alone ends it)."""
        if self.driver is None:
            return None
        import ray

        if not self.driver.watchable_from(ray.get_runtime_context().get_node_id()):
            return None
        return self.driver

    def _poll(self, draining: bool) -> None:
        """Steps 1 and 2: backpressure, then hold and decode what one poll returns."""
        consumer = self.consumer
        in_flight = self.ledger.in_flight
        action = self.backpressure.update(in_flight)
        assignment = consumer.assignment()
        if action == "pause":
            logger.info("%s: %d records in flight: pausing", self.name, in_flight)
        elif action == "resume" and not draining:
            consumer.resume(*assignment)
            logger.info("%s: %d records in flight: resuming", self.name, in_flight)
        if self.backpressure.paused or draining:
            consumer.pause(*assignment)  # again each loop: covers newly assigned partitions
        budget = self.backpressure.poll_budget(in_flight, self.kafka.max_poll_records)
        records = consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=budget)
        room = self.settings.max_in_flight - in_flight
        now = time.monotonic()
        letters: list[PendingLetter] = []
        for tp, messages in records.items():
            for message in messages:
                if room <= 0 or draining:
                    self._seek_back(tp, message.offset)
                    break
                room -= 1
                letter = self._receive(tp, message, now)
                if letter is not None:
                    letters.append(letter)
        self.outbox.send(letters)

    def _poll_timeout_ms(self) -> int:
        """0 while batches are queued or in flight (collecting waits instead); a short wait
        while only retries or dead-letter acknowledgements are pending; else 100 ms."""
        if self.dispatcher.flights or len(self.batcher):
            return 0
        if self.dispatcher.retries or len(self.outbox):
            return int(COLLECT_WAIT_S * 1000)
        return 100

    def _seek_back(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``offset`` again later (a record polled beyond the in-flight bound)."""
        try:
            self.consumer.seek(tp, offset)
        except KafkaError as error:  # revoked meanwhile: the new owner reads it
            logger.debug("%s: cannot seek %s back to %d: %s", self.name, tp, offset, error)

    def _receive(self, tp: TopicPartition, message, now: float) -> PendingLetter | None:
        """Hold one record; a valid event is batched, an invalid one gets its dead letter."""
        try:
            event = decode_new_item_event(
                message.value,
                self.kafka.max_event_bytes,
                self.settings.max_text_chars,
                self.kafka.unknown_event_fields,
                self.kafka.max_future_skew_s,
            )
            error = None
        except InvalidEventError as invalid:
            event, error = None, invalid
        ticket = self.ledger.receive(
            tp.partition,
            message.offset,
            message.key,
            message.value,
            message.timestamp,
            None if event is None else event.item_id,
        )
        with self._stats_lock:
            self.stats.events_in += 1
            if self.stats.first_event_at is None:
                self.stats.first_event_at = time.time()
        if event is not None:
            self.batcher.add((WorkItem(tp.topic, tp.partition, message.offset, event), ticket), now)
            return None
        rejection = Rejection(
            tp.partition, message.offset, error.item_id, error.reason, str(error), "decode"
        )
        return self._letter(ticket, rejection, None)

    def _dispatch(self, draining: bool) -> None:
        """Step 3: due retries first, then released batches, as far as the workers have room."""
        if self.ledger.abandonments != self._abandonments_seen:  # drop abandoned queued events
            self._abandonments_seen = self.ledger.abandonments
            self.batcher.remove(lambda entry: self.ledger.is_current(entry[1]))
        self.dispatcher.resend_due()
        capacity = self.dispatcher.capacity
        if capacity <= 0:
            return
        for batch in self.batcher.ready(float("inf") if draining else time.monotonic(), capacity):
            items, tickets = zip(*batch, strict=True)
            self.dispatcher.submit(Batch(list(items), list(tickets)))

    def _collect(self) -> None:
        """Step 4: account what the dispatcher finished."""
        # Returns as soon as one batch completes; the timeout only bounds how long new records
        # and due partial batches wait, so it trades a little latency for a quiet loop.
        due = self.batcher.seconds_until_due(time.monotonic())
        if due is None or self.dispatcher.capacity <= 0:  # nothing could be dispatched now
            due = COLLECT_WAIT_S
        letters: list[PendingLetter] = []
        for result in self.dispatcher.collect(min(COLLECT_WAIT_S, due)):
            if isinstance(result, Written):
                letters += self._written(result)
            elif isinstance(result, GaveUp):
                letters += self._gave_up(result)
        self.outbox.send(letters)

    def _written(self, result: Written) -> list[PendingLetter]:
        """Complete the written rows' records; the refusals' dead letters to send."""
        outcome = result.outcome
        tickets = {(t.partition, t.offset): t for t in result.batch.tickets}
        now = time.time()
        with self._stats_lock:
            stats = self.stats
            stats.batches += 1
            stats.batch_size.observe(outcome.batch_size)
            stats.encode_seconds.observe(outcome.encode_seconds)
            stats.model_version = outcome.model_version
            stats.refused_model_versions.update(outcome.refused_versions)
            stats.last_write_at = now
            for row in outcome.written:
                stats.proxies_out[row.status] += 1
                stats.rows_by_version[outcome.model_version] += 1
                held = self.ledger.complete(tickets[(row.partition, row.offset)])
                if held is not None and held.timestamp_ms is not None:
                    stats.latency_seconds.observe(max(0.0, now - held.timestamp_ms / 1000))
        letters = []
        for rejection in outcome.rejected:
            ticket = tickets[(rejection.partition, rejection.offset)]
            letter = self._letter(ticket, rejection, outcome.model_version)
            if letter is not None:
                letters.append(letter)
        return letters

    def _gave_up(self, result: GaveUp) -> list[PendingLetter]:
        """Dead letters for the event(s) of a batch the retry policy gave up on."""
        letters = []
        batch = result.batch
        for item, ticket in zip(batch.items, batch.tickets, strict=True):
            rejection = Rejection(
                item.partition,
                item.offset,
                item.event.item_id,
                DeadLetterReason(result.reason),
                f"its worker raised {batch.attempts} times and died {batch.deaths} times "
                f"with it alone: {result.why}",
                "worker",
            )
            letter = self._letter(ticket, rejection, None)
            if letter is not None:
                letters.append(letter)
        return letters

    def _letter(
        self, ticket: Ticket, rejection: Rejection, model_version: str | None
    ) -> PendingLetter | None:
        """The dead letter of a current record; None when the record is no longer current."""
        held = self.ledger.held(ticket)
        if held is None:
            return None
        prefix_bytes = self.kafka.dead_letter_value_bytes
        letter = dead_letter_for(held, rejection, self.kafka.topic, model_version, prefix_bytes)
        return PendingLetter(ticket, letter, dead_letter_key(held.key, prefix_bytes))

    def _complete_dead_letters(self) -> None:
        """Complete the records whose dead letters the broker acknowledged, or that the outbox
        gave up (counted apart: the broker refuses them for good)."""
        for pending in self.outbox.acknowledged():
            if self.ledger.complete(pending.ticket) is not None:
                with self._stats_lock:
                    if pending.delivered:
                        self.stats.dead_letters[pending.letter.reason] += 1
                    else:
                        self.stats.dead_letters_given_up += 1
                    self.stats.last_write_at = time.time()

    # ---------------------------------------------------------------------- committing

    def _commit(self, force: bool = False) -> None:
        """Step 5: commit the ledger's positions of the assigned partitions."""
        now = time.monotonic()
        if not force and now - self._last_commit < self.settings.commit_interval_ms / 1000:
            return
        self._last_commit = now
        positions = self.ledger.commit_positions(self.assigned_partitions())
        if not positions:
            return
        topic = self.kafka.topic
        offsets = {
            TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()
        }
        try:
            self.consumer.commit(offsets, timeout_ms=self.kafka.request_timeout_ms)
        except KafkaError as error:
            with self._stats_lock:
                self.stats.commit_failures += 1
            logger.warning("%s: offset commit failed, retrying later: %r", self.name, error)
            return
        self.ledger.mark_committed(positions)
        with self._stats_lock:
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
            with self._stats_lock:
                committed = self.stats.committed.get(tp.partition)
            done = self.ledger.position(tp.partition) or committed
            if done is not None:
                lag[tp.partition] = max(0, highwater - done)
        with self._stats_lock:
            self.stats.lag.update(lag)

    # ------------------------------------------------------------------------ shutdown

    def _close(self, producer) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception as error:
                logger.warning("%s: closing the consumer: %s", self.name, error)
        try:
            producer.close(timeout=5)
        except Exception as error:
            logger.warning("%s: closing the dead-letter producer: %s", self.name, error)
        self.dispatcher.close()
        logger.info("%s: stopped", self.name)
