"""Backpressure: pause at the bound, resume at the low-water mark, never poll past the bound."""

from __future__ import annotations

import pytest

from idproxy_stream.stream.backpressure import Backpressure


def test_pauses_at_the_bound_and_resumes_only_below_the_low_water_mark() -> None:
    gate = Backpressure(max_in_flight=10, resume_below=4)
    assert [gate.update(n) for n in (3, 9, 10, 11, 7, 5)] == [None, None, "pause"] + [None] * 3
    assert gate.paused
    assert gate.update(4) == "resume" and not gate.paused
    assert gate.update(10) == "pause"
    assert (gate.pauses, gate.resumes, gate.peak_in_flight) == (2, 1, 11)


@pytest.mark.parametrize(("in_flight", "expected"), [(0, 8), (5, 5), (9, 1), (10, 1)])
def test_poll_budget_leaves_room_only_up_to_the_bound(in_flight, expected) -> None:
    gate = Backpressure(max_in_flight=10, resume_below=4)
    assert gate.poll_budget(in_flight, max_poll_records=8) == expected


def test_a_low_water_mark_at_the_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="resume_below"):
        Backpressure(max_in_flight=10, resume_below=10)
