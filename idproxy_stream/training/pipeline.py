"""IDProxy end to end: Stage 1 then Stage 2, producing a versioned ProxyModel.

Shared by ``idproxy train``, the cold-start evaluation and the demo, so every path trains the
same way. The same held-out mature items serve Stage 1 (scale calibration, Recall@k) and Stage 2
(model selection); neither stage trains on them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import torch

from idproxy_stream.config import Stage1Config, Stage2Config
from idproxy_stream.proxy.model import ProxyManifest, ProxyModel, ProxyModelSpec
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.selection import select_coarse_scale, selection_auc
from idproxy_stream.training.stage1 import (
    Stage1Result,
    fit_ridge_coarse,
    split_mature_rows,
    train_stage1,
)
from idproxy_stream.training.stage2 import samples_of_items, train_stage2

logger = logging.getLogger(__name__)


@dataclass
class IdProxyTraining:
    """Both stages' outputs: the Stage 1-only model, the full model and their metrics."""

    stage1_model: ProxyModel
    model: ProxyModel
    metrics: dict[str, float] = field(default_factory=dict)
    holdout_rows: torch.Tensor | None = None


@dataclass(frozen=True)
class Stage2Data:
    """What Stage 2 trains and selects on.

    train: the ranker's samples of the fit items, plus the extra (rare) items' samples outside
        the new-like holdout.
    validation: ``{"mature": samples of held-out mature items, "new_like": samples of held-out
        rare items}``; the rare items were never in the ranker's training data, like new items.
    item_weights: (N_rows,) loss weight per candidate row (``n_item^-power``, mean 1 over
        ``train``), or None for unweighted.
    """

    train: RankerInputs
    validation: dict[str, RankerInputs]
    item_weights: torch.Tensor | None


def split_new_like_items(
    extra_samples: RankerInputs, fraction: float, seed: int
) -> tuple[RankerInputs, RankerInputs]:
    """(train, held-out) samples of ``extra_samples``, held out by item (a seeded ``fraction``)."""
    items = torch.unique(extra_samples.item)
    generator = torch.Generator().manual_seed(seed)
    held_count = round(len(items) * fraction)
    held = items[torch.randperm(len(items), generator=generator)[:held_count]]
    is_held = torch.isin(extra_samples.item, held)
    return extra_samples.subset(~is_held), extra_samples.subset(is_held)


def item_balanced_weights(samples: RankerInputs, num_rows: int, power: float) -> torch.Tensor:
    """(N_rows,) weight ``n_item^-power`` per candidate row, scaled to mean 1 over ``samples``."""
    counts = torch.bincount(samples.item, minlength=num_rows).double()
    weights = counts.clamp(min=1.0).pow(-power)
    mean = (weights[samples.item]).mean() if len(samples) else torch.tensor(1.0)
    return (weights / mean).float()


def stage2_data(
    ranker_samples: RankerInputs,
    extra_samples: RankerInputs | None,
    fit_rows: torch.Tensor,
    holdout_rows: torch.Tensor,
    features: RowFeatures,
    config: Stage2Config,
) -> Stage2Data:
    """Stage 2's training samples, validation sets and weights (see :class:`Stage2Data`).

    Extra (rare) samples count only for items with content features. A seeded
    ``config.new_like_holdout_fraction`` of their items is held out for validation whether or
    not the rest trains (``config.use_rare_items``); ``config.max_rare_samples`` caps the
    training share (a seeded random subset). ``config.selection`` keeps one validation set or
    both; ``new_like`` falls back to the mature set when the held-out rare samples cannot score
    an AUC (none, or one label only).
    """
    train = samples_of_items(ranker_samples, fit_rows)
    validation = {"mature": samples_of_items(ranker_samples, holdout_rows)}
    if extra_samples is not None and len(extra_samples):
        extra = extra_samples.subset(features.has_features[extra_samples.item])
        extra, held = split_new_like_items(extra, config.new_like_holdout_fraction, config.seed)
        validation["new_like"] = held
        if config.use_rare_items:
            if config.max_rare_samples is not None and len(extra) > config.max_rare_samples:
                generator = torch.Generator().manual_seed(config.seed)
                keep = torch.randperm(len(extra), generator=generator)[: config.max_rare_samples]
                extra = extra.subset(keep.sort().values)
            train = RankerInputs.concat([train, extra])
    if config.selection != "both":
        chosen = validation.get(config.selection)
        if config.selection == "new_like" and not _usable(chosen):
            logger.warning(
                "stage2.selection = new_like, but no held-out rare item has samples of both "
                "labels: selecting on held-out mature items instead"
            )
            validation = {"mature": validation["mature"]}
        else:
            validation = {
                config.selection: chosen if chosen is not None else train.subset(slice(0))
            }
    weights = None
    if config.item_weight_power > 0:
        num_rows = int(features.global_embedding.shape[0])
        weights = item_balanced_weights(train, num_rows, config.item_weight_power)
    return Stage2Data(train=train, validation=validation, item_weights=weights)


def _usable(samples: RankerInputs | None) -> bool:
    """Whether ``samples`` can score an AUC (it holds both labels)."""
    return samples is not None and len(samples) > 0 and len(torch.unique(samples.label)) > 1


def idproxy_validation_sets(
    features: RowFeatures,
    mature_rows: torch.Tensor,
    ranker_samples: RankerInputs,
    extra_samples: RankerInputs | None,
    stage1_config: Stage1Config,
    stage2_config: Stage2Config,
) -> dict[str, RankerInputs]:
    """The validation sets :func:`train_idproxy` selects on for these arguments, without training.

    For the other cold-start methods, so they are chosen on the same held-out samples as IDProxy
    (pass them as ``ThroughRankerContext.validation``). The held-out mature items are Stage 1's
    seeded split of ``mature_rows``; the new-like items, Stage 2's of ``extra_samples``.
    """
    fit_rows, holdout_rows = split_mature_rows(
        mature_rows, stage1_config.holdout_fraction, stage1_config.seed
    )
    data = stage2_data(
        ranker_samples, extra_samples, fit_rows, holdout_rows, features, stage2_config
    )
    return data.validation


def stage1_proxy_model(
    stage1: Stage1Result, features: RowFeatures, id_dim: int, stage2_config: Stage2Config
) -> ProxyModel:
    """The Stage 1-only ProxyModel (gate closed: ``(N, D_enc), (N, K, D_enc) -> (N, D_id)`` is
    the coarse projector alone); its spec sizes the Stage 2 adaptor from ``stage2_config``."""
    spec = ProxyModelSpec(
        encoder_dim=features.encoder_dim,
        id_dim=id_dim,
        clusters=features.clusters,
        projector_hidden=stage1.projector.hidden_dim,
        adaptor_hidden=stage2_config.hidden_dim,
        dropout=stage2_config.dropout,
        gate_closed=True,
        coarse_unit_offsets=stage1.projector.unit_offsets,
    )
    model = ProxyModel(spec)
    model.projector.load_state_dict(stage1.projector.state_dict())
    model.eval()
    return model


def ridge_proxy_model(
    spec: ProxyModelSpec, features: RowFeatures, id_table: torch.Tensor, fit_rows: torch.Tensor
) -> tuple[ProxyModel, float]:
    """(the ridge-regression coarse proxy fitted on ``fit_rows``, its penalty); gate closed.

    id_table: (N_rows, D_id) raw IDs; fit_rows: (F,) rows it regresses on.
    """
    projector, penalty = fit_ridge_coarse(features, id_table, fit_rows)
    ridge = ProxyModel(
        replace(spec, projector_hidden=0, coarse_unit_offsets=False, gate_closed=True)
    )
    ridge.projector.load_state_dict(projector.state_dict())
    ridge.eval()
    return ridge, penalty


def train_idproxy(
    ranker: RankerAdapter,
    features: RowFeatures,
    mature_rows: torch.Tensor,
    ranker_samples: RankerInputs,
    extra_samples: RankerInputs | None,
    stage1_config: Stage1Config,
    stage2_config: Stage2Config,
) -> IdProxyTraining:
    """Train Stage 1 on mature items, then Stage 2 through the frozen ranker.

    Args:
        ranker: the frozen ranker.
        features: encoder features by ranker row.
        mature_rows: (M,) ranker rows of mature items.
        ranker_samples: the ranker's training samples; Stage 2 trains on those of the mature
            items outside the holdout and validates on those of the held-out items.
        extra_samples: logged samples of items that are neither mature nor cold (the split's
            ``rare`` part): some of their items validate, the rest train Stage 2 when
            ``stage2_config.use_rare_items``; None for none.
        stage1_config, stage2_config: settings of each stage.
    """
    id_table = ranker.id_embedding_table().detach().clone()
    started = time.perf_counter()
    stage1 = train_stage1(features, id_table, mature_rows, stage1_config)
    data = stage2_data(
        ranker_samples,
        extra_samples,
        stage1.fit_rows,
        stage1.holdout_rows,
        features,
        stage2_config,
    )
    stage1_model = stage1_proxy_model(stage1, features, int(id_table.shape[1]), stage2_config)
    spec = stage1_model.spec
    metrics = {f"stage1_{name}": value for name, value in stage1.metrics.items()}
    if stage1_config.scale_selection == "ranker_auc":
        chosen = select_coarse_scale(
            stage1_model, ranker, features, data.validation, stage1_config.scale_multipliers
        )
        metrics.update({f"stage1_{name}": value for name, value in chosen.items()})
    stage1_seconds = time.perf_counter() - started

    model = ProxyModel(replace(spec, gate_closed=stage2_config.gate_closed))
    model.projector.load_state_dict(stage1_model.projector.state_dict())
    stage2 = train_stage2(
        model, ranker, features, data.train, data.validation, stage2_config, data.item_weights
    )
    metrics.update({f"stage2_{name}": value for name, value in stage2.metrics.items()})
    metrics["stage1_seconds"] = stage1_seconds
    # a Stage 2 the guard refused is not served: the published model is the coarse one
    refused = stage2.metrics.get("served", 0.0) == 0.0
    served, served_name = (stage1_model, "stage1") if refused else (stage2.model, "stage2")
    if stage2_config.ridge_fallback:
        served, served_name = choose_ridge_blend(
            served,
            served_name,
            ranker,
            features,
            id_table,
            stage1.fit_rows,
            data.validation,
            stage2_config.ridge_weights,
            stage1_config.scale_multipliers,
            metrics,
        )
    metrics["served_model"] = served_name
    return IdProxyTraining(
        stage1_model=stage1_model,
        model=served,
        metrics=metrics,
        holdout_rows=stage1.holdout_rows,
    )


def ridge_blend(served: ProxyModel, ridge: ProxyModel, weight: float) -> ProxyModel:
    """The proxy ``(1 - weight) * served + weight * ridge`` as one ProxyModel (eval mode).

    ``weight`` 0 returns ``served`` and 1 returns ``ridge`` (a linear coarse proxy, gate closed);
    in between, a copy of ``served`` whose spec carries ``ridge_weight`` and whose ``ridge``
    module holds the ridge projector.
    """
    if weight <= 0.0:
        return served
    if weight >= 1.0:
        return ridge
    if served.ridge is not None:
        raise ValueError("ridge_blend: the served model is a blend already")
    linear = ridge.spec.projector_hidden == 0 and not ridge.spec.coarse_unit_offsets
    if not (linear and ridge.gate.closed):
        raise ValueError("ridge_blend: ridge must be a linear coarse proxy (ridge_proxy_model)")
    blended = ProxyModel(replace(served.spec, ridge_weight=weight))
    missing, unexpected = blended.load_state_dict(served.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("ridge.") for name in missing)
    blended.ridge.load_state_dict(ridge.projector.state_dict())
    return blended.eval()


def choose_ridge_blend(
    served: ProxyModel,
    served_name: str,
    ranker: RankerAdapter,
    features: RowFeatures,
    id_table: torch.Tensor,
    fit_rows: torch.Tensor,
    validation: dict[str, RankerInputs],
    weights: tuple[float, ...],
    scale_multipliers: tuple[float, ...],
    metrics: dict,
) -> tuple[ProxyModel, str]:
    """The blend of ``served`` with the ridge coarse proxy that ranks the validation items best.

    The ridge proxy is fitted on ``fit_rows`` (Stage 1's fit items), its scale chosen through
    the ranker like the Stage 1 scale; each ridge share ``w`` in ``weights`` is scored by
    :func:`~idproxy_stream.training.selection.selection_auc` and the best is served (ties keep
    the earlier weight). Returns the model and its name (``served_name``, ``"ridge"`` or
    ``"<served_name>+ridge"``); ``metrics`` gets the penalty, the scale and every score.
    """
    ridge, penalty = ridge_proxy_model(served.spec, features, id_table, fit_rows)
    chosen = select_coarse_scale(ridge, ranker, features, validation, scale_multipliers)
    metrics.update({"ridge_penalty": penalty, "ridge_scale_multiplier": chosen["scale_multiplier"]})
    best, best_auc, best_weight = served, float("-inf"), 0.0
    for weight in weights:
        candidate = ridge_blend(served, ridge, weight)
        auc = selection_auc(candidate, ranker, features, validation)["selection"]
        metrics[f"ridge_x{weight:g}_valid_auc"] = auc
        if auc > best_auc:
            best, best_auc, best_weight = candidate, auc, weight
    metrics["ridge_weight"] = best_weight
    if best_weight <= 0.0:
        return best, served_name
    return best, "ridge" if best_weight >= 1.0 else f"{served_name}+ridge"


def new_manifest(
    model: ProxyModel,
    version: str,
    encoder_fingerprint: str,
    id_space_fingerprint: str,
    training: dict,
    metrics: dict,
) -> ProxyManifest:
    """A manifest for ``model`` with its provenance."""
    return ProxyManifest(
        version=version,
        encoder_fingerprint=encoder_fingerprint,
        id_space_fingerprint=id_space_fingerprint,
        spec=model.spec,
        training=training,
        metrics=metrics,
    )
