"""``idproxy backfill``: argument errors exit with code 2 and say what to fix."""

from __future__ import annotations

from typer.testing import CliRunner

from idproxy_stream.cli import app

runner = CliRunner()


def test_bad_source_or_offsets_exit_2_before_any_work():
    bad_source = runner.invoke(app, ["backfill", "--source", "parquet"])
    assert bad_source.exit_code == 2 and "catalogue or kafka" in bad_source.output
    bad_end = runner.invoke(app, ["backfill", "--source", "kafka", "--end", "0-100"])
    assert bad_end.exit_code == 2 and "PARTITION:OFFSET" in bad_end.output
