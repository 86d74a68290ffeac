"""OffsetTracker: commits cover only contiguous runs of completed records, per partition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from idproxy_stream.stream.offsets import OffsetTracker


def test_commit_waits_for_the_oldest_record_in_flight() -> None:
    tracker = OffsetTracker()
    tickets = [tracker.begin(0, offset) for offset in (10, 11, 12)]
    tracker.complete(tickets[2])
    tracker.complete(tickets[1])
    assert tracker.commit_positions() == {}
    tracker.complete(tickets[0])
    assert tracker.commit_positions() == {0: 13}
    tracker.mark_committed({0: 13})
    assert tracker.commit_positions() == {}


def test_gaps_in_offsets_do_not_block_commits() -> None:
    """Compacted topics and transaction markers leave holes; the prefix is over records seen."""
    tracker = OffsetTracker()
    first, second = tracker.begin(3, 5), tracker.begin(3, 9)
    tracker.complete(first)
    assert tracker.commit_positions() == {3: 6}
    tracker.complete(second)
    assert tracker.commit_positions() == {3: 10}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    slow, fast = tracker.begin(0, 0), tracker.begin(1, 0)
    tracker.complete(fast)
    assert tracker.commit_positions() == {1: 1}
    assert tracker.in_flight(0) == 1 and tracker.in_flight() == 1
    tracker.complete(slow)
    assert tracker.commit_positions() == {0: 1, 1: 1}


def test_completions_from_before_a_revocation_are_stale() -> None:
    tracker = OffsetTracker()
    old = tracker.begin(0, 0)
    tracker.forget([0])
    assert not tracker.is_current(old)
    new = tracker.begin(0, 0)
    assert tracker.complete(old) is False
    assert tracker.commit_positions() == {}
    assert tracker.complete(new) is True
    assert tracker.commit_positions() == {0: 1}


def test_a_partition_that_goes_back_starts_over() -> None:
    """A position reset re-delivers older offsets: earlier in-flight work must not count."""
    tracker = OffsetTracker()
    before = [tracker.begin(0, offset) for offset in (4, 5, 6)]
    again = tracker.begin(0, 5)
    assert all(tracker.complete(ticket) is False for ticket in before)
    assert tracker.complete(again)
    assert tracker.commit_positions() == {0: 6}


def test_completing_twice_is_refused() -> None:
    tracker = OffsetTracker()
    ticket = tracker.begin(2, 0)
    assert tracker.complete(ticket) and not tracker.complete(ticket)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 3), min_size=1, max_size=40).map(
        lambda gaps: [sum(gaps[: i + 1]) + i for i in range(len(gaps))]
    ),
    order=st.randoms(use_true_random=False),
    commit_every=st.integers(1, 5),
)
def test_commit_position_is_always_after_a_completed_prefix(offsets, order, commit_every) -> None:
    tracker = OffsetTracker()
    tickets = [tracker.begin(0, offset) for offset in offsets]
    completion_order = list(range(len(tickets)))
    order.shuffle(completion_order)
    done: set[int] = set()
    committed = None
    for step, index in enumerate(completion_order, 1):
        assert tracker.complete(tickets[index])
        done.add(index)
        if step % commit_every == 0:
            positions = tracker.commit_positions()
            if positions:
                committed = positions[0]
                tracker.mark_committed(positions)
        # Invariant: every record before the commit position is complete, and the position
        # is exactly the offset after the longest completed prefix.
        prefix = 0
        while prefix < len(offsets) and prefix in done:
            prefix += 1
        expected = offsets[prefix - 1] + 1 if prefix else None
        assert tracker.position(0) == expected
        if committed is not None:
            assert all(i in done for i, offset in enumerate(offsets) if offset < committed)
    assert tracker.commit_positions().get(0, committed) == offsets[-1] + 1
    assert tracker.in_flight() == 0
