"""The ID-table-only path (``data/id_table.py``, ``training/id_table.py``): an exported table of
item IDs + interaction counts, no ranker; MiniLM, the sqlite store, the stream's worker + sink."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file
from tests_helpers import TINY_TRAINING, merge_sections, write_config
from typer.testing import CliRunner

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.backfill.catalogue import catalogue_work
from idproxy_stream.cli import app
from idproxy_stream.config import config_from_dict
from idproxy_stream.data.id_table import IdTableError, load_id_table
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.proxy.registry import latest_version, load_version
from idproxy_stream.store.reader import ProxyReader
from idproxy_stream.stream.sink import ProxySink, SinkSettings
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings
from idproxy_stream.training.id_table import STAGE2_NOTE, train_id_table_bundle


def exported_table(config) -> pd.DataFrame:
    """What a ranker team exports: the synthetic catalogue's true item factors as the IDs of
    items with >= 5 interactions, with their interaction counts."""
    dataset = load_dataset(config.data)
    counts = dataset.interactions.groupby("item_id").size()
    factors = np.asarray(dataset.metadata["item_factors"], dtype=np.float32)
    item_ids = dataset.items["item_id"].to_numpy(np.int64)
    frame = pd.DataFrame(
        {
            "item_id": item_ids,
            "embedding": list(factors),
            "interactions": counts.reindex(item_ids, fill_value=0).to_numpy(np.int64),
        }
    )
    return frame[frame["interactions"] >= 5].reset_index(drop=True)


def settings(tmp_path) -> dict:
    return merge_sections(
        dict(TINY_TRAINING),
        {
            "stream": {"model_dir": str(tmp_path / "model")},
            "store": {"sqlite": {"path": str(tmp_path / "proxies.sqlite")}},
        },
    )


def test_id_table_bundle_serves_the_better_coarse_proxy_and_says_what_stage2_adds(tmp_path, caplog):
    config = config_from_dict(settings(tmp_path), "test settings")
    table = exported_table(config)
    table.to_parquet(tmp_path / "ids.parquet")
    with caplog.at_level(logging.WARNING, logger="idproxy_stream.training.id_table"):
        report = train_id_table_bundle(config, tmp_path / "ids.parquet", config.stream.model_dir)
    assert STAGE2_NOTE in caplog.text

    layout = BundleLayout(config.stream.model_dir)
    assert latest_version(layout.registry) == report.version
    _, manifest = load_version(layout.registry)
    errors = {name: manifest.metrics[f"{name}_holdout_id_error"] for name in ("stage1", "ridge")}
    assert manifest.metrics["served_model"] == min(errors, key=errors.get)
    assert min(errors.values()) < 0.9  # content predicts the IDs better than their mean does
    assert manifest.training["source"] == "id_table"
    assert "Stage 2 was not trained" in manifest.training["stage2"]

    # the stream's worker and sink serve it; a reader gets proxies for the cold items
    cold = table.loc[table["interactions"] < config.reader.maturity_threshold, "item_id"]
    items = load_dataset(config.data).items
    cold_items = items[items["item_id"].isin(cold.head(12))]
    work = list(catalogue_work(cold_items, "items", datetime.now(UTC)))
    worker, sink = ProxyWorker(WorkerSettings.of(config)), ProxySink(SinkSettings.of(config))
    outcome = sink.write(worker.encode(work))
    assert len(outcome.written) == len(work) == 12
    sink.store.close()
    with ProxyReader.from_config(config) as reader:
        served = reader.get(cold_items["item_id"].tolist())
    assert set(served.source) == {"proxy"}
    assert set(served.model_version) == {report.version}


def test_the_three_formats_read_the_same_table(tmp_path):
    frame = pd.DataFrame(
        {
            "item_id": [3, 1, 7],
            "embedding": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
            "interactions": [4, 0, 30],
        }
    )
    frame.to_parquet(tmp_path / "ids.parquet")
    arrays = {
        "item_ids": frame["item_id"].to_numpy(np.int64),
        "embeddings": np.stack(frame["embedding"].map(np.asarray)).astype(np.float32),
        "interactions": frame["interactions"].to_numpy(np.int64),
    }
    (tmp_path / "npy").mkdir()
    for name, values in arrays.items():
        np.save(tmp_path / "npy" / f"{name}.npy", values)
    save_file(arrays, str(tmp_path / "ids.safetensors"))
    tables = [load_id_table(tmp_path / name) for name in ("ids.parquet", "npy", "ids.safetensors")]
    for table in tables:
        np.testing.assert_array_equal(table.item_ids, [3, 1, 7])
        np.testing.assert_allclose(table.embeddings, arrays["embeddings"])
        np.testing.assert_array_equal(table.interactions, [4, 0, 30])


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            pd.DataFrame({"item_id": [1], "embedding": [[0.1]]}),
            "ids.parquet: missing column 'interactions'",
        ),
        (
            pd.DataFrame({"item_id": [1, 1], "embedding": [[0.1], [0.2]], "interactions": [1, 2]}),
            "ids.parquet: item_id: duplicate item id 1",
        ),
        (
            pd.DataFrame(
                {"item_id": [1, 2], "embedding": [[0.1], [0.2, 0.3]], "interactions": [1, 2]}
            ),
            "ids.parquet: column 'embedding' must hold lists of one length",
        ),
        (
            pd.DataFrame({"item_id": [1], "embedding": [[0.1]], "interactions": [-3]}),
            "ids.parquet: interactions must be >= 0",
        ),
    ],
)
def test_bad_parquet_tables_fail_in_one_line_naming_file_and_column(tmp_path, frame, expected):
    frame.to_parquet(tmp_path / "ids.parquet")
    with pytest.raises(IdTableError) as error:
        load_id_table(tmp_path / "ids.parquet")
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_pickled_numpy_arrays_are_refused(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "item_ids.npy", np.array([1, 2], dtype=object), allow_pickle=True)
    np.save(folder / "embeddings.npy", np.zeros((2, 3), np.float32))
    np.save(folder / "interactions.npy", np.array([1, 2]))
    with pytest.raises(IdTableError, match=r"item_ids\.npy: not a plain NumPy array"):
        load_id_table(folder)


def test_train_with_a_bad_id_table_exits_2_naming_the_file(tmp_path):
    raw = settings(tmp_path)
    pd.DataFrame({"item_id": [1], "embedding": [[0.1]]}).to_parquet(tmp_path / "ids.parquet")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(write_config(raw, tmp_path / "c.yaml")),
            "--id-table",
            str(tmp_path / "ids.parquet"),
        ],
    )
    assert result.exit_code == 2
    assert "missing column 'interactions'" in result.output
    assert not (tmp_path / "model").exists()
