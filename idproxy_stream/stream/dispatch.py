"""The actor dispatcher: batches to worker actors, their output to the sink, failures to the
retry policy.

A batch's flight: ``worker.encode.remote(items)`` on the least-loaded worker (at most
``worker_queue_depth`` calls queued per worker); once its ``ObjectRef`` resolves,
``sink.write.remote(ref)`` (the sink reads the worker's output straight from the object store);
once that resolves, the batch is :class:`Written` with the sink's
:class:`~idproxy_stream.stream.messages.BatchOutcome`. A flight that fails is judged by the
:class:`RetryPolicy`: sent again (possibly after a jittered back-off), or given up
(:class:`GaveUp`, whose event the source dead-letters with its ``reason``).

=================  ==================  ====================  =========================
failure            counts as attempt   delay before resend   also
=================  ==================  ====================  =========================
worker died        no (a death)        none                  the worker is replaced
worker raised      yes                 none
result lost        no                  none
sink died          no                  none                  the sink is replaced
sink raised        no                  jittered back-off     (store or output topic down)
batch overdue      no (a death)        none                  no result in
                                                             ``batch_deadline_s``: its
                                                             actor (frozen worker, stuck
                                                             sink) is replaced
actor cannot start no                  jittered back-off     replaced; after
                                                             ``max_actor_start_failures``
                                                             in a row: the job stops
=================  ==================  ====================  =========================

**An actor that cannot start is the job's fault, not the event's.** A worker or sink whose
constructor raises (a store that refuses its password, an artefact damaged after start-up)
dies on every batch sent to it. Its batches are re-sent uncounted, after a jittered back-off
growing with the failures in a row, and each failure replaces the actor; once one role's actor
failed to start more than ``max_actor_start_failures`` times in a row (a call it ran resets the
count), :class:`ActorsCannotStart` — an :class:`~idproxy_stream.errors.IdProxyError` naming
the role and the constructor's error — ends the lane, and the driver stops the job with it
(``idproxy stream`` exits 2 with that line) rather than rebuilding it forever or
dead-lettering valid events.

**Bisect before dead-lettering.** A batch of several events that failed ``max_attempts`` times
(raises and deaths together) is split in two halves, each sent again with fresh counts; only
a batch of one event is ever given up: after ``max_attempts`` raises (``processing_failed``)
or ``max_worker_deaths`` deaths (``worker_died``; a death — OOM, pre-emption — is not the
event's fault, so it has its own, larger limit). One poisonous event thus costs its
neighbours a few re-sends (about ``max_attempts * log2(batch size)``), never their rows.

Before a batch is sent again, entries whose records are no longer current (their partition
was abandoned meanwhile) are dropped: the one rule is the ledger's, passed in as
``is_current``.

No Ray here: the actors are reached through :class:`ActorSlot`-like objects and an
:class:`ActorRuntime` (:class:`RayRuntime` in the stream; fakes in
``tests/stream/test_dispatch.py``), which also turns Ray's errors into the failures above.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from idproxy_stream.errors import IdProxyError
from idproxy_stream.stream.backoff import Backoff
from idproxy_stream.stream.messages import BatchOutcome, WorkItem
from idproxy_stream.stream.offsets import Ticket

logger = logging.getLogger(__name__)

Role = tuple[str, int]  # ("worker", index) or SINK: whose failures to start are counted
SINK: Role = ("sink", 0)

__all__ = [
    "ActorDispatcher",
    "ActorsCannotStart",
    "Backoff",
    "Batch",
    "GaveUp",
    "RetryPolicy",
    "Written",
]


# ------------------------------------------------------------------------ actor access


class ActorDied(Exception):
    """The actor that was to run the call is gone."""


class ActorInitFailed(ActorDied):
    """The actor that was to run the call never started: its constructor raised."""


class ActorsCannotStart(IdProxyError, RuntimeError):
    """One role's actor failed to start too many times in a row; the job must stop."""


class TaskRaised(Exception):
    """The actor ran the call and raised."""


class ResultLost(Exception):
    """The call's result is lost (not the actor's fault)."""


class ActorRuntime(Protocol):
    """How the dispatcher waits for and reads call results."""

    def wait(self, refs: list[Any], timeout_s: float) -> list[Any]:
        """The refs that are ready, once one is or after ``timeout_s``."""
        ...

    def get(self, ref: Any, timeout_s: float | None = None) -> Any:
        """The call's value; raises :class:`ActorDied`, :class:`TaskRaised` or
        :class:`ResultLost` (also when it takes longer than ``timeout_s``)."""
        ...


class RayRuntime:
    """:class:`ActorRuntime` over Ray object refs."""

    def wait(self, refs: list[Any], timeout_s: float) -> list[Any]:
        import ray

        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # collect every one that is ready, not only the first
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return ready

    def get(self, ref: Any, timeout_s: float | None = None) -> Any:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

        try:
            return ray.get(ref, timeout=timeout_s)
        except GetTimeoutError as error:
            raise ResultLost(f"no result in {timeout_s} s") from error
        except RayActorError as error:
            if error.actor_init_failed:
                raise ActorInitFailed(str(error)) from error
            raise ActorDied(str(error)) from error
        except RayTaskError as error:
            raise TaskRaised(str(error)) from error
        except RayError as error:
            raise ResultLost(str(error)) from error


class Slot(Protocol):
    """One role's current actor (``stream/actors.py: ActorSlot``)."""

    handle: Any
    generation: int
    restarts: int

    def replace(self, generation: int) -> bool: ...

    def stop(self) -> None: ...


# ---------------------------------------------------------------------- retry policy


class Failure(StrEnum):
    WORKER_DIED = "worker died"
    WORKER_RAISED = "worker raised"
    RESULT_LOST = "worker result lost"
    SINK_DIED = "sink died"
    SINK_RAISED = "sink failed"


@dataclass(frozen=True)
class Batch:
    """Events on their way through a worker and the sink, with their tickets (same order).

    attempts: times a worker raised for this batch (count against ``max_attempts``).
    deaths: times its worker died with it (count against ``max_worker_deaths``).
    sink_failures: times the sink raised for this batch (for the back-off).
    """

    items: list[WorkItem]
    tickets: list[Ticket]
    attempts: int = 0
    deaths: int = 0
    sink_failures: int = 0

    def halves(self) -> list[Batch]:
        """The batch split in two, each with fresh failure counts (bisection)."""
        middle = len(self.items) // 2
        return [
            Batch(self.items[:middle], self.tickets[:middle]),
            Batch(self.items[middle:], self.tickets[middle:]),
        ]


@dataclass(frozen=True)
class RetryPolicy:
    """What to do with a batch after a failure (see the module's table and bisection rule)."""

    max_attempts: int
    sink_backoff: Backoff = field(default_factory=Backoff)
    max_worker_deaths: int = 10
    max_actor_start_failures: int = 5
    start_backoff: Backoff = field(default_factory=Backoff)
    batch_deadline_s: float = 120.0

    def after(
        self, failure: Failure, batch: Batch, rng: random.Random
    ) -> list[tuple[Batch, float]] | None:
        """The batches to send (the batch again, or its halves) with the delay before each,
        or None to give the batch (always of one event) up."""
        raised = failure is Failure.WORKER_RAISED
        died = failure is Failure.WORKER_DIED
        sink_failures = batch.sink_failures + (failure is Failure.SINK_RAISED)
        again = replace(
            batch,
            attempts=batch.attempts + raised,
            deaths=batch.deaths + died,
            sink_failures=sink_failures,
        )
        if raised or died:
            if len(batch.items) > 1:
                if again.attempts + again.deaths >= self.max_attempts:
                    return [(half, 0.0) for half in batch.halves()]
            elif again.attempts >= self.max_attempts or again.deaths >= self.max_worker_deaths:
                return None
        delay = self.sink_backoff.delay(sink_failures, rng) if failure is Failure.SINK_RAISED else 0
        return [(again, float(delay))]

    def why_given_up(self, batch: Batch) -> str:
        """The dead-letter reason of a given-up event: raises or deaths."""
        if batch.attempts >= self.max_attempts:
            return "processing_failed"
        return "worker_died"


# -------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Written:
    """The sink durably wrote the batch; ``outcome`` says which rows and which refusals."""

    batch: Batch
    outcome: BatchOutcome


@dataclass(frozen=True)
class GaveUp:
    """The batch (of one event) failed too often; its event gets no proxy.

    reason: ``processing_failed`` (its worker raised ``max_attempts`` times) or
    ``worker_died`` (its worker died ``max_worker_deaths`` times).
    """

    batch: Batch
    why: str
    reason: str = "processing_failed"


@dataclass
class _Flight:
    batch: Batch
    stage: str  # "encode", then "write"
    worker_index: int
    worker_generation: int
    sent_at: float
    sink_generation: int = -1


@dataclass(order=True)
class _Retry:
    not_before: float
    batch: Batch = field(compare=False)


class ActorDispatcher:
    """Worker and sink slots, the flights between them, retries and give-ups.

    Example::

        dispatcher = ActorDispatcher(workers, sink, queue_depth=2,
                                     policy=RetryPolicy(max_attempts=3),
                                     is_current=ledger.is_current)
        dispatcher.submit(Batch(items, tickets))
        for result in dispatcher.collect(wait_s=0.02):   # Written or GaveUp
            ...
    """

    def __init__(
        self,
        workers: list[Slot],
        sink: Slot,
        queue_depth: int,
        policy: RetryPolicy,
        is_current: Callable[[Ticket], bool],
        runtime: ActorRuntime | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.workers = workers
        self.sink = sink
        self.queue_depth = queue_depth
        self.policy = policy
        self.is_current = is_current
        self.runtime = runtime or RayRuntime()
        self.clock = clock
        self.rng = rng or random.Random()
        self.load = [0] * len(workers)
        self.flights: dict[Any, _Flight] = {}
        self.retries: list[_Retry] = []
        self.resends = 0  # batches scheduled to be sent again
        self.sink_errors = 0  # times the sink raised
        self.bisections = 0  # failing batches split in halves
        self.wall_clock = wall_clock
        self._stalls: dict[str, float] = {}  # what stops writing -> wall time it began
        # Worker index -> generation of its replacement, until a batch that replacement
        # encoded is written (a batch encoded before the death proves nothing).
        self._replacements_unproven: dict[int, int] = {}
        # Role (("worker", index) or SINK) -> its actors' failures to start in a row.
        self._start_failures: dict[Role, int] = {}

    # --------------------------------------------------------------------- sending

    @property
    def capacity(self) -> int:
        """Batches the workers can take now."""
        return sum(max(0, self.queue_depth - load) for load in self.load)

    @property
    def busy(self) -> bool:
        """Whether any batch is in flight or waiting to be sent again."""
        return bool(self.flights or self.retries)

    @property
    def stalls(self) -> dict[str, float]:
        """What keeps this lane from writing, with the wall time (s) each began:
        ``sink_failing`` (the sink raised) and ``sink_replaced`` (it died and was replaced),
        each until a batch is written; ``worker_replaced`` (a worker died and was replaced)
        until every replaced worker's replacement has had a batch written — batches encoded
        before the death, still reaching the sink, do not count (a worker whose node is gone
        may wait for a node with its resources for minutes). Only while a batch waits: an idle
        lane claims nothing. For readiness (``metrics.readiness``)."""
        return dict(self._stalls) if self.busy else {}

    def _stalled(self, stall: str) -> None:
        self._stalls.setdefault(stall, self.wall_clock())

    def submit(self, batch: Batch) -> None:
        """Send ``batch`` to the least-loaded worker (callers respect :attr:`capacity`)."""
        index = min(range(len(self.workers)), key=self.load.__getitem__)
        slot = self.workers[index]
        ref = slot.handle.encode.remote(batch.items)
        self.flights[ref] = _Flight(batch, "encode", index, slot.generation, self.clock())
        self.load[index] += 1

    def resend_due(self) -> None:
        """Send the retries that are due, while workers have room; stale entries dropped."""
        now = self.clock()
        self.retries.sort()
        while self.retries and self.retries[0].not_before <= now and self.capacity > 0:
            batch = self.retries.pop(0).batch
            live = [
                (item, ticket)
                for item, ticket in zip(batch.items, batch.tickets, strict=True)
                if self.is_current(ticket)
            ]
            if live:
                items, tickets = zip(*live, strict=True)
                self.submit(replace(batch, items=list(items), tickets=list(tickets)))

    # ------------------------------------------------------------------- collecting

    def collect(self, wait_s: float) -> list[Written | GaveUp]:
        """Advance every flight that resolved within ``wait_s``; returns finished batches."""
        if not self.busy:
            self._stalls.clear()  # nothing waits: a later failure starts its own clock
            self._replacements_unproven.clear()
        if not self.flights:
            return []
        finished: list[Written | GaveUp] = []
        self._expire_overdue(finished)
        for ref in self.runtime.wait(list(self.flights), wait_s):
            flight = self.flights.pop(ref)
            if flight.stage == "encode":
                self._encoded(ref, flight, finished)
            else:
                self._written(ref, flight, finished)
        return finished

    def _expire_overdue(self, finished: list) -> None:
        """Flights past ``batch_deadline_s`` in their stage: the actor holding one (frozen,
        SIGSTOPped, stuck) is replaced and the batch re-sent as after a death, so a partition's
        commits never wait on it for longer than the deadline."""
        now = self.clock()
        overdue = [
            (ref, flight)
            for ref, flight in self.flights.items()
            if now - flight.sent_at > self.policy.batch_deadline_s
        ]
        for ref, flight in overdue:
            del self.flights[ref]
            error = TimeoutError(
                f"no result in stream.batch_deadline_s={self.policy.batch_deadline_s:g} s"
            )
            if flight.stage == "encode":
                self.load[flight.worker_index] -= 1
                self._worker_died(flight, error, finished)
            else:
                self._sink_died(flight, error, finished)

    def _worker_died(self, flight: _Flight, error: Exception, finished: list) -> None:
        """The flight's worker is gone (or given up on): replace it once, re-send the batch."""
        slot = self.workers[flight.worker_index]
        if slot.replace(flight.worker_generation):
            self._replacements_unproven[flight.worker_index] = slot.generation
            self._stalled("worker_replaced")
        self._failed(flight.batch, Failure.WORKER_DIED, error, finished)

    def _sink_died(self, flight: _Flight, error: Exception, finished: list) -> None:
        """The flight's sink is gone (or given up on): replace it once, re-send the batch."""
        if self.sink.replace(flight.sink_generation):
            self._stalled("sink_replaced")
        self._failed(flight.batch, Failure.SINK_DIED, error, finished)

    def _encoded(self, ref: Any, flight: _Flight, finished: list) -> None:
        self.load[flight.worker_index] -= 1
        try:
            self.runtime.get(ref)
        except ActorInitFailed as error:
            slot = self.workers[flight.worker_index]
            role = ("worker", flight.worker_index)
            self._cannot_start(slot, flight.worker_generation, role, flight.batch, error)
            return
        except ActorDied as error:
            self._worker_died(flight, error, finished)
            return
        except TaskRaised as error:
            self._failed(flight.batch, Failure.WORKER_RAISED, error, finished)
            return
        except ResultLost as error:
            self._failed(flight.batch, Failure.RESULT_LOST, error, finished)
            return
        self._start_failures.pop(("worker", flight.worker_index), None)  # it ran a call
        flight.stage = "write"
        flight.sink_generation = self.sink.generation
        flight.sent_at = self.clock()  # the write's own deadline
        self.flights[self.sink.handle.write.remote(ref)] = flight

    def _written(self, ref: Any, flight: _Flight, finished: list) -> None:
        try:
            outcome: BatchOutcome = self.runtime.get(ref)
        except ActorInitFailed as error:
            self._cannot_start(self.sink, flight.sink_generation, SINK, flight.batch, error)
            return
        except ActorDied as error:
            self._sink_died(flight, error, finished)
            return
        except (TaskRaised, ResultLost) as error:
            self.sink_errors += 1
            self._stalled("sink_failing")
            self._failed(flight.batch, Failure.SINK_RAISED, error, finished)
            return
        self._start_failures.pop(SINK, None)
        self._cleared_by(flight)
        finished.append(Written(flight.batch, outcome))

    def _cannot_start(
        self, slot: Slot, generation: int, role: Role, batch: Batch, error: Exception
    ) -> None:
        """The actor in ``slot`` (``role``: ``("worker", index)`` or :data:`SINK`) never
        started: replace it (once per generation), re-send ``batch`` uncounted after a
        back-off, or raise :class:`ActorsCannotStart` past the limit."""
        kind = role[0]
        if slot.replace(generation):
            failures = self._start_failures.get(role, 0) + 1
            self._start_failures[role] = failures
            self._stalled(f"{kind}_cannot_start")
            if failures > self.policy.max_actor_start_failures:
                raise ActorsCannotStart(
                    f"the {kind} actor failed to start {failures} times in a row "
                    f"({constructor_error(str(error))}): fix what its constructor needs, then "
                    "start the job again"
                )
        delay = self.policy.start_backoff.delay(self._start_failures.get(role, 1), self.rng)
        logger.warning(
            "the %s %d actor could not start (%s): re-sending a batch of %d in %.1f s",
            kind,
            role[1],
            constructor_error(str(error)),
            len(batch.items),
            delay,
        )
        self.resends += 1
        self.retries.append(_Retry(self.clock() + delay, batch))

    def _cleared_by(self, flight: _Flight) -> None:
        """A batch got through: the sink writes; its worker's replacement (if it encoded the
        batch) works; once every replacement has, no worker stall is left."""
        for stall in ("sink_failing", "sink_replaced", "sink_cannot_start", "worker_cannot_start"):
            self._stalls.pop(stall, None)
        proven = self._replacements_unproven.get(flight.worker_index)
        if proven is not None and flight.worker_generation >= proven:
            del self._replacements_unproven[flight.worker_index]
        if not self._replacements_unproven:
            self._stalls.pop("worker_replaced", None)

    def _failed(self, batch: Batch, failure: Failure, error: Exception, finished: list) -> None:
        decision = self.policy.after(failure, batch, self.rng)
        if decision is None:
            why = f"{failure}: {error}"
            given_up = replace(
                batch,
                attempts=batch.attempts + (failure is Failure.WORKER_RAISED),
                deaths=batch.deaths + (failure is Failure.WORKER_DIED),
            )
            logger.error(
                "an event failed %d times and its worker died %d times with it (%s): "
                "dead-lettering it",
                given_up.attempts,
                given_up.deaths,
                why,
            )
            finished.append(GaveUp(given_up, why, self.policy.why_given_up(given_up)))
            return
        if len(decision) > 1:
            self.bisections += 1
            logger.warning(
                "a batch of %d failed %d times (%s: %s): splitting it in %s",
                len(batch.items),
                batch.attempts + batch.deaths + 1,
                failure,
                error,
                " + ".join(str(len(half.items)) for half, _ in decision),
            )
        for again, delay in decision:
            self.resends += 1
            if len(decision) == 1:
                log = logger.error if failure is Failure.SINK_RAISED else logger.warning
                log(
                    "re-sending a batch of %d in %.1f s (%s: %s)",
                    len(batch.items),
                    delay,
                    failure,
                    error,
                )
            self.retries.append(_Retry(self.clock() + delay, again))

    def close(self, timeout_s: float = 30.0) -> None:
        """Close the sink (its store and producer), then end every actor."""
        try:
            self.runtime.get(self.sink.handle.close.remote(), timeout_s)
        except (ActorDied, TaskRaised, ResultLost) as error:
            logger.warning("closing the sink: %s", error)
        for slot in [*self.workers, self.sink]:
            slot.stop()


def constructor_error(message: str, limit: int = 300) -> str:
    """The constructor's own error from Ray's creation-failure message: its last non-empty
    line (``SomeError: what went wrong``), at most ``limit`` characters."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else "no message"
    return last if len(last) <= limit else last[: limit - 3] + "..."
