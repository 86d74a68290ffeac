"""``idproxy realign`` (``runbooks/retrain.py``) on the embedded stack: a real reference ranker
retrained with another seed, MiniLM, Ray backfill actors and the sqlite store."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime

import numpy as np
import pytest
from tests_helpers import TINY_TRAINING, merge_sections, write_config
from typer.testing import CliRunner

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.backfill.catalogue import catalogue_work
from idproxy_stream.cli import app
from idproxy_stream.config import config_from_dict, with_updates
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.registry import latest_version
from idproxy_stream.ranker.training import save_ranker, train_ranker
from idproxy_stream.runbooks.retrain import RealignError, realign
from idproxy_stream.store.reader import ProxyReader
from idproxy_stream.stream.sink import ProxySink, SinkSettings
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings
from idproxy_stream.training.bundle import load_training_data, train_model_bundle


def settings(tmp_path) -> dict:
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must be short
    return merge_sections(
        dict(TINY_TRAINING),
        {
            "stream": {"model_dir": str(tmp_path / "model")},
            "store": {"sqlite": {"path": str(tmp_path / "proxies.sqlite")}},
            "backfill": {"num_workers": 1, "worker_num_cpus": 0.25, "sink_num_cpus": 0.1},
            "ray": {"num_cpus": 2, "temp_dir": ray_dir},
        },
    )


def cold_item_ids(config) -> np.ndarray:
    """Catalogue items the ranker in the serving bundle does not serve from their own ID."""
    id_space = IdSpace.load(BundleLayout(config.stream.model_dir).id_space)
    items = load_training_data(config).dataset.items["item_id"].to_numpy(np.int64)
    rows = id_space.rows_of(items)
    counts = np.where(rows >= 0, id_space.interaction_counts[np.maximum(rows, 0)], 0)
    return items[counts < config.reader.maturity_threshold]


def test_realign_leaves_no_cold_item_on_the_fallback_and_swaps_the_running_worker(tmp_path):
    raw = settings(tmp_path)
    config = config_from_dict(raw, "test settings")
    train_model_bundle(config, config.stream.model_dir, version="v1")
    old_id_space = IdSpace.load(BundleLayout(config.stream.model_dir).id_space)

    # what a running stream holds: a worker following LATEST and a sink; it writes v1 rows
    worker = ProxyWorker(WorkerSettings.of(config))
    sink = ProxySink(SinkSettings.of(config))
    items = load_training_data(config).dataset.items
    work = list(catalogue_work(items, "items", datetime.now(UTC)))
    sink.write(worker.encode(work))

    # the ranker team's retrain: same catalogue, another seed, saved where they keep it
    retrained = with_updates(config.ranker, seed=config.ranker.seed + 7)
    data = load_training_data(config)
    ranker, _ = train_ranker(
        data.samples["warm_train"], data.samples["warm_valid"], retrained, data.vocab
    )
    save_ranker(ranker, tmp_path / "new-ranker")

    result = CliRunner().invoke(
        app,
        [
            "realign",
            "--config",
            str(write_config(raw, tmp_path / "config.yaml")),
            "--ranker-checkpoint",
            str(tmp_path / "new-ranker"),
            "--version",
            "v2",
        ],
    )
    assert result.exit_code == 0, result.output
    layout = BundleLayout(config.stream.model_dir)
    new_id_space = IdSpace.load(layout.id_space)
    assert new_id_space.fingerprint != old_id_space.fingerprint
    assert latest_version(layout.registry) == "v2"
    assert IdSpace.load(layout.root / "retired" / "v1" / "id_space").fingerprint == (
        old_id_space.fingerprint
    )

    cold = cold_item_ids(config)
    assert len(cold) > 50
    with ProxyReader.from_config(config) as reader:
        served = reader.get(cold.tolist())
    assert set(served.source) == {"proxy"}
    assert set(served.model_version) == {"v2"}
    assert np.isfinite(served.embeddings).all()
    # without the backfill these items would serve the fallback: v1 rows are of the old space
    pinned_v1 = with_updates(config, reader=with_updates(config.reader, serving_model_version="v1"))
    with ProxyReader.from_config(pinned_v1) as reader:
        assert set(reader.get(cold.tolist()).source) == {"fallback"}

    # the running worker and sink hot-swap to v2 and its ID space
    assert worker.refresh_model() == "v2"
    cold_work = [entry for entry in work if entry.event.item_id in set(cold[:10].tolist())]
    batch = worker.encode(cold_work)
    assert batch.model_version == "v2"
    assert batch.id_space_fingerprint == new_id_space.fingerprint
    outcome = sink.write(batch)
    assert len(outcome.written) == len(cold_work)
    sink.store.close()


def test_realign_without_a_saved_reference_ranker_names_the_option(tmp_path):
    config = config_from_dict(settings(tmp_path), "test settings")
    BundleLayout(config.stream.model_dir).registry.mkdir(parents=True)
    with pytest.raises(RealignError, match=r"--ranker-checkpoint .* holds no saved reference"):
        realign(config, tmp_path / "nowhere", "v2")


def test_realign_to_a_new_exported_id_table_serves_every_cold_item_the_new_version(tmp_path):
    import pandas as pd

    from idproxy_stream.data.loading import load_dataset
    from idproxy_stream.training.id_table import train_id_table_bundle

    raw = settings(tmp_path)
    config = config_from_dict(raw, "test settings")
    dataset = load_dataset(config.data)
    item_ids = dataset.items["item_id"].to_numpy(np.int64)
    counts = dataset.interactions.groupby("item_id").size().reindex(item_ids, fill_value=0)
    factors = np.asarray(dataset.metadata["item_factors"], dtype=np.float32)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(factors.shape[1],) * 2))
    for name, table in (("old", factors), ("new", factors @ rotation.astype(np.float32))):
        frame = pd.DataFrame(
            {"item_id": item_ids, "embedding": list(table), "interactions": counts.to_numpy()}
        )
        frame[frame["interactions"] >= 5].to_parquet(tmp_path / f"{name}.parquet")
    train_id_table_bundle(config, tmp_path / "old.parquet", config.stream.model_dir, "v1")
    old = IdSpace.load(BundleLayout(config.stream.model_dir).id_space).fingerprint

    report = realign(config, None, "v2", id_table=tmp_path / "new.parquet")
    assert report.previous_version == "v1" and report.backfill.model_version == "v2"
    assert IdSpace.load(BundleLayout(config.stream.model_dir).id_space).fingerprint != old
    cold = cold_item_ids(config)
    with ProxyReader.from_config(config) as reader:
        served = reader.get(cold.tolist())
    assert set(served.source) == {"proxy"} and set(served.model_version) == {"v2"}
