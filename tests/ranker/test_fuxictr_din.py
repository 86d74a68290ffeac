"""FuxiCTR's DIN (the model_zoo.LongCTR.DIN its 2.3.10 wheel ships) behind the RankerAdapter
protocol: the same checks as the DeepCTR-Torch adapter, end to end on table-format synthetic
data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("fuxictr")  # the [fuxictr] extra (part of [dev])

from idproxy_stream.ranker.fuxictr_din import (
    FuxiCtrDinAdapter,
    FuxiCtrDinSettings,
    build_din,
    load_din,
)
from ranker.adapter_checks import (
    check_gradients_reach_overrides_not_the_frozen_ranker,
    check_overrides_reach_candidate_and_valid_history_only,
    check_own_table_override_reproduces_logits,
    idproxy_and_mean_id_cold_auc,
)

ADAPTER = "idproxy_stream.ranker.fuxictr_din:fuxictr_din"
SETTINGS = FuxiCtrDinSettings(embedding_dim=8, dnn_hidden_units=(16,), attention_hidden_units=(8,))


@pytest.fixture(scope="module")
def din(encoded_parts) -> FuxiCtrDinAdapter:
    vocab, _ = encoded_parts
    adapter = FuxiCtrDinAdapter(build_din(vocab, SETTINGS, seed=0), vocab, SETTINGS).eval()
    with torch.no_grad():  # FuxiCTR starts embeddings at std 1e-4: spread them so logits differ
        adapter.id_embedding_table()[1:].normal_(0.0, 0.5)
    return adapter


@pytest.fixture(scope="module")
def batch(encoded_parts):
    _, parts = encoded_parts
    return parts["cold_test"].batch(slice(0, 64))


def test_overriding_with_the_dins_own_table_reproduces_its_logits(din, batch):
    plain = check_own_table_override_reproduces_logits(din, batch)
    assert plain.std() > 0


def test_overrides_reach_the_candidate_and_valid_history_positions_only(din, batch):
    check_overrides_reach_candidate_and_valid_history_only(din, batch)


def test_gradients_flow_to_the_overrides_not_to_the_frozen_din(din, batch):
    check_gradients_reach_overrides_not_the_frozen_ranker(din, batch)


def test_idproxy_through_a_tiny_fuxictr_din_beats_the_mean_id_on_the_cold_split(tmp_path):
    settings = {**SETTINGS.model_dump(), "epochs": 4, "learning_rate": 1e-2}
    auc = idproxy_and_mean_id_cold_auc(tmp_path, ADAPTER, settings, load_din)
    assert auc["idproxy"] > auc["mean_id"] + 0.05, auc


def test_a_binary_fuxictr_din_gives_the_logit_before_its_sigmoid(encoded_parts, batch):
    """A DIN trained by FuxiCTR itself (task binary_classification, a final sigmoid)."""
    from model_zoo.LongCTR.DIN.DIN import DIN

    from idproxy_stream.ranker.fuxictr_din import feature_map

    vocab, _ = encoded_parts
    model = DIN(
        feature_map(vocab, SETTINGS.embedding_dim),
        task="binary_classification",
        dnn_hidden_units=[16],
        attention_hidden_units=[8],
        embedding_dim=SETTINGS.embedding_dim,
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["AUC"],
        model_root=str(Path(tempfile.gettempdir())),
        verbose=0,
    )
    adapter = FuxiCtrDinAdapter(model, vocab, SETTINGS).eval()
    with torch.no_grad():
        adapter.id_embedding_table()[1:].normal_(0.0, 0.5)
        logits = check_own_table_override_reproduces_logits(adapter, batch)
        users = {"user": batch.user}
        for column, name in enumerate(vocab.user_feature_columns):
            users[f"user_{name}"] = batch.user_features[:, column]
        items = torch.cat([batch.history, batch.item.unsqueeze(1)], dim=1).reshape(-1)
        mask = (batch.history > 0).float()
        probability = model((users, {"item_id": items}, mask))["y_pred"].squeeze(-1)
    torch.testing.assert_close(torch.sigmoid(logits), probability)
    assert isinstance(model.dnn.mlp[-1], torch.nn.Sigmoid)  # restored after each call
