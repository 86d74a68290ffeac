"""Stage 1 learns the planted content -> ID direction: loss falls, recall rises."""

from __future__ import annotations

import pytest
import torch

from idproxy_stream.config import Stage1Config
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.stage1 import Stage1Error, train_stage1


def planted_rows(num_items: int = 240, encoder_dim: int = 32, id_dim: int = 8, seed: int = 0):
    """Row features and an ID table where ID = W x + centre (row 0 is padding)."""
    generator = torch.Generator().manual_seed(seed)
    content = torch.randn(num_items + 1, encoder_dim, generator=generator)
    content[0] = 0
    mapping = torch.randn(encoder_dim, id_dim, generator=generator) / encoder_dim**0.5
    ids = content @ mapping + 0.5
    ids[0] = 0
    features = RowFeatures(
        global_embedding=content,
        cluster_states=torch.stack([content, content], dim=1),
        has_features=torch.arange(num_items + 1) > 0,
        clusters=LayerClusters((0, 1), 2),
        encoder_fingerprint="planted",
    )
    return features, ids, torch.arange(1, num_items + 1)


CONFIG = Stage1Config(
    epochs=60, batch_size=64, learning_rate=3e-3, hidden_dim=64, holdout_fraction=0.2, seed=1
)


def test_contrastive_loss_falls_and_held_out_recall_rises():
    features, ids, mature = planted_rows()
    untrained = train_stage1(features, ids, mature, CONFIG.model_copy(update={"epochs": 1}))
    trained = train_stage1(features, ids, mature, CONFIG)
    assert trained.loss_history[-1] < 0.5 * trained.loss_history[0]
    assert trained.metrics["recall@10"] > untrained.metrics["recall@10"] + 0.2
    assert trained.metrics["recall@1"] > untrained.metrics["recall@1"]


def test_scale_calibration_brings_proxies_to_the_id_norm():
    features, ids, mature = planted_rows()
    result = train_stage1(features, ids, mature, CONFIG)
    holdout = result.holdout_rows
    with torch.no_grad():
        proxies = result.projector(features.global_embedding[holdout])
    error_calibrated = (proxies - ids[holdout]).pow(2).sum(1).mean()
    with torch.no_grad():
        unit = result.projector.centre + result.projector.direction(
            features.global_embedding[holdout]
        )
    error_unit = (unit - ids[holdout]).pow(2).sum(1).mean()
    assert error_calibrated < error_unit
    assert result.metrics["scale"] > 0


def test_fit_and_holdout_items_are_disjoint_and_cover_the_mature_items():
    features, ids, mature = planted_rows()
    result = train_stage1(features, ids, mature, CONFIG.model_copy(update={"epochs": 2}))
    fit, held = set(result.fit_rows.tolist()), set(result.holdout_rows.tolist())
    assert not fit & held and fit | held == set(mature.tolist())


def test_too_few_mature_items_says_what_to_change():
    features, ids, _ = planted_rows(num_items=10)
    with pytest.raises(Stage1Error, match=r"stage1\.tau"):
        train_stage1(features, ids, torch.tensor([1, 2]), CONFIG)


def test_a_regression_term_learns_per_item_lengths_and_a_lower_held_out_error():
    features, ids, mature = planted_rows()
    contrastive = train_stage1(features, ids, mature, CONFIG)
    regression = train_stage1(
        features, ids, mature, CONFIG.model_copy(update={"regression_weight": 1.0})
    )
    holdout = regression.holdout_rows
    assert not regression.projector.unit_offsets and contrastive.projector.unit_offsets
    with torch.no_grad():
        offsets = regression.projector.offset(features.global_embedding[holdout])
        errors = {
            name: (result.projector(features.global_embedding[holdout]) - ids[holdout])
            .pow(2)
            .sum(1)
            .mean()
            for name, result in (("contrastive", contrastive), ("regression", regression))
        }
    norms = offsets.norm(dim=1)
    assert norms.std() > 0.1 * norms.mean()  # lengths differ per item, unlike unit directions
    assert errors["regression"] < 0.8 * errors["contrastive"]
    assert 0 < regression.metrics["best_epoch"] <= CONFIG.epochs
    assert regression.metrics["holdout_relative_error"] < 0.9


def test_both_objective_weights_zero_is_refused_with_the_keys_to_change():
    with pytest.raises(ValueError, match=r"contrastive_weight and stage1\.regression_weight"):
        Stage1Config(contrastive_weight=0.0, regression_weight=0.0)


def test_the_ridge_objective_fits_a_linear_projector_that_recovers_a_linear_mapping():
    features, ids, mature = planted_rows()
    result = train_stage1(features, ids, mature, CONFIG.model_copy(update={"objective": "ridge"}))
    projector = result.projector
    assert projector.hidden_dim == 0 and not projector.unit_offsets
    holdout = result.holdout_rows
    with torch.no_grad():
        error = (projector(features.global_embedding[holdout]) - ids[holdout]).pow(2).sum(1)
    spread = (ids[holdout] - ids[holdout].mean(0)).pow(2).sum(1)
    assert float(error.mean()) < 0.05 * float(spread.mean())  # the planted map is linear
    assert result.metrics["ridge_penalty"] > 0
