"""``ray_cluster.yaml`` against the schema shipped in the installed ``ray``, and its layout."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from idproxy_stream.cluster.placement import placement
from idproxy_stream.config import load_config

from .conftest import REPO

SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
CPU_TYPES = {"head", "cpu_worker"}


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema_and_rays_own_checks(launcher):
    jsonschema.validate(launcher, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(launcher)))  # what `ray up` runs
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_a10g"]["resources"]["encoder_a10g"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)  # the check does catch a malformed node type


def test_sources_and_sinks_can_only_land_on_cpu_node_types(launcher):
    config = load_config(REPO / "deploy" / "idproxy-cluster.yaml", environ={})
    types = launcher["available_node_types"]
    for role in ("source", "sink"):
        wanted = set(placement(config.cluster, role)["resources"])
        offering = {name for name, spec in types.items() if wanted <= set(spec["resources"])}
        assert offering == CPU_TYPES, role
    gpu_types = set(types) - CPU_TYPES
    assert gpu_types == {"gpu_a10g", "gpu_l4"}
    for name in gpu_types:  # GPU instance families, autoscaled from zero
        spec = types[name]
        assert spec["node_config"]["InstanceType"].startswith(("g5.", "g6."))
        assert spec["min_workers"] == 0 < spec["max_workers"]
        assert [resource for resource in spec["resources"] if resource.startswith("encoder_")]
    assert config.stream.worker_num_gpus == 1 and config.backfill.worker_num_gpus == 1


def test_a_worker_type_is_added_and_targeted_by_config_alone(launcher):
    grown = copy.deepcopy(launcher)
    grown["available_node_types"]["gpu_h100"] = {
        "min_workers": 0,
        "max_workers": 2,
        "resources": {"encoder_h100": 100},
        "node_config": {"InstanceType": "p5.4xlarge"},
    }
    jsonschema.validate(grown, SCHEMA)
    validate_config(prepare_config(grown))
    config = load_config(
        REPO / "deploy" / "idproxy-cluster.yaml",
        environ={"IDPROXY__CLUSTER__WORKER_RESOURCES": "{encoder_h100: 0.01}"},
    )
    assert placement(config.cluster, "worker") == {"resources": {"encoder_h100": 0.01}}


def test_every_node_installs_this_checkout_over_the_image(launcher):
    assert launcher["docker"]["image"] == kuberay_image()
    assert launcher["file_mounts"] == {"/home/ray/idproxy_stream": "."}
    assert any(
        "pip install" in command and "/home/ray/idproxy_stream" in command
        for command in launcher["setup_commands"]
    )
    assert ".venv" in launcher["rsync_exclude"]
    starts = " ".join(launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"])
    assert starts.count("--metrics-export-port=8080") == 2  # what Prometheus scrapes


def kuberay_image() -> str:
    manifest = yaml.safe_load((REPO / "deploy/kuberay/raycluster-stream.yaml").read_text())
    return manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
