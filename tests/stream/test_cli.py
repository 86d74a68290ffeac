"""`idproxy demo`, `publish`, `broker`, `stream` from the command line: results, errors, logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from idproxy_stream.cli import app
from idproxy_stream.stream.broker import port_accepts
from idproxy_stream.stream.topics import read_topic
from tests.stream.conftest import (
    TINY_TRAINING,
    Mix,
    event,
    offsets_committed_to_end,
    publish,
    stored_item_ids,
    wait_until,
)

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
    assert "stream ready in" in out  # the stream's start is no longer silent
    assert "published at once, so this is mostly time spent queued" in out
    # the reader's switch-over for one item, as read before and after the stream wrote it
    assert "  before the stream wrote it   fallback" in out
    assert "  after the stream wrote it    proxy (model v1)" in out
    assert "interactions: id (as mature item" in out and "reads now: id)" in out
    # the next-steps reader snippet runs as printed and reads that item's proxy
    lines = out.splitlines()
    start = lines.index("  read proxies in a ranker:") + 1
    snippet = [line[4:] for line in lines[start : start + 6]]
    namespace = {"item_id": int(out.split("what a ranker reads for new item ")[1].split()[0])}
    exec("\n".join(snippet), namespace)
    assert list(namespace["result"].source) == ["proxy"]


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


# ------------------------------------------------- errors a user can cause, before any actor


def config_file(path, config, **sections) -> str:
    """``config`` as YAML with ``sections`` merged in (one level deep)."""
    raw = config.model_dump(mode="json")
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def one_error_line(result) -> str:
    """The failure's message: exit 2, exactly one ``error:`` line, last on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def test_a_metrics_port_in_use_fails_in_seconds_naming_the_setting(tmp_path, stream_config):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = config_file(tmp_path / "c.yaml", stream_config(), stream={"metrics_port": port})
        started = time.monotonic()
        line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert time.monotonic() - started < 20  # before Ray and the workers start (~15 s)
    assert line == (
        f"error: stream.metrics_port: port {port} on 127.0.0.1 is already in use: stop what "
        "listens there or choose another port with stream.metrics_port"
    )


def test_kafka_down_is_one_line_naming_bootstrap_servers(tmp_path, stream_config):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{probe.getsockname()[1]}"
    path = config_file(tmp_path / "c.yaml", stream_config(), kafka={"bootstrap_servers": down})
    for command in (["stream", "--config", path], ["publish", "--config", path]):
        started = time.monotonic()
        line = one_error_line(runner.invoke(app, command))
        assert time.monotonic() - started < 20
        assert line.startswith(f"error: cannot reach Kafka at kafka.bootstrap_servers={down} (")
        assert line.endswith("start the broker (`idproxy broker` runs a local one) or fix "
                             "kafka.bootstrap_servers")  # fmt: skip


def test_a_missing_topic_is_one_line_naming_the_setting(tmp_path, stream_config):
    path = config_file(tmp_path / "c.yaml", stream_config(), kafka={"topic": "never-created"})
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert "topic 'never-created' (kafka.topic) does not exist on" in line
    assert "set kafka.ensure_topics: true" in line


def test_an_unreachable_redis_store_is_one_line_naming_the_url_setting(tmp_path, stream_config):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    store = {"online": "redis", "redis": {"url": url, "socket_timeout_s": 1.0}}
    path = config_file(tmp_path / "c.yaml", stream_config(), store=store)
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert f"Redis at {url}" in line and "store.redis.url" in line


def test_an_unwritable_sqlite_path_is_one_line_naming_the_setting(tmp_path, stream_config):
    (tmp_path / "a-file").write_text("")
    store = {"sqlite": {"path": str(tmp_path / "a-file" / "proxies.sqlite")}}
    path = config_file(tmp_path / "c.yaml", stream_config(), store=store)
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert line.startswith("error: cannot open the sqlite store: ")
    assert line.endswith("choose a writable store.sqlite.path")


def test_an_unknown_pass_through_kafka_setting_is_one_line(tmp_path, stream_config):
    kafka = {"consumer_extra": {"fetch_max_byte": 1}}
    path = config_file(tmp_path / "c.yaml", stream_config(), kafka=kafka)
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert line.startswith("error: kafka.consumer_extra.fetch_max_byte: KafkaConsumer has no")


# ---------------------------------------------------------------------- idproxy broker


def test_the_broker_command_refuses_a_taken_port_at_once() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        line = one_error_line(runner.invoke(app, ["broker", "--port", str(port)]))
    assert time.monotonic() - started < 3
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_the_broker_command_serves_kafka_until_interrupted(tmp_path, stream_config) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = stream_config()  # its own topic names; the command's broker must create them
    kafka = session.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    config = session.model_copy(update={"kafka": kafka})
    path = config_file(tmp_path / "c.yaml", config)
    child = subprocess.Popen(
        [sys.executable, "-m", "idproxy_stream.cli", "broker", "--port", str(port),
         "--config", path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert f"broker on 127.0.0.1:{port}" in child.stdout.readline()  # after topics exist
        assert publish(config, [event(1).to_json_bytes()]).events == 1
        assert len(read_topic(config.kafka, config.kafka.topic)) == 1
    finally:
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr
    assert not port_accepts("127.0.0.1", port)


# ------------------------------------------------------------------- JSON logs, end to end


def test_json_logs_of_the_stream_driver_parse_line_by_line(tmp_path, stream_config) -> None:
    """The driver's stderr, actors' forwarded lines included, is one JSON object per line."""
    config = stream_config(stream={"log_format": "json", "log_level": "INFO"})
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths are short
    path = config_file(tmp_path / "c.yaml", config, ray={"num_cpus": 2, "temp_dir": str(ray_dir)})
    mix = Mix()
    mix.add_valid(range(500_000, 500_010))
    mix.add(b"not json", "not_json")
    publish(config, mix.payloads)
    stderr_path = tmp_path / "stderr.log"
    environ = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "idproxy_stream.cli", "stream", "--config", path],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=environ,
        )  # fmt: skip
        try:
            wait_until(lambda: offsets_committed_to_end(config), 240, "offsets committed")
        finally:
            child.send_signal(signal.SIGTERM)
            stdout, _ = child.communicate(timeout=120)
            shutil.rmtree(ray_dir, ignore_errors=True)
    assert child.returncode == 0, stderr_path.read_text()[-3_000:]
    assert set(stored_item_ids(config)) == mix.valid_item_ids
    lines = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    assert len(lines) >= 3
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a stderr line is not JSON: {line!r}") from None
    assert all(isinstance(record, dict) and "message" in record for record in records)
    messages = " | ".join(record["message"] for record in records)
    assert "started" in messages and "SIGTERM" in messages
    assert {record["pid"] for record in records} - {child.pid}, "no actor's line reached stderr"
    assert "stopped:" in stdout


def test_a_truncated_serving_model_fails_start_up_naming_the_file(
    tmp_path, stream_config, bundle
) -> None:
    """Issue 12 item 5: the start-up check read only the manifest, so every worker died in its
    constructor and every event was dead-lettered while the job looked healthy."""
    model_dir = tmp_path / "model"
    shutil.copytree(bundle.model_dir, model_dir)
    weights = model_dir / "registry" / "versions" / "v1" / "proxy_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    path = config_file(tmp_path / "c.yaml", stream_config(), stream={"model_dir": str(model_dir)})
    started = time.monotonic()
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert time.monotonic() - started < 30
    assert line.startswith(f"error: {weights} does not match the SHA-256 recorded in ")


def test_a_damaged_manifest_or_nan_threshold_fails_start_up_in_one_line(
    tmp_path, stream_config, bundle
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(bundle.model_dir, model_dir)
    manifest = model_dir / "registry" / "versions" / "v1" / "manifest.json"
    original = manifest.read_text()
    manifest.write_text(original[: len(original) // 2])
    path = config_file(tmp_path / "c.yaml", stream_config(), stream={"model_dir": str(model_dir)})
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert line.startswith(f"error: {manifest} cannot be read as JSON")
    manifest.write_text(original)
    index_json = model_dir / "index" / "index.json"
    raw = json.loads(index_json.read_text())
    text = json.dumps({**raw, "void": {**raw["void"], "threshold": "PLACEHOLDER"}})
    index_json.write_text(text.replace('"PLACEHOLDER"', "NaN"))
    line = one_error_line(runner.invoke(app, ["stream", "--config", path]))
    assert line.startswith(f"error: {index_json} cannot be read as JSON")
