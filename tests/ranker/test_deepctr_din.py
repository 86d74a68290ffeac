"""DeepCTR-Torch's DIN behind the RankerAdapter protocol: overrides reach every item lookup,
and IDProxy trained through a tiny DIN (synthetic data in the table format) beats the mean ID
on the cold split through that DIN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("deepctr_torch")  # the [deepctr] extra (part of [dev])

from idproxy_stream.ranker.deepctr_din import (
    DeepCtrDinAdapter,
    DeepCtrDinSettings,
    build_din,
    load_din,
)

ADAPTER = "idproxy_stream.ranker.deepctr_din:deepctr_din"
SETTINGS = DeepCtrDinSettings(embedding_dim=8, dnn_hidden_units=(16,), att_hidden_size=(8,))


@pytest.fixture(scope="module")
def din(encoded_parts) -> DeepCtrDinAdapter:
    vocab, _ = encoded_parts
    return DeepCtrDinAdapter(build_din(vocab, SETTINGS, seed=0), vocab, SETTINGS).eval()


@pytest.fixture(scope="module")
def batch(encoded_parts):
    _, parts = encoded_parts
    return parts["cold_test"].batch(slice(0, 64))


def test_overriding_with_the_dins_own_table_reproduces_its_logits(din, batch):
    with torch.no_grad():
        plain = din(batch)
        table = din.id_embedding_table()
        overridden = din(batch, table[batch.item], table[batch.history])
        x = din._inputs(batch, batch.item, batch.history.gather(1, _packed(batch.history)))
        probability = din.model(x).squeeze(-1)  # DIN's own output (after its sigmoid)
    torch.testing.assert_close(overridden, plain)
    torch.testing.assert_close(torch.sigmoid(plain), probability)
    assert plain.std() > 0


def _packed(history: torch.Tensor) -> torch.Tensor:
    from idproxy_stream.ranker.deepctr_din import pack_history

    return pack_history(history)[0]


def test_overrides_reach_the_candidate_and_valid_history_positions_only(din, batch):
    torch.manual_seed(0)
    table = din.id_embedding_table().detach()
    candidate, history = table[batch.item], table[batch.history]
    with torch.no_grad():
        base = din(batch, candidate, history)
        moved_candidate = din(batch, candidate + torch.randn_like(candidate), history)
        padding = (batch.history == 0).unsqueeze(-1)
        noise = torch.randn_like(history)
        moved_padding = din(batch, candidate, history + noise * padding)
        moved_history = din(batch, candidate, history + noise * ~padding)
    has_history = (batch.history > 0).any(dim=1)
    assert has_history.any() and (~has_history).any()
    assert (moved_candidate - base).abs().min() > 0
    torch.testing.assert_close(moved_padding, base)  # padding is masked, whatever it holds
    changed = (moved_history - base).abs() > 1e-7
    assert torch.equal(changed, has_history)


def test_gradients_flow_to_the_overrides_not_to_the_frozen_din(din, batch):
    from idproxy_stream.ranker.plugins import freeze

    freeze(din)
    table = din.id_embedding_table().detach()
    candidate = table[batch.item].clone().requires_grad_(True)
    din(batch, candidate, table[batch.history]).sum().backward()
    assert candidate.grad is not None and candidate.grad.abs().sum() > 0
    assert all(p.grad is None for p in din.parameters())


def test_idproxy_through_a_tiny_deepctr_din_beats_the_mean_id_on_the_cold_split(tmp_path):
    """A DIN trained on synthetic data in the table format, IDProxy (Stage 1 + 2) trained
    through it by ``train_model_bundle`` (what ``idproxy train`` runs); the published proxies of
    the cold items, in the DIN, score the cold test set better than the mean mature ID."""
    from tests_helpers import planted_feature_table
    from training.test_bundle import CONFIG

    from idproxy_stream.artifacts import BundleLayout
    from idproxy_stream.config import with_updates
    from idproxy_stream.data.export import export_table_dataset
    from idproxy_stream.data.synthetic import generate_synthetic
    from idproxy_stream.eval.protocol import cold_table
    from idproxy_stream.proxy.registry import load_version
    from idproxy_stream.ranker.training import evaluate_ranker, table_override
    from idproxy_stream.training.bundle import load_training_data, train_model_bundle
    from idproxy_stream.training.item_features import RowFeatures

    source = generate_synthetic(CONFIG.data.synthetic)
    export = export_table_dataset(source, tmp_path / "tables")
    data = with_updates(
        CONFIG.data,
        name="table",
        path=export.items_path.parent,
        table=with_updates(CONFIG.data.table, user_feature_columns=source.user_feature_columns),
    )
    checkpoint = tmp_path / "din"
    ranker = with_updates(
        CONFIG.ranker,
        adapter=ADAPTER,
        adapter_settings={**SETTINGS.model_dump(), "epochs": 4, "learning_rate": 1e-2},
        checkpoint=checkpoint,
    )
    config = with_updates(CONFIG, data=data, ranker=ranker)
    features = planted_feature_table(source)
    report = train_model_bundle(config, tmp_path / "bundle", "v1", features=features)
    assert report.metrics["ranker_warm_test_auc"] > 0.6  # the DIN learned something

    training = load_training_data(config)
    din = load_din(checkpoint, training.vocab)
    model, _ = load_version(BundleLayout(tmp_path / "bundle").registry)
    rows = RowFeatures.from_table(
        features, training.vocab.item_rows(features.item_ids), training.vocab.num_item_rows
    )
    cold_rows = torch.from_numpy(training.vocab.item_rows(training.split.cold_items))
    with torch.no_grad():
        proxies = model.predict(rows.global_embedding[cold_rows], rows.cluster_states[cold_rows])
    id_table = din.id_embedding_table().detach()
    mature = torch.from_numpy(training.vocab.item_rows(training.split.warm_items))
    mean_id = id_table[mature].mean(dim=0, keepdim=True).expand(len(cold_rows), -1)
    from idproxy_stream.ranker.inputs import ItemSideFeatures, encode_samples

    side = ItemSideFeatures.from_dataset(training.dataset, training.vocab)
    cold_test = encode_samples(training.split.cold_test, training.dataset, training.vocab, side)
    auc = {
        name: evaluate_ranker(din, cold_test, table_override(cold_table(id_table, cold_rows, p)))[
            "auc"
        ]
        for name, p in (("idproxy", proxies), ("mean_id", mean_id))
    }
    assert auc["idproxy"] > auc["mean_id"] + 0.05, auc
    assert np.isfinite(list(auc.values())).all()
