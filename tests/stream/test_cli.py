"""`idproxy demo` and `idproxy publish` from the command line (in-process runner)."""

from __future__ import annotations

import shutil

import yaml
from typer.testing import CliRunner

from idproxy_stream.cli import app
from idproxy_stream.stream.topics import read_topic
from tests.stream.conftest import TINY_TRAINING

runner = CliRunner()


def test_demo_streams_new_items_into_the_store_and_reports(tmp_path, bundle, ray_cluster):
    work_dir = tmp_path / "demo"
    shutil.copytree(bundle.model_dir, work_dir / "model")  # reused, not retrained
    config = {
        **TINY_TRAINING,
        "reader": {"maturity_threshold": bundle.mature_threshold},
        "stream": {
            "num_workers": 1,
            "worker_num_cpus": 0.25,
            "sink_num_cpus": 0.1,
            "source_num_cpus": 0.1,
        },
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(
        app, ["demo", "--config", str(path), "--work-dir", str(work_dir), "--items", "20"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "reusing the model bundle" in out
    assert "proxies      20 rows" in out
    assert "dead letters 2 (item_already_mature 1, not_json 1)" in out
    assert out.count("mature item ") >= 3  # nearest mature items of the first new items


def test_publish_sends_only_new_catalogue_items(tmp_path, stream_config, bundle) -> None:
    config = stream_config()
    raw = config.model_dump(mode="json")
    path = tmp_path / "publish.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["publish", "--config", str(path), "--limit", "7"])
    assert result.exit_code == 0, result.output
    assert "published 7 events" in result.output
    assert len(read_topic(config.kafka, config.kafka.topic)) == 7
    bad = runner.invoke(app, ["publish", "--config", str(path), "--images", "gif"])
    assert bad.exit_code == 2
