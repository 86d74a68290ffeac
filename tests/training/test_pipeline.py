"""IDProxy's training pipeline: what Stage 2 trains and selects on, the guard, the fallback."""

from __future__ import annotations

import pytest
import torch

from idproxy_stream.config import Stage1Config, Stage2Config
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.pipeline import (
    idproxy_validation_sets,
    item_balanced_weights,
    split_new_like_items,
    stage2_data,
    train_idproxy,
)
from idproxy_stream.training.selection import selection_auc

STAGE1 = Stage1Config(
    epochs=20, batch_size=64, learning_rate=3e-3, hidden_dim=32, holdout_fraction=0.2
)
STAGE2 = Stage2Config(
    epochs=3,
    batch_size=256,
    learning_rate=3e-3,
    hidden_dim=32,
    patience=3,
    new_like_holdout_fraction=0.3,
    selection="both",
)


def inputs(encoded_parts, planted_features):
    vocab, parts = encoded_parts
    features = RowFeatures.from_table(
        planted_features, vocab.item_rows(planted_features.item_ids), vocab.num_item_rows
    )
    counts = torch.bincount(parts["warm_train"].item, minlength=vocab.num_item_rows)
    counts[0] = 0
    mature = torch.nonzero(counts >= 20).squeeze(1)
    samples = RankerInputs.concat([parts["warm_train"], parts["warm_valid"]])
    return features, mature, samples, parts["rare"]


def test_new_like_items_are_held_out_whole_and_never_train(encoded_parts, planted_features):
    features, mature, samples, rare = inputs(encoded_parts, planted_features)
    fit, holdout = mature[::2], mature[1::2]
    data = stage2_data(samples, rare, fit, holdout, features, STAGE2)
    held_items = set(data.validation["new_like"].item.tolist())
    train_items = set(data.train.item.tolist())
    rare_items = set(rare.item.tolist())
    assert held_items and held_items <= rare_items
    assert not held_items & train_items  # held out by item, not by sample
    assert len(held_items) == round(0.3 * len(rare_items))
    assert set(data.validation["mature"].item.tolist()) == set(holdout.tolist())
    # without rare training the same items still validate
    no_rare = stage2_data(
        samples, rare, fit, holdout, features, STAGE2.model_copy(update={"use_rare_items": False})
    )
    assert torch.equal(no_rare.validation["new_like"].item, data.validation["new_like"].item)
    assert set(no_rare.train.item.tolist()) == set(fit.tolist())


def test_split_new_like_items_is_seeded_and_keeps_every_sample(encoded_parts):
    _, parts = encoded_parts
    rare = parts["rare"]
    train, held = split_new_like_items(rare, 0.5, seed=1)
    again, _ = split_new_like_items(rare, 0.5, seed=1)
    assert len(train) + len(held) == len(rare)
    assert torch.equal(train.item, again.item)


def test_item_balanced_weights_equalise_items_at_power_one_and_average_one():
    items = torch.tensor([1, 1, 1, 1, 2, 3, 3])
    samples = RankerInputs(
        user=items, user_features=items[:, None], item=items, item_categories=items[:, None],
        item_year=items, history=items[:, None], label=items.float(),
    )  # fmt: skip
    weights = item_balanced_weights(samples, num_rows=4, power=1.0)
    per_item = {row: float(weights[row] * (samples.item == row).sum()) for row in (1, 2, 3)}
    assert max(per_item.values()) - min(per_item.values()) < 1e-5
    assert float(weights[samples.item].mean()) == pytest.approx(1.0, rel=1e-5)
    half = item_balanced_weights(samples, num_rows=4, power=0.5)
    assert float(half[1] / half[2]) == pytest.approx(4**-0.5, rel=1e-5)


def test_new_like_selection_falls_back_to_mature_items_without_usable_rare_items(
    encoded_parts, planted_features
):
    features, mature, samples, rare = inputs(encoded_parts, planted_features)
    fit, holdout = mature[::2], mature[1::2]
    config = STAGE2.model_copy(update={"selection": "new_like"})
    with_rare = stage2_data(samples, rare, fit, holdout, features, config)
    assert with_rare.validation.keys() == {"new_like"}
    one_label = rare.subset(rare.label == 1)
    for extra in (None, one_label):
        data = stage2_data(samples, extra, fit, holdout, features, config)
        assert data.validation.keys() == {"mature"}
        assert set(data.validation["mature"].item.tolist()) == set(holdout.tolist())


def test_a_guard_no_stage2_can_pass_serves_the_stage1_model(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = inputs(encoded_parts, planted_features)
    strict = STAGE2.model_copy(update={"min_gain": 1.0, "ridge_fallback": False})
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, strict)
    assert training.metrics["stage2_served"] == 0.0
    assert training.metrics["served_model"] == "stage1"
    assert training.model is training.stage1_model


def test_ridge_fallback_serves_the_best_candidate_on_the_validation_items(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = inputs(encoded_parts, planted_features)
    config = STAGE2.model_copy(
        update={"ridge_fallback": True, "epochs": 1, "ridge_weights": (0.0, 0.5, 1.0)}
    )
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, STAGE1, config)
    metrics = training.metrics
    assert metrics["served_model"] in ("stage1", "stage2", "ridge", "stage1+ridge", "stage2+ridge")
    data = stage2_data(
        samples,
        rare,
        mature[~torch.isin(mature, training.holdout_rows)],
        training.holdout_rows,
        features,
        config,
    )
    served = selection_auc(training.model, tiny_ranker, features, data.validation)["selection"]
    # the served model is the best on validation of every blend tried (the ridge proxy alone
    # included) and at least as good as Stage 1
    tried = [metrics[f"ridge_x{weight:g}_valid_auc"] for weight in config.ridge_weights]
    assert served == pytest.approx(max(tried), abs=1e-9)
    assert served >= metrics["stage2_stage1_valid_auc"] - 1e-9
    assert training.model.spec.ridge_weight == (
        metrics["ridge_weight"] if 0 < metrics["ridge_weight"] < 1 else 0.0
    )
    if metrics["served_model"] == "ridge":
        assert training.model.spec.projector_hidden == 0 and training.model.gate.closed


def test_the_validation_sets_for_other_methods_are_the_ones_idproxy_selects_on(
    tiny_ranker, encoded_parts, planted_features
):
    features, mature, samples, rare = inputs(encoded_parts, planted_features)
    stage1 = STAGE1.model_copy(update={"epochs": 1})
    stage2 = STAGE2.model_copy(update={"epochs": 1, "ridge_fallback": False})
    training = train_idproxy(tiny_ranker, features, mature, samples, rare, stage1, stage2)
    validation = idproxy_validation_sets(features, mature, samples, rare, stage1, stage2)
    fit_rows = mature[~torch.isin(mature, training.holdout_rows)]
    used = stage2_data(samples, rare, fit_rows, training.holdout_rows, features, stage2).validation
    assert validation.keys() == used.keys() == {"mature", "new_like"}
    assert torch.equal(torch.unique(validation["mature"].item), training.holdout_rows)
    for name in used:
        assert torch.equal(validation[name].item, used[name].item)
        assert torch.equal(validation[name].label, used[name].label)
