"""The bundle the stream serves: layout, fingerprints, a second version on the same ranker."""

from __future__ import annotations

import json

from tests_helpers import planted_feature_table

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.registry import latest_version, list_versions, load_version

CONFIG = AppConfig.model_validate(
    {
        "data": {
            "name": "synthetic",
            "synthetic": {
                "num_items": 300,
                "num_users": 300,
                "interactions_per_user": 40,
                "seed": 3,
            },
        },
        "split": {"warm_min_interactions": 40, "cold_min": 16, "cold_max": 40, "warmup_size": 3},
        "ranker": {"epochs": 4, "batch_size": 128, "learning_rate": 1e-2, "num_threads": 1},
        "stage1": {
            "epochs": 10,
            "batch_size": 64,
            "learning_rate": 3e-3,
            "hidden_dim": 32,
            "holdout_fraction": 0.2,
        },
        "stage2": {"epochs": 1, "batch_size": 256, "hidden_dim": 32},
    }
)


def test_bundle_is_complete_and_a_retrain_reuses_the_ranker(tmp_path):
    from idproxy_stream.training.bundle import train_model_bundle

    features = planted_feature_table(generate_synthetic(CONFIG.data.synthetic))
    first = train_model_bundle(CONFIG, tmp_path, version="v1", features=features)
    layout = BundleLayout(tmp_path)
    for part in (layout.ranker, layout.id_space, layout.index, layout.registry):
        assert part.is_dir(), part
    id_space = IdSpace.load(layout.id_space)
    _, manifest = load_version(
        layout.registry,
        expected_encoder_fingerprint=features.encoder_fingerprint,
        expected_id_space_fingerprint=id_space.fingerprint,
    )
    assert manifest.version == "v1" and latest_version(layout.registry) == "v1"
    assert json.loads(layout.summary.read_text())["version"] == "v1"
    assert first.metrics["stage2_best_valid_auc"] > 0.5

    ranker_weights = (layout.ranker / "ranker.safetensors").read_bytes()
    train_model_bundle(CONFIG, tmp_path, version="v2", features=features)
    assert (layout.ranker / "ranker.safetensors").read_bytes() == ranker_weights
    assert IdSpace.load(layout.id_space).fingerprint == id_space.fingerprint
    assert list_versions(layout.registry) == ["v1", "v2"]
    assert latest_version(layout.registry) == "v2"


def test_an_exported_table_dataset_trains_on_the_same_inputs_as_its_source(tmp_path):
    """One path through the system: synthetic -> table files -> ``data.name: table`` gives the
    split, vocabulary and encoded samples the synthetic loader gives, and trains a bundle."""
    import torch

    from idproxy_stream.config import with_updates
    from idproxy_stream.data.export import export_table_dataset
    from idproxy_stream.training.bundle import load_training_data, train_model_bundle

    source = generate_synthetic(CONFIG.data.synthetic)
    export = export_table_dataset(source, tmp_path / "tables")
    table_data = with_updates(
        CONFIG.data,
        name="table",
        path=export.items_path.parent,
        table=with_updates(CONFIG.data.table, user_feature_columns=source.user_feature_columns),
    )
    config = with_updates(CONFIG, data=table_data, ranker=with_updates(CONFIG.ranker, epochs=1))
    from_table, from_source = load_training_data(config), load_training_data(CONFIG)
    assert from_table.split.counts() == from_source.split.counts()
    assert from_table.vocab == from_source.vocab
    for part, inputs in from_source.samples.items():
        for name in ("user", "user_features", "item", "history", "label"):
            assert torch.equal(getattr(from_table.samples[part], name), getattr(inputs, name))

    report = train_model_bundle(
        config, tmp_path / "bundle", "v1", features=planted_feature_table(source)
    )
    assert report.dataset["name"] == "table"
    assert latest_version(BundleLayout(tmp_path / "bundle").registry) == "v1"
    assert report.metrics["stage2_best_valid_auc"] > 0.5
