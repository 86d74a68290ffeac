"""The KubeRay manifests parse as the ``ray.io/v1`` CRD shapes, and place work as intended.

Required fields follow the KubeRay v1 API types: RayCluster ``spec.headGroupSpec``
(``rayStartParams``, ``template``) and ``spec.workerGroupSpecs[]`` (``groupName``,
``minReplicas``, ``maxReplicas``, ``rayStartParams``, ``template``); RayJob ``spec.entrypoint``
and ``spec.rayClusterSpec`` (the same cluster shape).
"""

from __future__ import annotations

import json

import pytest
import yaml

from idproxy_stream.config import load_config

from .conftest import REPO

KUBERAY = REPO / "deploy" / "kuberay"
CONFIG = load_config(REPO / "deploy" / "idproxy-cluster.yaml", environ={})


def manifest(name: str) -> dict:
    documents = list(yaml.safe_load_all((KUBERAY / name).read_text()))
    assert len(documents) == 1
    return documents[0]


def cluster_specs() -> list[tuple[str, dict]]:
    stream = manifest("raycluster-stream.yaml")
    specs = [("raycluster-stream.yaml", stream["spec"])]
    for name in ("rayjob-train.yaml", "rayjob-backfill.yaml"):
        specs.append((name, manifest(name)["spec"]["rayClusterSpec"]))
    return specs


def advertised(group: dict) -> dict[str, float]:
    """Custom resources a group's ``ray start`` advertises (KubeRay's quoted JSON form)."""
    raw = group["rayStartParams"].get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def containers(group: dict) -> list[dict]:
    found = group["template"]["spec"]["containers"]
    assert found and all("image" in c and "name" in c for c in found)
    return found


def gpus(group: dict) -> int:
    limits = containers(group)[0].get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_kinds_and_api_versions():
    assert manifest("raycluster-stream.yaml")["kind"] == "RayCluster"
    for name in ("raycluster-stream.yaml", "rayjob-train.yaml", "rayjob-backfill.yaml"):
        document = manifest(name)
        assert document["apiVersion"] == "ray.io/v1"
        assert document["metadata"]["name"].startswith("idproxy-")
    for name in ("rayjob-train.yaml", "rayjob-backfill.yaml"):
        assert manifest(name)["kind"] == "RayJob"


@pytest.mark.parametrize(
    ("name", "spec"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_cluster_spec_has_the_required_crd_fields(name, spec):
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and containers(head)
    groups = spec["workerGroupSpecs"]
    assert [group["groupName"] for group in groups] == ["cpu", "gpu"]
    for group in groups:
        assert isinstance(group["rayStartParams"], dict) and containers(group)
        counts = group["minReplicas"], group["replicas"], group["maxReplicas"]
        assert all(isinstance(count, int) for count in counts)
        assert counts[0] <= counts[1] <= counts[2], f"{name}: {group['groupName']} {counts}"
    assert spec["rayVersion"].startswith("2.")


@pytest.mark.parametrize(
    ("name", "spec"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_gpu_group_has_gpu_limits_and_tolerations_and_cpu_work_stays_off_it(name, spec):
    head, (cpu, gpu) = spec["headGroupSpec"], spec["workerGroupSpecs"]
    resources = containers(gpu)[0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    tolerations = gpu["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert gpus(head) == gpus(cpu) == 0
    for role in ("source", "sink"):  # what the config asks sources and sinks to land on
        wanted = set(getattr(CONFIG.cluster, f"{role}_resources"))
        assert wanted <= set(advertised(head)) and wanted <= set(advertised(cpu))
        assert not wanted & set(advertised(gpu)), f"{name}: {role}s could land on GPU pods"


@pytest.mark.parametrize("name", ["rayjob-train.yaml", "rayjob-backfill.yaml"])
def test_rayjob_runs_existing_job_entrypoints_with_the_mounted_config(name):
    spec = manifest(name)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] == "K8sJobMode"
    steps = [step.split() for step in spec["entrypoint"].split("&&")]
    for step in steps:
        assert step[0] == "python" and step[1].startswith("/home/ray/app/jobs/")
        assert (REPO / "jobs" / step[1].rsplit("/", 1)[1]).is_file()
        assert step[step.index("--config") + 1] == "/config/idproxy.yaml"
    resources = json.loads(spec["entrypointResources"])
    assert set(resources) <= set(advertised(spec["rayClusterSpec"]["workerGroupSpecs"][0]))
    volumes = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "idproxy-config"}} in volumes


def test_pods_that_write_to_redis_get_the_password_the_config_names():
    for _name, spec in cluster_specs():
        for group in (spec["headGroupSpec"], spec["workerGroupSpecs"][0]):
            names = {variable["name"] for variable in containers(group)[0].get("env", [])}
            assert CONFIG.store.redis.password_env in names


def test_stream_cluster_gives_the_drain_time_to_ray_job_stop():
    head = manifest("raycluster-stream.yaml")["spec"]["headGroupSpec"]
    env = {v["name"]: v.get("value") for v in containers(head)[0]["env"]}
    assert float(env["RAY_JOB_STOP_WAIT_TIME_S"]) > CONFIG.stream.drain_timeout_s
    ports = {port["containerPort"] for port in containers(head)[0]["ports"]}
    assert CONFIG.stream.metrics_port in ports
