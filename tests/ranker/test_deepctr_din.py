"""DeepCTR-Torch's DIN behind the RankerAdapter protocol: overrides reach every item lookup,
and IDProxy trained through a tiny DIN (synthetic data in the table format) beats the mean ID
on the cold split through that DIN."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("deepctr_torch")  # the [deepctr] extra (part of [dev])

from idproxy_stream.ranker.deepctr_din import (
    DeepCtrDinAdapter,
    DeepCtrDinSettings,
    build_din,
    load_din,
    pack_history,
)
from ranker.adapter_checks import (
    check_gradients_reach_overrides_not_the_frozen_ranker,
    check_overrides_reach_candidate_and_valid_history_only,
    check_own_table_override_reproduces_logits,
    idproxy_and_mean_id_cold_auc,
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
    plain = check_own_table_override_reproduces_logits(din, batch)
    order, _ = pack_history(batch.history)
    with torch.no_grad():
        x = din._inputs(batch, batch.item, batch.history.gather(1, order))
        probability = din.model(x).squeeze(-1)  # DIN's own output, after its sigmoid
    torch.testing.assert_close(torch.sigmoid(plain), probability)
    assert plain.std() > 0


def test_overrides_reach_the_candidate_and_valid_history_positions_only(din, batch):
    check_overrides_reach_candidate_and_valid_history_only(din, batch)


def test_gradients_flow_to_the_overrides_not_to_the_frozen_din(din, batch):
    check_gradients_reach_overrides_not_the_frozen_ranker(din, batch)


def test_idproxy_through_a_tiny_deepctr_din_beats_the_mean_id_on_the_cold_split(tmp_path):
    settings = {**SETTINGS.model_dump(), "epochs": 4, "learning_rate": 1e-2}
    auc = idproxy_and_mean_id_cold_auc(tmp_path, ADAPTER, settings, load_din)
    assert auc["idproxy"] > auc["mean_id"] + 0.05, auc


def test_a_din_with_its_own_item_indices_is_read_through_row_to_index(encoded_parts, batch):
    """A DIN trained elsewhere indexes items its own way: ``row_to_index`` maps our rows."""
    vocab, _ = encoded_parts
    order = torch.randperm(vocab.num_item_rows - 1, generator=torch.Generator().manual_seed(0))
    row_to_index = torch.cat([torch.zeros(1, dtype=torch.long), order + 1])
    model = build_din(vocab, SETTINGS, seed=1)
    adapter = DeepCtrDinAdapter(model, vocab, SETTINGS, row_to_index=row_to_index).eval()
    weight = model.embedding_dict["item_id"].weight
    torch.testing.assert_close(adapter.id_embedding_table(), weight[row_to_index])
    plain = check_own_table_override_reproduces_logits(adapter, batch)
    identity = DeepCtrDinAdapter(model, vocab, SETTINGS).eval()
    with torch.no_grad():
        assert not torch.allclose(plain, identity(batch))  # the mapping is really applied
