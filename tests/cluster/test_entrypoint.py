"""``cluster/entrypoint.py``: a job's config joins the cluster that runs it."""

from __future__ import annotations

from pathlib import Path

import yaml

from idproxy_stream.cluster.entrypoint import job_config


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_submitted_job_joins_its_cluster_instead_of_starting_a_local_ray(tmp_path):
    path = write(tmp_path, {"ray": {"num_cpus": 2, "temp_dir": str(tmp_path)}})
    config = job_config(path, environ={"RAY_ADDRESS": "10.0.0.5:6379"})
    assert config.ray.address == "10.0.0.5:6379"
    assert config.ray.num_cpus is None and config.ray.temp_dir is None  # Ray refuses them


def test_outside_a_job_or_with_an_explicit_address_the_config_is_kept(tmp_path):
    local = write(tmp_path, {"ray": {"num_cpus": 2}})
    assert job_config(local, environ={}).ray.num_cpus == 2
    explicit = write(tmp_path, {"ray": {"address": "ray://gateway:10001"}})
    joined = job_config(explicit, environ={"RAY_ADDRESS": "10.0.0.5:6379"})
    assert joined.ray.address == "ray://gateway:10001"


def test_environment_overrides_still_apply(tmp_path):
    path = write(tmp_path, {})
    config = job_config(path, environ={"RAY_ADDRESS": "h:1", "IDPROXY__BACKFILL__NUM_WORKERS": "6"})
    assert config.backfill.num_workers == 6 and config.ray.address == "h:1"
