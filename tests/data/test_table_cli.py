"""`idproxy data export` writes the table format from another loader; `idproxy data check`
loads it back through the config it wrote; a bad table is one error line and exit 2."""

from __future__ import annotations

import csv
import json

import yaml
from typer.testing import CliRunner

from idproxy_stream.cli import app

runner = CliRunner()

SYNTHETIC = {
    "data": {"synthetic": {"num_items": 80, "num_users": 40, "interactions_per_user": 10}},
    "split": {"warm_min_interactions": 8, "cold_min": 4, "cold_max": 8, "warmup_size": 1},
}


def test_export_then_check_loads_the_same_counts_and_a_bad_label_is_one_line(tmp_path):
    source = tmp_path / "synthetic.yaml"
    source.write_text(yaml.safe_dump(SYNTHETIC))
    out = tmp_path / "tables"
    exported = runner.invoke(
        app, ["data", "export", "--config", str(source), "--output", str(out), "--format", "csv"]
    )
    assert exported.exit_code == 0, exported.output
    assert "wrote 80 items" in exported.stdout

    written = yaml.safe_load((out / "idproxy-data.yaml").read_text())
    assert written["data"]["name"] == "table"
    assert written["encoder"]["images"]["allowed_roots"] == [str((out / "images").resolve())]
    table_config = tmp_path / "table.yaml"
    table_config.write_text(yaml.safe_dump({**written, "split": SYNTHETIC["split"]}))
    checked = runner.invoke(app, ["data", "check", "--config", str(table_config)])
    assert checked.exit_code == 0, checked.output
    summary, counts = (json.loads(line) for line in checked.stdout.strip().splitlines())
    assert summary["name"] == "table" and summary["interactions"] == 40 * 10
    source_check = runner.invoke(app, ["data", "check", "--config", str(source)])
    assert json.loads(source_check.stdout.strip().splitlines()[1]) == counts

    with (out / "interactions.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    rows[3][rows[0].index("label")] = "2"  # data row 3
    with (out / "interactions.csv").open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    failed = runner.invoke(app, ["data", "check", "--config", str(table_config)])
    assert failed.exit_code == 2
    error_lines = failed.stderr.strip().splitlines()
    assert error_lines == [
        f"error: {out / 'interactions.csv'}: column 'label' row 3: label 2 is not 0 or 1 (for "
        "ratings set data.table.label_column: rating and data.click_threshold)"
    ]
