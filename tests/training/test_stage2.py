"""Stage 2 through the frozen ranker: what stays frozen, what a closed gate does, that it learns."""

from __future__ import annotations

import torch

from idproxy_stream.config import Stage1Config, Stage2Config
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.pipeline import train_idproxy
from idproxy_stream.training.stage2 import WeightAverage

STAGE1 = Stage1Config(
    epochs=20, batch_size=64, learning_rate=3e-3, hidden_dim=32, holdout_fraction=0.2
)
STAGE2 = Stage2Config(
    epochs=3, batch_size=256, learning_rate=3e-3, hidden_dim=32, patience=3, ridge_fallback=False
)


def training_inputs(tiny_ranker, encoded_parts, planted_features):
    vocab, parts = encoded_parts
    features = RowFeatures.from_table(
        planted_features, vocab.item_rows(planted_features.item_ids), vocab.num_item_rows
    )
    counts = torch.bincount(parts["warm_train"].item, minlength=vocab.num_item_rows)
    counts[0] = 0
    mature = torch.nonzero(counts >= 20).squeeze(1)
    samples = RankerInputs.concat([parts["warm_train"], parts["warm_valid"]])
    return features, mature, samples, parts["rare"]


def test_ranker_and_projector_weights_are_bit_identical_after_stage2(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = training_inputs(tiny_ranker, encoded_parts, planted_features)
    ranker_before = {k: v.clone() for k, v in tiny_ranker.state_dict().items()}
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, STAGE2)
    for name, tensor in tiny_ranker.state_dict().items():
        assert torch.equal(tensor, ranker_before[name]), f"ranker weight {name} changed"
    stage1_projector = training.stage1_model.projector.state_dict()
    for name, tensor in training.model.projector.state_dict().items():
        assert torch.equal(tensor, stage1_projector[name]), f"projector weight {name} changed"
    assert all(p.requires_grad for p in tiny_ranker.parameters())


def test_stage2_with_the_gate_closed_reproduces_stage1_exactly(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = training_inputs(tiny_ranker, encoded_parts, planted_features)
    closed = STAGE2.model_copy(update={"gate_closed": True})
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, closed)
    rows = torch.arange(1, features.global_embedding.shape[0])
    inputs = features.global_embedding[rows], features.cluster_states[rows]
    assert torch.equal(training.model.predict(*inputs), training.stage1_model.predict(*inputs))


def test_stage2_improves_held_out_item_auc_over_stage1(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = training_inputs(tiny_ranker, encoded_parts, planted_features)
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, STAGE2)
    assert training.metrics["stage2_best_valid_auc"] > training.metrics["stage2_stage1_valid_auc"]
    rows = torch.arange(1, features.global_embedding.shape[0])
    inputs = features.global_embedding[rows], features.cluster_states[rows]
    assert not torch.equal(training.model.predict(*inputs), training.stage1_model.predict(*inputs))


def test_weight_average_is_a_moving_average_and_swapping_twice_restores_the_live_weights():
    weight = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([weight], decay=0.75)
    with torch.no_grad():
        weight.fill_(4.0)
    average.update([weight])  # 0.75 * 0 + 0.25 * 4
    average.update([weight])  # 0.75 * 1 + 0.25 * 4
    average.swap_into([weight])
    assert torch.allclose(weight, torch.full((3,), 1.75))
    average.swap_into([weight])
    assert torch.equal(weight, torch.full((3,), 4.0))


def test_stage2_scores_and_serves_the_averaged_weights(
    tiny_ranker, encoded_parts, planted_features
):
    """An average that cannot leave its start (decay ~1) keeps the coarse proxy: the guard sees
    no gain, so nothing but the averaged weights can have been scored and served."""
    features, mature, samples, rare = training_inputs(tiny_ranker, encoded_parts, planted_features)
    frozen = STAGE2.model_copy(update={"weight_average_decay": 1.0 - 1e-12})
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, frozen)
    assert training.metrics["stage2_served"] == 0.0
    rows = torch.arange(1, features.global_embedding.shape[0])
    inputs = features.global_embedding[rows], features.cluster_states[rows]
    assert torch.equal(training.model.predict(*inputs), training.stage1_model.predict(*inputs))
