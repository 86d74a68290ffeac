"""Dynamic batching: flush at the size limit, or once the oldest item waited long enough."""

from __future__ import annotations

from idproxy_stream.stream.batching import DynamicBatcher


def test_full_batches_leave_at_once() -> None:
    batcher = DynamicBatcher(max_batch_size=3, max_wait_s=10.0)
    for item in range(7):
        batcher.add(item, now=0.0)
    assert batcher.ready(now=0.0) == [[0, 1, 2], [3, 4, 5]]
    assert len(batcher) == 1


def test_a_partial_batch_leaves_when_its_oldest_item_is_due() -> None:
    batcher = DynamicBatcher(max_batch_size=8, max_wait_s=0.02)
    batcher.add("a", now=1.000)
    batcher.add("b", now=1.015)
    assert batcher.ready(now=1.010) == []
    assert abs(batcher.seconds_until_due(now=1.010) - 0.010) < 1e-9
    assert batcher.ready(now=1.020) == [["a", "b"]]
    assert batcher.seconds_until_due(now=1.020) is None


def test_items_left_after_a_full_batch_keep_their_own_arrival_time() -> None:
    batcher = DynamicBatcher(max_batch_size=2, max_wait_s=1.0)
    batcher.add(1, now=0.0)
    batcher.add(2, now=0.0)
    batcher.add(3, now=5.0)
    assert batcher.ready(now=5.5) == [[1, 2]]
    assert batcher.ready(now=5.9) == []
    assert batcher.ready(now=6.0) == [[3]]


def test_limit_caps_the_batches_released() -> None:
    batcher = DynamicBatcher(max_batch_size=1, max_wait_s=0.0)
    for item in range(4):
        batcher.add(item, now=0.0)
    assert batcher.ready(now=0.0, limit=2) == [[0], [1]]
    assert batcher.drain() == [[2], [3]]


def test_removed_items_never_leave() -> None:
    batcher = DynamicBatcher(max_batch_size=10, max_wait_s=0.0)
    for item in range(6):
        batcher.add(item, now=0.0)
    assert batcher.remove(lambda item: item % 2 == 0) == 3
    assert batcher.ready(now=0.0) == [[0, 2, 4]]
