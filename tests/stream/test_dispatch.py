"""ActorDispatcher and its retry policy, with fake actor handles (no Ray, no Kafka).

A fake worker resolves each ``encode`` call with the next behaviour of its script ("ok",
"raise", "die" or "lost"); a fake sink resolves ``write`` with a BatchOutcome of the batch
(or raises, or dies). A fake clock drives the back-off.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from idproxy_stream.events import NewItemEvent
from idproxy_stream.stream.dispatch import (
    ActorDispatcher,
    ActorsCannotStart,
    Backoff,
    Batch,
    GaveUp,
    RetryPolicy,
    Written,
)
from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.offsets import Ticket
from tests.stream.fakes import (
    FAILURES,
    FakeMethod,
    FakeRef,
    FakeRuntime,
    FakeSink,
    FakeSlot,
    FakeWorker,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(*offsets: int, epoch: int = 0) -> Batch:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    items = [WorkItem("t", 0, o, NewItemEvent(item_id=o, created_at=created)) for o in offsets]
    return Batch(items, [Ticket(0, o, epoch) for o in offsets])


def dispatcher(
    worker_scripts=([],),
    sink_scripts=([],),
    max_attempts=3,
    max_worker_deaths=10,
    is_current=lambda ticket: True,
    queue_depth=2,
    workers=1,
    backoff=Backoff(),
    max_actor_start_failures=5,
    batch_deadline_s=120.0,
):
    clock, runtime = Clock(), FakeRuntime()
    worker_slots = [
        FakeSlot(lambda script: FakeWorker(script, runtime), list(worker_scripts))
        for _ in range(workers)
    ]
    sink = FakeSlot(lambda script: FakeSink(script, runtime), list(sink_scripts))
    return (
        ActorDispatcher(
            worker_slots,
            sink,
            queue_depth,
            RetryPolicy(
                max_attempts,
                backoff,
                max_worker_deaths,
                max_actor_start_failures,
                batch_deadline_s=batch_deadline_s,
            ),
            is_current,
            runtime,
            clock,
            random.Random(0),
        ),
        clock,
    )


def run(dispatch: ActorDispatcher, clock: Clock, max_rounds: int = 50) -> list:
    """Collect and re-send until nothing is in flight; the clock jumps to each retry."""
    finished = []
    for _ in range(max_rounds):
        finished += dispatch.collect(wait_s=0.0)
        if not dispatch.flights and dispatch.retries:
            clock.now = max(clock.now, min(r.not_before for r in dispatch.retries))
        dispatch.resend_due()
        if not dispatch.busy:
            return finished
    raise AssertionError("the dispatcher never settled")


def test_a_batch_whose_worker_keeps_raising_is_given_up_after_max_attempts() -> None:
    # One event: a batch of several is bisected first (see the bisection tests below).
    dispatch, clock = dispatcher(worker_scripts=[["raise"] * 10], max_attempts=3)
    dispatch.submit(batch(1))
    [result] = run(dispatch, clock)
    assert isinstance(result, GaveUp) and result.batch.attempts == 3
    assert "worker raised" in result.why and result.reason == "processing_failed"
    assert dispatch.workers[0].handle.calls == [[1]] * 3
    assert dispatch.resends == 2


def test_a_dead_worker_is_replaced_once_and_all_its_batches_are_written() -> None:
    dispatch, clock = dispatcher(worker_scripts=[["die", "die"], []])
    dispatch.submit(batch(1))
    dispatch.submit(batch(2))  # both queued on the worker that dies
    results = run(dispatch, clock)
    assert dispatch.workers[0].restarts == 1  # two failed calls, one replacement
    assert sorted(r.batch.items[0].offset for r in results if isinstance(r, Written)) == [1, 2]
    assert dispatch.workers[0].handle.calls == [[1], [2]]  # re-sent to the new worker


def test_a_lost_result_is_resent_without_counting_an_attempt() -> None:
    dispatch, clock = dispatcher(worker_scripts=[["lost"] * 5], max_attempts=2)
    dispatch.submit(batch(7))
    [result] = run(dispatch, clock)
    assert isinstance(result, Written) and result.batch.attempts == 0


def test_sink_failures_back_off_with_jitter_and_are_never_given_up() -> None:
    backoff = Backoff(base_s=0.5, max_s=4.0, jitter=0.5)
    dispatch, clock = dispatcher(sink_scripts=[["raise"] * 6], max_attempts=1, backoff=backoff)
    dispatch.submit(batch(3))
    sent_at = []
    for _ in range(40):
        dispatch.collect(wait_s=0.0)
        if dispatch.retries:
            sent_at.append((clock.now, dispatch.retries[0].not_before))
            clock.now = dispatch.retries[0].not_before
        dispatch.resend_due()
        if not dispatch.busy:
            break
    delays = [due - now for now, due in sent_at]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # doubling, capped at max_s
    assert len(delays) == 6
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 1  # jitter
    assert dispatch.sink_errors == 6 and dispatch.sink.handle.writes == 7
    assert not dispatch.busy


def test_a_dead_sink_is_replaced_and_the_batch_encoded_and_written_again() -> None:
    dispatch, clock = dispatcher(sink_scripts=[["die"], []])
    dispatch.submit(batch(4, 5))
    [result] = run(dispatch, clock)
    assert isinstance(result, Written) and dispatch.sink.restarts == 1
    assert dispatch.workers[0].handle.calls == [[4, 5], [4, 5]]
    assert result.batch.attempts == 0


def test_a_retry_sends_only_events_whose_records_are_still_current() -> None:
    stale = {Ticket(0, 2, 0)}
    dispatch, clock = dispatcher(
        worker_scripts=[["raise"]], is_current=lambda ticket: ticket not in stale
    )
    dispatch.submit(batch(1, 2, 3))
    [result] = run(dispatch, clock)
    assert [item.offset for item in result.batch.items] == [1, 3]
    assert [t.offset for t in result.batch.tickets] == [1, 3]


def test_a_retry_whose_records_were_all_abandoned_sends_nothing() -> None:
    dispatch, clock = dispatcher(worker_scripts=[["raise"]], is_current=lambda ticket: False)
    dispatch.submit(batch(1, 2))
    assert run(dispatch, clock) == []
    assert dispatch.workers[0].handle.calls == [[1, 2]]


def test_batches_go_to_the_least_loaded_worker_up_to_the_queue_depth() -> None:
    dispatch, _ = dispatcher(workers=2, queue_depth=2)
    assert dispatch.capacity == 4
    for offset in range(4):
        dispatch.submit(batch(offset))
    assert dispatch.load == [2, 2] and dispatch.capacity == 0
    assert [w.handle.calls for w in dispatch.workers] == [[[0], [2]], [[1], [3]]]


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 10, 60])
def test_backoff_doubles_from_the_base_and_stays_within_the_cap(failures: int) -> None:
    backoff = Backoff(base_s=0.5, max_s=10.0, jitter=0.5)
    delay = backoff.delay(failures, random.Random(failures))
    ceiling = 0.0 if failures == 0 else min(10.0, 0.5 * 2 ** (failures - 1))
    assert ceiling * 0.5 <= delay <= ceiling


class PoisonWorker:
    """A worker whose ``encode`` fails (raises, or dies) for any batch holding ``poison``."""

    def __init__(self, runtime: FakeRuntime, poison: set[int], behaviour: str) -> None:
        self.runtime, self.poison, self.behaviour = runtime, poison, behaviour
        self.calls: list[list[int]] = []
        self.encode = FakeMethod(self._encode)

    def _encode(self, items):
        self.calls.append([item.offset for item in items])
        if self.poison & {item.offset for item in items}:
            return self.runtime.ref(error=FAILURES[self.behaviour](self.behaviour))
        return self.runtime.ref(value=list(items))


def poison_dispatcher(poison: set[int], behaviour: str, **policy):
    dispatch, clock = dispatcher(**policy)
    runtime = dispatch.runtime
    shared = PoisonWorker(runtime, poison, behaviour)
    dispatch.workers[0].make = lambda script: shared
    dispatch.workers[0].handle = shared
    return dispatch, clock, shared


@pytest.mark.parametrize("behaviour", ["raise", "die"])
def test_a_failing_batch_is_bisected_so_only_the_poisonous_event_is_given_up(behaviour) -> None:
    dispatch, clock, worker = poison_dispatcher({5}, behaviour, max_attempts=2)
    dispatch.submit(batch(*range(8)))
    results = run(dispatch, clock, max_rounds=200)
    written = sorted(i.offset for r in results if isinstance(r, Written) for i in r.batch.items)
    given_up = [r for r in results if isinstance(r, GaveUp)]
    assert written == [0, 1, 2, 3, 4, 6, 7]
    assert [[i.offset for i in r.batch.items] for r in given_up] == [[5]]
    expected = "processing_failed" if behaviour == "raise" else "worker_died"
    assert given_up[0].reason == expected
    assert dispatch.bisections == 3  # 8 -> 4 -> 2 -> 1
    assert max(len(call) for call in worker.calls if 5 not in call) <= 4


def test_worker_deaths_do_not_count_as_attempts_and_have_their_own_larger_limit() -> None:
    dispatch, clock, worker = poison_dispatcher({9}, "die", max_attempts=2, max_worker_deaths=5)
    dispatch.submit(batch(9))
    [result] = run(dispatch, clock, max_rounds=100)
    assert isinstance(result, GaveUp) and result.reason == "worker_died"
    assert (result.batch.attempts, result.batch.deaths) == (0, 5)
    assert worker.calls == [[9]] * 5  # five deaths, not max_attempts=2


def test_three_worker_deaths_in_a_row_dead_letter_nothing() -> None:
    """Issue 12 item 4: one worker killed three times in a row with a batch of 64 in flight."""
    dispatch, clock = dispatcher(worker_scripts=[["die"], ["die"], ["die"], []], max_attempts=3)
    dispatch.submit(batch(*range(64)))
    results = run(dispatch, clock, max_rounds=100)
    assert not [r for r in results if isinstance(r, GaveUp)]
    written = sorted(i.offset for r in results if isinstance(r, Written) for i in r.batch.items)
    assert written == list(range(64))


def test_a_failing_sink_is_a_stall_from_its_first_error_until_a_batch_is_written() -> None:
    dispatch, clock = dispatcher(sink_scripts=[["raise", "raise"]], backoff=Backoff(0.5, 4.0, 0))
    wall = Clock()
    dispatch.wall_clock = wall
    dispatch.submit(batch(1))
    wall.now = 100.0
    dispatch.collect(wait_s=0.0)  # encoded: sent to the sink
    dispatch.collect(wait_s=0.0)  # the sink raised
    assert dispatch.stalls == {"sink_failing": 100.0}
    wall.now = 101.0
    clock.now = dispatch.retries[0].not_before
    dispatch.resend_due()
    dispatch.collect(wait_s=0.0)
    dispatch.collect(wait_s=0.0)  # raised again: the stall keeps its start
    assert dispatch.sink_errors == 2 and dispatch.stalls == {"sink_failing": 100.0}
    [result] = run(dispatch, clock)
    assert isinstance(result, Written) and dispatch.stalls == {}


def test_a_replaced_actor_is_a_stall_while_its_batch_waits_and_none_once_idle() -> None:
    dispatch, clock = dispatcher(worker_scripts=[["die"], []])
    dispatch.wall_clock = lambda: 50.0
    dispatch.submit(batch(1))
    dispatch.collect(wait_s=0.0)  # the worker died and was replaced; the batch waits
    assert dispatch.busy and dispatch.stalls == {"worker_replaced": 50.0}
    [result] = run(dispatch, clock)
    assert isinstance(result, Written) and dispatch.stalls == {}
    abandoned, clock = dispatcher(sink_scripts=[["die"], []], is_current=lambda ticket: False)
    abandoned.submit(batch(2))
    run(abandoned, clock)  # the sink died; its batch was abandoned meanwhile, nothing is resent
    assert abandoned.sink.restarts == 1 and not abandoned.busy and abandoned.stalls == {}


def test_a_replaced_worker_stays_a_stall_until_its_replacement_has_a_batch_written() -> None:
    """Issue 12 (a node goes away): a worker's node died, its replacement waits for a node;
    batches the other worker encoded before still reach the sink — the lane is not writing
    through the replaced worker, so the stall stays until the replacement's batch is written."""
    dispatch, clock = dispatcher(worker_scripts=[["die"], []], workers=2)
    dispatch.workers[1] = FakeSlot(lambda script: FakeWorker(script, dispatch.runtime), [[]])
    dispatch.wall_clock = lambda: 70.0
    dispatch.runtime.hold = True  # every call waits until released
    dispatch.submit(batch(1))  # worker 0: will die
    dispatch.submit(batch(2))  # worker 1: fine
    dispatch.runtime.release(keep_holding=True)
    dispatch.collect(wait_s=0.0)  # worker 0 died (replaced); worker 1's batch goes to the sink
    assert dispatch.stalls == {"worker_replaced": 70.0}
    dispatch.runtime.release(keep_holding=True)
    [written] = dispatch.collect(wait_s=0.0)
    assert written.batch.tickets[0].offset == 2
    assert dispatch.stalls == {"worker_replaced": 70.0}, "worker 1's batch proves nothing"
    clock.now = max(r.not_before for r in dispatch.retries)
    dispatch.resend_due()  # batch 1 to the least-loaded worker: the replacement (index 0)
    assert dispatch.flights and next(iter(dispatch.flights.values())).worker_index == 0
    dispatch.runtime.release()
    [again] = run(dispatch, clock)
    assert isinstance(again, Written) and again.batch.tickets[0].offset == 1
    assert dispatch.stalls == {}


def test_a_sink_that_cannot_start_is_rebuilt_with_growing_backoff_then_stops_the_job() -> None:
    """Issue 12 item 6: a sink whose constructor raised (a wrong Redis password) was rebuilt
    hundreds of times and the job looked healthy. Now each failure to start replaces it after
    a growing back-off, its batch is re-sent uncounted (never dead-lettered), and past the
    limit ActorsCannotStart names the role and the constructor's error."""
    error_text = "ray::ProxySink.__init__()\n  ...\nStoreError: store.redis: wrong password"
    dispatch, clock = dispatcher(sink_scripts=[["init"]] * 20, max_actor_start_failures=3)
    runtime = dispatch.runtime
    runtime.ref = lambda value=None, error=None: FakeRef(
        value, None if error is None else type(error)(error_text)
    )
    dispatch.submit(batch(1))
    waits = []
    with pytest.raises(ActorsCannotStart, match="sink actor failed to start 4 times in a row") as e:
        for _ in range(50):
            dispatch.collect(wait_s=0.0)
            if dispatch.retries and not dispatch.flights:
                waits.append(dispatch.retries[0].not_before - clock.now)
                clock.now = dispatch.retries[0].not_before
            dispatch.resend_due()
    assert "StoreError: store.redis: wrong password" in str(e.value)
    assert dispatch.sink.restarts == 4
    assert len(waits) == 3 and waits[0] < waits[1] < waits[2]  # 0.5, 1, 2 s, jittered
    (retry,) = dispatch.retries or [None]
    assert retry is None or (retry.batch.attempts, retry.batch.deaths) == (0, 0)


def test_a_call_an_actor_ran_resets_its_failures_to_start() -> None:
    # Three failures to start, one write, three more: never four in a row, so no stop.
    scripts = [["init"], ["init"], ["init"], ["ok", "init"], ["init"], ["init"], []]
    dispatch, clock = dispatcher(sink_scripts=scripts, max_actor_start_failures=3)
    dispatch.submit(batch(1))
    [first] = run(dispatch, clock)
    dispatch.submit(batch(2))
    [second] = run(dispatch, clock)
    assert isinstance(first, Written) and isinstance(second, Written)
    assert dispatch.sink.restarts == 6 and dispatch.stalls == {}


def test_a_batch_past_its_deadline_has_its_worker_replaced_and_is_resent() -> None:
    """Issue 12 item 7: a SIGSTOPped worker froze its partition's commits for the whole stop.
    A batch with no result ``batch_deadline_s`` after it was sent now counts as its worker's
    death: the worker is replaced and the batch re-sent; the frozen call's late answer is
    ignored."""
    dispatch, clock = dispatcher(batch_deadline_s=30.0)
    dispatch.runtime.hold = True  # the worker never answers
    dispatch.submit(batch(1))
    frozen = dispatch.workers[0].handle
    clock.now = 29.0
    assert dispatch.collect(wait_s=0.0) == [] and dispatch.workers[0].restarts == 0
    clock.now = 31.0
    dispatch.runtime.hold = False  # the replacement answers
    [written] = run(dispatch, clock)
    assert isinstance(written, Written) and written.batch.deaths == 1
    assert dispatch.workers[0].restarts == 1 and dispatch.workers[0].handle is not frozen
    dispatch.runtime.release()  # the frozen call answers at last: nothing happens twice
    assert dispatch.collect(wait_s=0.0) == [] and not dispatch.busy


def test_a_write_past_its_deadline_has_the_sink_replaced() -> None:
    dispatch, clock = dispatcher(batch_deadline_s=30.0)
    dispatch.submit(batch(1))
    dispatch.runtime.hold = True
    clock.now = 20.0
    dispatch.collect(wait_s=0.0)  # encoded at 20 s: the write's deadline counts from here
    clock.now = 45.0
    assert dispatch.collect(wait_s=0.0) == [] and dispatch.sink.restarts == 0
    clock.now = 51.0
    dispatch.runtime.hold = False
    [written] = run(dispatch, clock)
    assert isinstance(written, Written) and dispatch.sink.restarts == 1
