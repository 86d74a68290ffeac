"""The Dockerfile, the Prometheus scrape configs and the cluster config, by inspection
(no docker engine or Prometheus runs here)."""

from __future__ import annotations

import re
import tomllib

import yaml

from idproxy_stream.config import StreamConfig, load_config

from .conftest import REPO

DEPLOY = REPO / "deploy"


def test_dockerfile_pins_the_projects_torch_from_a_cuda_index_and_installs_the_package():
    text = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={pinned.split('==')[1]}" in text
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d{3}\n", text)
    torch_install = text.index('pip install "torch==${TORCH_VERSION}" --index-url')
    assert torch_install < text.index('pip install ".[s3]"')  # CUDA torch first, then the rest
    assert "COPY jobs ./jobs" in text and "USER ray" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "artifacts" in ignored


def test_prometheus_scrapes_the_stream_metrics_port_and_rays_metrics():
    kuberay = yaml.safe_load((DEPLOY / "prometheus" / "kuberay.yml").read_text())
    jobs = {job["job_name"]: job for job in kuberay["scrape_configs"]}
    port = StreamConfig().metrics_port
    stream = jobs["idproxy-stream"]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
        "regex": "idproxy-stream",
        "action": "keep",
    } in stream
    assert any(rule.get("replacement") == f"${{1}}:{port}" for rule in stream)
    cluster = yaml.safe_load((DEPLOY / "kuberay" / "raycluster-stream.yaml").read_text())
    assert cluster["metadata"]["name"] == "idproxy-stream"
    ray_port = cluster["spec"]["headGroupSpec"]["rayStartParams"]["metrics-export-port"]
    assert any(
        rule.get("replacement") == f"${{1}}:{ray_port}" for rule in jobs["ray"]["relabel_configs"]
    )
    ray_up = yaml.safe_load((DEPLOY / "prometheus" / "ray-up.yml").read_text())
    targets = {job["job_name"]: job for job in ray_up["scrape_configs"]}
    assert targets["idproxy-stream"]["static_configs"][0]["targets"] == [f"localhost:{port}"]
    assert targets["ray"]["file_sd_configs"][0]["files"] == [
        "/tmp/ray/prom_metrics_service_discovery.json"
    ]


def test_cluster_config_keeps_every_path_on_shared_storage():
    config = load_config(DEPLOY / "idproxy-cluster.yaml", environ={})
    paths = [
        config.stream.model_dir,
        config.extract.output_path,
        config.store.parquet.path,
        config.eval.output_dir,
        *config.encoder.images.allowed_roots,
    ]
    assert all(str(path).startswith("/shared/") for path in paths)
    assert config.ray.address is None  # jobs join the cluster that runs them (RAY_ADDRESS)
    assert config.kafka.sasl_password_env and config.store.redis.password_env


def exported_metrics() -> tuple[set[str], set[str]]:
    """Every sample name (``_total``, ``_bucket`` ... included) and label the stream's collector
    exports, from a snapshot in which every labelled family has a sample."""
    from prometheus_client import CollectorRegistry

    from idproxy_stream.stream.metrics import StreamCollector, StreamStats

    stats = StreamStats(events_in=1, assigned=(0,), lag={0: 1}, refused_model_versions={"v2"})
    stats.proxies_out["ok"] = 1
    stats.rows_by_version["v1"] = 1
    stats.dead_letters["not_json"] = 1
    stats.restarts["worker"] = 1
    registry = CollectorRegistry()
    registry.register(StreamCollector(lambda: stats))
    names, labels = set(), set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


METRIC_NAME = re.compile(r"\bidproxy_[A-Za-z0-9_]+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PROMETHEUS_LABELS = {"instance", "job", "pod"}  # added by the scrape, not the job


def dashboard_expressions() -> list[str]:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "idproxy-stream.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["query"]["query"])
    return expressions


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "idproxy-stream-alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def test_the_dashboard_and_alerts_use_only_metrics_and_labels_the_job_exports():
    names, labels = exported_metrics()
    alerts = alert_expressions()
    expressions = dashboard_expressions() + list(alerts.values())
    used = {name for expression in expressions for name in METRIC_NAME.findall(expression)}
    assert used and used <= names, sorted(used - names)
    grouped = {
        label.strip()
        for expression in expressions
        for clause in GROUPING.findall(expression)
        for label in clause.split(",")
        if label.strip()
    }
    assert grouped <= labels | PROMETHEUS_LABELS, sorted(grouped - labels - PROMETHEUS_LABELS)
    wanted = {  # what issue 12 asks to watch
        "idproxy_stream_ready",
        "idproxy_stream_consumer_lag",
        "idproxy_stream_dead_letters_total",
        "idproxy_stream_sink_errors_total",
        "idproxy_stream_actor_restarts_total",
        "idproxy_stream_refused_model_versions_total",
    }
    assert wanted <= {n for e in alerts.values() for n in METRIC_NAME.findall(e)}
    panels = {n for e in dashboard_expressions() for n in METRIC_NAME.findall(e)}
    assert wanted - {"idproxy_stream_refused_model_versions_total"} <= panels
    assert "idproxy_stream_end_to_end_latency_seconds_bucket" in panels
