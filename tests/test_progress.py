"""ProgressLog: throttled progress lines with counts, share, rate and time left."""

from __future__ import annotations

import logging

from idproxy_stream.progress import ProgressLog


def test_lines_carry_counts_share_and_time_left_and_the_last_one_is_always_logged(caplog):
    logger = logging.getLogger("tests.progress")
    with caplog.at_level(logging.INFO, logger="tests.progress"):
        progress = ProgressLog(logger, "encode", total=200, unit="items", every_s=0.0)
        progress.advance(50)
        progress.advance(150)
        progress.finish()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("encode: 50/200 items (25 %), ") and "s left" in lines[0]
    assert lines[-1].startswith("encode: 200/200 items (100 %), ") and "done in" in lines[-1]
    assert (caplog.records[-1].task, caplog.records[-1].done) == ("encode", 200)


def test_no_line_before_the_interval_has_passed(caplog):
    logger = logging.getLogger("tests.progress")
    with caplog.at_level(logging.INFO, logger="tests.progress"):
        progress = ProgressLog(logger, "backfill", total=None, unit="records", every_s=3_600)
        for _ in range(100):
            progress.advance()
    assert caplog.records == []
    assert progress.done == 100
