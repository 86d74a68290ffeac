"""The command line's contract: a user's mistake is one line naming the setting, exit code 2.

Cases that need a broker, a model bundle or Ray are in ``tests/stream/test_cli.py``.
"""

from __future__ import annotations

import json
import time

import yaml
from tests_helpers import TINY_TRAINING
from typer.testing import CliRunner

from idproxy_stream.cli import app, hoist_global_options
from idproxy_stream.events import new_item_event_schema

runner = CliRunner()


def one_error_line(result) -> str:
    """The failure's message: exit 2, exactly one ``error:`` line, last on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def write_config(path, sections: dict) -> str:
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def test_a_missing_model_bundle_is_one_line_and_exit_2_within_seconds(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", {"stream": {"model_dir": str(tmp_path / "none")}})
    started = time.monotonic()
    result = runner.invoke(app, ["stream", "--config", config])
    line = one_error_line(result)
    assert time.monotonic() - started < 15
    assert f"{tmp_path / 'none'} holds no trained model bundle" in line
    assert "run `idproxy train --config ...` first, or set stream.model_dir" in line


def test_a_wrong_data_path_is_one_line_naming_the_setting(tmp_path) -> None:
    nowhere = tmp_path / "ml-100k"
    config = write_config(tmp_path / "c.yaml", {"data": {"name": "ml-100k", "path": str(nowhere)}})
    line = one_error_line(runner.invoke(app, ["train", "--config", config]))
    assert line.startswith(f"error: data.path (--path): folder {nowhere} does not exist; pass")
    line = one_error_line(
        runner.invoke(app, ["ranker", "train", "--dataset", "ml-100k", "--path", str(nowhere)])
    )
    assert "data.path (--path)" in line


def test_a_missing_config_file_is_one_line(tmp_path) -> None:
    line = one_error_line(runner.invoke(app, ["encode", "--config", str(tmp_path / "x.yaml")]))
    assert (
        line
        == f"error: config file {tmp_path / 'x.yaml'} does not exist: pass an existing YAML file"
    )


def test_debug_adds_the_traceback_to_the_same_line(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", {"stream": {"model_dir": str(tmp_path / "none")}})
    result = runner.invoke(app, ["stream", "--config", config, "--debug"])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_global_options_may_stand_after_the_command() -> None:
    args = ["train", "--config", "c.yaml", "--log-level", "DEBUG", "--debug", "--log-format=json"]
    hoisted = hoist_global_options(args)
    assert hoisted == [
        "--log-level",
        "DEBUG",
        "--debug",
        "--log-format=json",
        "train",
        "--config",
        "c.yaml",
    ]
    assert hoist_global_options(["publish", "--", "--debug"]) == ["publish", "--", "--debug"]
    assert runner.invoke(app, ["version", "--log-level", "debug"]).exit_code == 0


def test_an_unknown_log_level_is_a_usage_error() -> None:
    result = runner.invoke(app, ["--log-level", "LOUD", "version"])
    assert result.exit_code == 2
    assert "--log-level" in result.output


def test_schema_prints_the_new_item_event_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == new_item_event_schema()


def test_ranker_train_shows_each_epoch_and_its_json_logs_parse_line_by_line(tmp_path) -> None:
    sections = {**TINY_TRAINING, "ranker": {"epochs": 2, "patience": 5}}
    config = write_config(tmp_path / "c.yaml", sections)
    result = runner.invoke(
        app, ["ranker", "train", "--config", config, "--seeds", "0", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.strip().splitlines()]
    messages = [record["message"] for record in records]
    assert any(m.startswith("ranker epoch 1/2: valid AUC") for m in messages), messages
    assert any(m.startswith("ranker epoch 2/2: valid AUC") for m in messages), messages
    assert {"ts", "level", "logger", "pid"} <= set(records[0])
    assert "warm-test AUC" in result.stdout  # the result on stdout, progress on stderr


def test_a_misspelt_config_key_is_one_line_naming_file_and_key(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", {"stream": {"num_wrkers": 2}})
    line = one_error_line(runner.invoke(app, ["train", "--config", config]))
    assert line == (
        f"error: invalid configuration in {config}: unknown key 'stream.num_wrkers': remove it "
        "or check its spelling"
    )


def test_with_json_logs_the_error_is_one_json_line_too(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", {"stream": {"model_dir": str(tmp_path / "none")}})
    result = runner.invoke(app, ["--log-format", "json", "stream", "--config", config])
    assert result.exit_code == 2
    records = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert records[-1]["level"] == "ERROR" and records[-1]["exit_code"] == 2
    assert "holds no trained model bundle" in records[-1]["message"]


def test_a_suite_without_its_data_is_one_line_naming_data_root_and_files(tmp_path) -> None:
    nowhere = tmp_path / "data"
    result = runner.invoke(
        app, ["eval", "--suite", "dev", "--data-root", str(nowhere), "--output", str(tmp_path)]
    )
    line = one_error_line(result)
    assert line.startswith(f"error: --data-root {nowhere} lacks files the suite needs (ml-100k:")
    line = one_error_line(runner.invoke(app, ["eval", "--suite", "nope"]))
    assert "no suite named 'nope'" in line
