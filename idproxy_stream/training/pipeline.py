"""IDProxy end to end: Stage 1 then Stage 2, producing a versioned ProxyModel.

Shared by ``idproxy train``, the cold-start evaluation and the demo, so every path trains the
same way. The same held-out mature items serve Stage 1 (scale calibration, Recall@k) and Stage 2
(model selection); neither stage trains on them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from idproxy_stream.config import Stage1Config, Stage2Config
from idproxy_stream.proxy.model import ProxyManifest, ProxyModel, ProxyModelSpec
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.stage1 import train_stage1
from idproxy_stream.training.stage2 import samples_of_items, train_stage2

logger = logging.getLogger(__name__)


@dataclass
class IdProxyTraining:
    """Both stages' outputs: the Stage 1-only model, the full model and their metrics."""

    stage1_model: ProxyModel
    model: ProxyModel
    metrics: dict[str, float] = field(default_factory=dict)
    holdout_rows: torch.Tensor | None = None


def stage2_samples(
    ranker_samples: RankerInputs,
    extra_samples: RankerInputs | None,
    fit_rows: torch.Tensor,
    holdout_rows: torch.Tensor,
    features: RowFeatures,
    max_extra_samples: int | None = None,
    seed: int = 0,
) -> tuple[RankerInputs, RankerInputs]:
    """(train, valid) samples of Stage 2.

    Train: the ranker's samples of the fit items plus the extra samples of items that have
    content features (a seeded random subset of at most ``max_extra_samples``). Valid: the
    ranker's samples of the held-out items.
    """
    train = samples_of_items(ranker_samples, fit_rows)
    if extra_samples is not None and len(extra_samples):
        extra = extra_samples.subset(features.has_features[extra_samples.item])
        if max_extra_samples is not None and len(extra) > max_extra_samples:
            generator = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(extra), generator=generator)[:max_extra_samples]
            extra = extra.subset(keep.sort().values)
        train = RankerInputs.concat([train, extra])
    return train, samples_of_items(ranker_samples, holdout_rows)


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
        extra_samples: more logged samples of items that are neither mature nor cold (e.g. the
            split's ``rare`` part), added to Stage 2's training data; None for none.
        stage1_config, stage2_config: settings of each stage.
    """
    id_table = ranker.id_embedding_table().detach().clone()
    started = time.perf_counter()
    stage1 = train_stage1(features, id_table, mature_rows, stage1_config)
    spec = ProxyModelSpec(
        encoder_dim=features.encoder_dim,
        id_dim=int(id_table.shape[1]),
        clusters=features.clusters,
        projector_hidden=stage1_config.hidden_dim,
        adaptor_hidden=stage2_config.hidden_dim,
        dropout=stage2_config.dropout,
        gate_closed=True,
    )
    stage1_model = ProxyModel(spec)
    stage1_model.projector.load_state_dict(stage1.projector.state_dict())
    stage1_model.eval()
    stage1_seconds = time.perf_counter() - started

    model = ProxyModel(
        ProxyModelSpec(
            **{
                **spec.to_dict(),
                "clusters": spec.clusters,
                "gate_closed": stage2_config.gate_closed,
            }
        )
    )
    model.projector.load_state_dict(stage1.projector.state_dict())
    train_samples, valid_samples = stage2_samples(
        ranker_samples,
        extra_samples,
        stage1.fit_rows,
        stage1.holdout_rows,
        features,
        stage2_config.max_rare_samples,
        stage2_config.seed,
    )
    stage2 = train_stage2(model, ranker, features, train_samples, valid_samples, stage2_config)
    metrics = {f"stage1_{name}": value for name, value in stage1.metrics.items()}
    metrics.update({f"stage2_{name}": value for name, value in stage2.metrics.items()})
    metrics["stage1_seconds"] = stage1_seconds
    return IdProxyTraining(
        stage1_model=stage1_model,
        model=stage2.model,
        metrics=metrics,
        holdout_rows=stage1.holdout_rows,
    )


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
