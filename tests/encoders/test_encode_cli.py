import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

from idproxy_stream.cli import app
from idproxy_stream.encoders.features import read_feature_table

JOB_PATH = Path(__file__).resolve().parents[2] / "jobs" / "encode.py"


def job_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("encode_job", JOB_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_encode_command_and_ray_job_entrypoint_write_and_resume_features(
    ray_local, tmp_path, capsys
):
    config = tmp_path / "config.yaml"
    output = tmp_path / "features"
    config.write_text(
        "data:\n"
        "  name: synthetic\n"
        "  synthetic: {num_items: 24, num_users: 5, interactions_per_user: 3, image_size: 16}\n"
        "encoder:\n"
        "  kind: text\n"
        "  layers: {num_clusters: 3, calibration_size: 8}\n"
        "extract: {num_workers: 2, worker_num_cpus: 0.5, batch_size: 8}\n"
    )
    result = CliRunner().invoke(app, ["encode", "--config", str(config), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "24 total, 0 already done, 24 encoded" in result.output
    assert "items/s" in result.output
    table = read_feature_table(output)
    assert sorted(table.item_ids.tolist()) == list(range(1, 25))
    assert table.cluster_states.shape == (24, 3, 384)

    # The job entrypoint runs the same function: everything is already there.
    assert job_main(["--config", str(config), "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["items_encoded"], printed["items_skipped"]) == (0, 24)


def test_encode_with_an_invalid_config_exits_with_the_reason(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("extract: {num_actors: 0}\n")
    result = CliRunner().invoke(app, ["encode", "--config", str(config)])
    assert result.exit_code == 2
    assert "extract.num_actors" in result.output
