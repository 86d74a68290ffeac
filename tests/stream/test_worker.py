"""ProxyWorker: the same features as training, refusals with reasons, hot model swap."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import logging
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.encoders.contract import ContentContract
from idproxy_stream.encoders.extract import extract_features
from idproxy_stream.proxy.model import ProxyModelError
from idproxy_stream.proxy.registry import latest_version, load_version, publish_version
from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings
from tests.stream.conftest import bomb_png, event, png_bytes


@pytest.fixture
def isolated_model_dir(tmp_path, bundle):
    """A private copy of the bundle, so publishing versions does not touch other tests."""
    target = tmp_path / "model"
    shutil.copytree(bundle.model_dir, target)
    return target


@pytest.fixture
def make_worker(stream_config, isolated_model_dir):
    def make(**stream_overrides):
        config = stream_config(stream={"model_dir": str(isolated_model_dir), **stream_overrides})
        return ProxyWorker(WorkerSettings.of(config))

    return make


def work_items(events) -> list[WorkItem]:
    return [WorkItem("t", 0, offset, e) for offset, e in enumerate(events)]


def publish_copy(model_dir, version: str, **manifest_changes) -> None:
    registry = BundleLayout(model_dir).registry
    model, manifest = load_version(registry)
    changed = dataclasses.replace(manifest, version=version, **manifest_changes)
    publish_version(model, changed, registry)


def test_proxies_equal_the_training_feature_path(make_worker) -> None:
    """The worker builds the same text and pooling as training's feature extraction."""
    worker = make_worker()
    events = [
        event(900_001, title="A quiet drama about a lighthouse", categories=("Drama",)),
        event(900_002, title="Space pirates", tags=("sci-fi", "action"), description="Lasers."),
    ]
    batch = worker.encode(work_items(events))
    assert [row.item_id for row in batch.rows] == [900_001, 900_002]
    assert batch.proxies.shape == (2, worker.manifest.spec.id_dim)
    assert batch.model_version == "v1" and not batch.rejected

    items = pd.DataFrame(
        {
            "item_id": [e.item_id for e in events],
            "title": [e.title for e in events],
            "description": [e.description for e in events],
            "tags": [list(e.tags) for e in events],
            "categories": [list(e.categories) for e in events],
            "year": [0, 0],
            "image_uri": [None, None],
            "image_bytes": [None, None],
        }
    )
    features = extract_features(
        worker.encoder,
        items,
        clusters=worker.manifest.spec.clusters,
        text_fields=worker.settings.encoder.text_fields,
    )
    expected = worker.model.predict(
        torch.from_numpy(features.global_embedding), torch.from_numpy(features.cluster_states)
    ).numpy()
    np.testing.assert_allclose(batch.proxies, expected, atol=1e-5)


def test_mature_items_and_bad_images_are_refused_with_reasons(make_worker, tmp_path, bundle):
    worker = make_worker()
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
    bomb = base64.b64encode(bomb_png()).decode()
    good = base64.b64encode(png_bytes(10, 10)).decode()
    events = [
        event(bundle.mature_item_id),
        event(800_001, image_base64=corrupt),
        event(800_002, image_base64=bomb),
        event(800_003, image_uri="http://127.0.0.1:9/x.png"),
        event(800_004, image_uri="file:///etc/hostname"),
        event(800_005, image_base64=good),
    ]
    batch = worker.encode(work_items(events))
    reasons = {r.item_id: r.reason for r in batch.rejected}
    assert reasons == {
        bundle.mature_item_id: "item_already_mature",
        800_001: "image_undecodable",
        800_002: "image_decompression_bomb",
        800_003: "image_fetch_failed",
        800_004: "image_outside_allowed_roots",
    }
    assert [row.item_id for row in batch.rows] == [800_005]
    assert batch.proxies.shape[0] == 1 and batch.batch_size == 6


def test_text_only_policy_encodes_items_whose_image_fails(make_worker) -> None:
    worker = make_worker(image_errors="text_only")
    batch = worker.encode(work_items([event(700_001, image_uri="http://127.0.0.1:9/x.png")]))
    assert [row.item_id for row in batch.rows] == [700_001] and not batch.rejected


def test_a_new_latest_version_is_served_without_restarting(make_worker, isolated_model_dir):
    worker = make_worker(model_poll_interval_s=3600)
    before = worker.encode(work_items([event(600_001)]))
    publish_copy(isolated_model_dir, "v2")
    assert worker.encode(work_items([event(600_002)])).model_version == "v1"  # not polled yet
    assert worker.refresh_model() == "v2"
    after = worker.encode(work_items([event(600_001)]))
    assert (before.model_version, after.model_version) == ("v1", "v2")
    np.testing.assert_allclose(before.proxies, after.proxies, atol=1e-6)  # same weights


def test_a_version_for_another_encoder_is_refused_and_the_old_one_keeps_serving(
    make_worker, isolated_model_dir
) -> None:
    worker = make_worker()
    publish_copy(isolated_model_dir, "v9", encoder_fingerprint="another-encoder")
    assert latest_version(BundleLayout(isolated_model_dir).registry) == "v9"
    assert worker.refresh_model() == "v1"
    assert worker.encode(work_items([event(500_001)])).model_version == "v1"


def test_a_version_trained_on_other_text_is_refused_and_the_old_one_keeps_serving(
    make_worker, isolated_model_dir
) -> None:
    worker = make_worker()
    trained = worker.manifest.content
    other = ContentContract({**trained.settings, "encoder.text_fields": ["title"]})
    publish_copy(isolated_model_dir, "v8", content=other)
    assert worker.refresh_model() == "v1"
    assert worker.encode(work_items([event(500_002)])).model_version == "v1"
    # A new worker of this config has nothing it may serve, and says why.
    with pytest.raises(ProxyModelError, match=r"encoder\.text_fields is \['title'\] in training"):
        make_worker()


def test_building_a_worker_leaves_logging_and_torch_threads_alone(stream_config) -> None:
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    ProxyWorker(WorkerSettings.of(stream_config()))
    assert (list(root.handlers), root.level, torch.get_num_threads()) == (handlers, level, threads)


def test_a_nul_byte_image_uri_refuses_that_item_alone(make_worker) -> None:
    """Issue 12 item 3: ``file:///x.png%00.jpg`` raised ValueError and failed the batch."""
    worker = make_worker()
    events = [event(810_000 + n) for n in range(6)]
    events[2] = event(810_002, image_uri="file:///x.png%00.jpg")
    events[4] = event(810_004, image_uri="file:///x.png\x00.jpg")
    batch = worker.encode(work_items(events))
    assert {r.item_id: r.reason for r in batch.rejected} == {
        810_002: "image_invalid",
        810_004: "image_invalid",
    }
    assert [row.item_id for row in batch.rows] == [810_000, 810_001, 810_003, 810_005]


def test_an_encoder_failure_is_bisected_and_refuses_only_the_failing_item(
    make_worker, monkeypatch
) -> None:
    worker = make_worker()
    real_encode, calls = worker.encoder.encode, []

    def encode(contents):
        calls.append(len(contents))
        if any("poison" in content.text for content in contents):
            raise RuntimeError("the encoder cannot take this item")
        return real_encode(contents)

    monkeypatch.setattr(worker.encoder, "encode", encode)
    events = [event(820_000 + n) for n in range(8)]
    events[5] = event(820_005, title="poison")
    batch = worker.encode(work_items(events))
    assert [(r.item_id, r.reason) for r in batch.rejected] == [(820_005, "encode_failed")]
    assert sorted(row.item_id for row in batch.rows) == [820_000 + n for n in range(8) if n != 5]
    assert calls == [8, 4, 4, 2, 1, 1, 2]  # bisected, not eight single calls


def test_any_exception_preparing_one_item_refuses_that_item_alone(make_worker, monkeypatch):
    worker = make_worker()
    real_content = worker._content

    def content(item):
        if item.event.item_id == 830_001:
            raise KeyError("something unexpected")
        return real_content(item)

    monkeypatch.setattr(worker, "_content", content)
    batch = worker.encode(work_items([event(830_000), event(830_001), event(830_002)]))
    assert [(r.item_id, r.reason) for r in batch.rejected] == [(830_001, "encode_failed")]
    assert [row.item_id for row in batch.rows] == [830_000, 830_002]


@pytest.mark.parametrize("damage", ["truncate_weights", "break_manifest", "drop_key"])
def test_a_damaged_version_published_while_running_is_refused_once_and_counted(
    make_worker, isolated_model_dir, damage
) -> None:
    """Issue 12 item 5: SafetensorError / KeyError / JSONDecodeError from a new version used to
    escape ``check_for_new_model`` and fail every batch."""
    worker = make_worker()
    publish_copy(isolated_model_dir, "v7")
    directory = BundleLayout(isolated_model_dir).registry / "versions" / "v7"
    weights, manifest = directory / "proxy_model.safetensors", directory / "manifest.json"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:64])
    elif damage == "break_manifest":
        manifest.write_text(manifest.read_text()[:40])
    else:
        raw = json.loads(manifest.read_text())
        del raw["id_space_fingerprint"]
        manifest.write_text(json.dumps(raw))
    assert worker.refresh_model() == "v1" and worker.refused_versions == 1
    assert worker.refresh_model() == "v1" and worker.refused_versions == 1  # refused once
    batch = worker.encode(work_items([event(840_001), event(840_002)]))
    assert batch.model_version == "v1" and [r.item_id for r in batch.rows] == [840_001, 840_002]


def test_every_batch_after_a_refusal_names_the_refused_version_for_the_metrics(
    make_worker, isolated_model_dir
) -> None:
    worker = make_worker()
    assert worker.encode(work_items([event(845_001)])).refused_versions == ()
    publish_copy(isolated_model_dir, "v8")
    weights = BundleLayout(isolated_model_dir).registry / "versions" / "v8"
    (weights / "proxy_model.safetensors").write_bytes(b"\x00" * 16)
    worker.refresh_model()
    for item_id in (845_002, 845_003):
        batch = worker.encode(work_items([event(item_id)]))
        assert batch.model_version == "v1" and batch.refused_versions == ("v8",)


hostile_uris = st.one_of(
    st.text(max_size=30).map(lambda path: f"file:///{path}"),
    st.text(max_size=30).map(lambda path: f"file://{path}"),
    st.text(max_size=30).map(lambda path: f"http://{path}"),
    st.text(max_size=30).map(lambda text: f"data:image/png;base64,{text}"),
    st.text(max_size=30),
    st.sampled_from(["file:///x.png%00.jpg", "file:///x.png\x00.jpg", "http://[::1", "s3://"]),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.one_of(st.none(), hostile_uris), min_size=1, max_size=8))
def test_hostile_image_uris_never_cost_a_valid_neighbour_its_row(make_worker_once, uris):
    """A batch of valid events (None) interleaved with events carrying hostile image URIs:
    every valid event gets a row, every hostile one a row or its own refusal, never a raise."""
    worker = make_worker_once()
    events = [
        event(850_000 + n) if uri is None else event(850_000 + n, image_uri=uri)
        for n, uri in enumerate(uris)
    ]
    batch = worker.encode(work_items(events))
    rows = {row.item_id for row in batch.rows}
    refused = {r.item_id for r in batch.rejected}
    valid = {850_000 + n for n, uri in enumerate(uris) if uri is None}
    assert valid <= rows and not rows & refused
    assert rows | refused == {850_000 + n for n in range(len(uris))}


@pytest.fixture
def make_worker_once(make_worker):
    """One worker for all of a hypothesis test's examples (building one loads MiniLM)."""
    built: list[ProxyWorker] = []

    def get() -> ProxyWorker:
        if not built:
            built.append(make_worker())
        return built[0]

    return get


def test_a_worker_built_while_latest_is_damaged_serves_the_version_checked_at_start(
    stream_config, isolated_model_dir
) -> None:
    """A replacement worker (after a death) must not fail in its constructor because a damaged
    version was published meanwhile: it serves the version the driver loaded at start."""
    publish_copy(isolated_model_dir, "v6")
    weights = BundleLayout(isolated_model_dir).registry / "versions" / "v6"
    (weights / "proxy_model.safetensors").write_bytes(b"\x00" * 16)
    config = stream_config(stream={"model_dir": str(isolated_model_dir)})
    with pytest.raises(ProxyModelError, match=r"proxy_model\.safetensors"):
        ProxyWorker(WorkerSettings.of(config))
    worker = ProxyWorker(WorkerSettings.of(config, fallback_version="v1"))
    assert worker.model_version == "v1" and worker.refused_versions == 1
    assert worker.encode(work_items([event(860_001)])).model_version == "v1"


def test_a_batchs_images_are_fetched_concurrently(make_worker) -> None:
    """Issue 12 item 7: a batch's images were fetched one after another, so each slow server
    added its whole timeout to the batch. The server here answers no request until four are
    waiting at once: fetched one by one, every fetch would time out (``http_timeout_s`` 2 s)."""
    all_waiting = threading.Barrier(4, timeout=20)
    payload = png_bytes(8, 8)

    class TogetherHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                all_waiting.wait()
            except threading.BrokenBarrierError:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TogetherHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        events = [event(840_000 + n, image_uri=f"{base}/{n}.png") for n in range(4)]
        batch = make_worker().encode(work_items(events))
    finally:
        server.shutdown()
        server.server_close()
    assert batch.rejected == ()
    assert sorted(row.item_id for row in batch.rows) == [840_000 + n for n in range(4)]
