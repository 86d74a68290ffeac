"""Choosing through the frozen ranker: AUC of proxies on held-out items, and the coarse scale.

Held-out mature items were in the ranker's training data; held-out rare ("new-like") items
never were, like the new items the proxies are for. Both stages are judged by the mean AUC over
the validation sets they are given (see ``training/pipeline.py``), with each candidate's ID
embedding replaced by its proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from idproxy_stream.proxy.model import ProxyModel
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.metrics import roc_auc
from idproxy_stream.training.item_features import RowFeatures

logger = logging.getLogger(__name__)


def proxies_for_rows(model: ProxyModel, features: RowFeatures, rows: torch.Tensor) -> torch.Tensor:
    """Proxies for item rows of any shape: (...) -> (..., D_id), each distinct row computed once."""
    unique, inverse = torch.unique(rows, return_inverse=True)
    proxies = model(features.global_embedding[unique], features.cluster_states[unique])
    return proxies[inverse]


Embed = Callable[[torch.Tensor], torch.Tensor]
"""A stand-in for the ranker's ID lookup: candidate rows (B,) -> embeddings (B, D_id)."""


@torch.no_grad()
def embedding_auc(
    ranker: RankerAdapter, samples: RankerInputs, embed: Embed, batch_size: int = 4096
) -> float:
    """AUC of the ranker on ``samples`` with each candidate's ID replaced by ``embed(rows)``.

    Args:
        embed: candidate rows (B,) -> (B, D_id) embeddings (a proxy model, a generator, ...).
    """
    if len(samples) == 0:
        return float("nan")
    logits = [ranker.forward(batch, embed(batch.item)) for batch in samples.batches(batch_size)]
    return roc_auc(samples.label.numpy(), torch.cat(logits).numpy())


def validation_aucs(
    ranker: RankerAdapter, validation: dict[str, RankerInputs], embed: Embed
) -> dict[str, float]:
    """:func:`embedding_auc` on each usable validation set, plus their mean under ``"selection"``.

    A set is usable when it has samples of both labels; with none usable the selection score
    is NaN (and nothing can be chosen by it). Every model selection through the ranker (IDProxy's
    stages and the through-ranker baselines) is scored by this one function.
    """
    scores = {
        name: embedding_auc(ranker, samples, embed)
        for name, samples in validation.items()
        if len(samples) and len(torch.unique(samples.label)) > 1
    }
    scores["selection"] = float(np.mean(list(scores.values()))) if scores else float("nan")
    return scores


def proxy_auc(
    model: ProxyModel,
    ranker: RankerAdapter,
    features: RowFeatures,
    samples: RankerInputs,
    batch_size: int = 4096,
) -> float:
    """AUC of the ranker on ``samples`` with each candidate's ID replaced by its proxy."""
    model.eval()
    return embedding_auc(
        ranker, samples, lambda rows: proxies_for_rows(model, features, rows), batch_size
    )


def selection_auc(
    model: ProxyModel,
    ranker: RankerAdapter,
    features: RowFeatures,
    validation: dict[str, RankerInputs],
) -> dict[str, float]:
    """Proxy AUC on each usable validation set, plus their mean under ``"selection"``.

    See :func:`validation_aucs`.
    """
    model.eval()
    return validation_aucs(ranker, validation, lambda rows: proxies_for_rows(model, features, rows))


@torch.no_grad()
def select_coarse_scale(
    model: ProxyModel,
    ranker: RankerAdapter,
    features: RowFeatures,
    validation: dict[str, RankerInputs],
    multipliers: tuple[float, ...],
) -> dict[str, float]:
    """Set the coarse projector's scale to the multiple of its calibrated scale that ranks best.

    The least-squares scale minimises the squared error to the ID embeddings, which on small,
    noisy ID tables shrinks the proxy almost to the mean ID; what the ranker needs is the length
    under which it ranks held-out items best. Each multiplier of the current scale is tried (the
    model's gate must be closed, so the proxy is the coarse one) and the best by
    :func:`selection_auc` is kept; ties keep the smaller scale. Returns the chosen multiplier,
    the scale and the selection AUC at each multiplier.
    """
    if not model.gate.closed:
        raise ValueError("select_coarse_scale needs a model with a closed gate (coarse proxy)")
    base = float(model.projector.scale)
    report: dict[str, float] = {}
    best_multiplier, best_auc = 1.0, -np.inf
    for multiplier in sorted(multipliers):
        model.projector.scale.fill_(base * multiplier)
        auc = selection_auc(model, ranker, features, validation)["selection"]
        report[f"scale_x{multiplier:g}_auc"] = auc
        if auc > best_auc:
            best_multiplier, best_auc = multiplier, auc
    if not np.isfinite(best_auc):
        best_multiplier = 1.0
    model.projector.scale.fill_(base * best_multiplier)
    report.update(
        {
            "scale_multiplier": best_multiplier,
            "selected_scale": base * best_multiplier,
            "least_squares_scale": base,
        }
    )
    logger.info("coarse scale: x%g of %.4f (selection AUC %.4f)", best_multiplier, base, best_auc)
    return report
