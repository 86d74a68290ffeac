"""Stage 2: train the fine adaptor and the residual gate end-to-end through the frozen ranker.

For every training sample the candidate item's ID embedding is replaced by its proxy
``p = p_coarse + g * p_fine``, computed from the item's content features; with probability
``history_proxy_probability`` each behaviour item's ID embedding is replaced by its proxy too, so
the proxy is trained for the target attention as well as for the feature interaction. The loss is
the ranker's own click loss (BCE). Only the adaptor and the gate learn: the ranker and the Stage 1
projector are frozen (their weights are bit-identical afterwards), and the encoder is not involved
at all (features are cached).

Model selection: after each epoch, AUC on samples of *held-out items* (mature items that Stage 2
never trains on), with their candidate embedding replaced by the proxy; the best epoch's weights
are kept. Selecting on held-out items, not held-out samples of training items, is what measures
generalisation to new items. With ``weight_average_decay > 0`` an exponential moving average of
the trainable weights is what is scored, kept and served (the raw weights keep training).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from idproxy_stream.config import Stage2Config
from idproxy_stream.proxy.model import ProxyModel
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerBatch, RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.selection import proxies_for_rows, selection_auc

logger = logging.getLogger(__name__)


@dataclass
class Stage2Result:
    model: ProxyModel
    valid_auc: list[float] = field(default_factory=list)
    best_epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def proxy_override(
    model: ProxyModel,
    features: RowFeatures,
    id_table: torch.Tensor,
    batch: RankerBatch,
    history_probability: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Candidate proxies (B, D) and, if asked, behaviour embeddings with some proxies (B, H, D)."""
    candidate = proxies_for_rows(model, features, batch.item)
    if history_probability <= 0.0:
        return candidate, None
    replace = (
        (torch.rand(batch.history.shape, generator=generator) < history_probability)
        & features.has_features[batch.history]
        & (batch.history > 0)
    )
    history = id_table[batch.history]
    if bool(replace.any()):
        history = history.clone()
        history[replace] = proxies_for_rows(model, features, batch.history[replace])
    return candidate, history


def train_stage2(
    model: ProxyModel,
    ranker: RankerAdapter,
    features: RowFeatures,
    train_samples: RankerInputs,
    validation: RankerInputs | dict[str, RankerInputs],
    config: Stage2Config,
    item_weights: torch.Tensor | None = None,
) -> Stage2Result:
    """Train ``model``'s adaptor and gate in place; see the module docstring.

    Args:
        model: a ProxyModel whose projector Stage 1 trained.
        ranker: the frozen ranker (any RankerAdapter).
        features: encoder features by ranker row.
        train_samples: samples whose candidates are proxied during training.
        validation: samples of held-out items for model selection, one set or several by name
            (the selection score is the mean of their AUCs).
        config: Stage 2 settings.
        item_weights: (N_rows,) loss weight of a sample by its candidate's row; None = 1.

    The epoch with the best selection score is kept; if that score does not beat the coarse
    proxy's (epoch 0) by more than ``config.min_gain``, the result keeps epoch 0, whose proxy is
    exactly the coarse one (the adaptor's output layer starts at zero), and
    ``metrics["served"]`` is 0.
    """
    result = Stage2Result(model=model)
    if model.gate.closed:
        logger.info("stage 2: gate closed, the proxy is the Stage 1 proxy; nothing to train")
        return result
    if not isinstance(validation, dict):
        validation = {"mature": validation}
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    ranker_parameters = list(ranker.parameters()) if hasattr(ranker, "parameters") else []
    requires_grad = [p.requires_grad for p in ranker_parameters]
    for parameter in ranker_parameters:
        parameter.requires_grad_(False)
    if hasattr(ranker, "eval"):
        ranker.eval()
    for parameter in model.projector.parameters():
        parameter.requires_grad_(False)
    trainable = [*model.adaptor.parameters(), *model.gate.parameters()]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    id_table = ranker.id_embedding_table().detach()
    generator = torch.Generator().manual_seed(config.seed)
    coarse_scores = selection_auc(model, ranker, features, validation)
    best_auc = coarse_scores["selection"]
    result.valid_auc.append(best_auc)
    initial_state = copy.deepcopy(model.state_dict())
    best_state = initial_state
    best_scores = coarse_scores
    averaged = (
        WeightAverage(trainable, config.weight_average_decay)
        if config.weight_average_decay > 0
        else None
    )
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            model.projector.eval()
            for batch in train_samples.batches(
                config.batch_size, shuffle=True, generator=generator
            ):
                candidate, history = proxy_override(
                    model,
                    features,
                    id_table,
                    batch,
                    config.history_proxy_probability,
                    generator,
                )
                weight = None if item_weights is None else item_weights[batch.item]
                loss = F.binary_cross_entropy_with_logits(
                    ranker.forward(batch, candidate, history), batch.label, weight=weight
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if averaged is not None:
                    averaged.update(trainable)
            if averaged is not None:
                averaged.swap_into(trainable)
            scores = selection_auc(model, ranker, features, validation)
            auc = scores["selection"]
            result.valid_auc.append(auc)
            logger.info(
                "stage 2 epoch %d/%d: held-out-item AUC %s", epoch, config.epochs, _rounded(scores)
            )
            if auc > best_auc:
                best_auc, result.best_epoch, best_scores = auc, epoch, scores
                best_state = copy.deepcopy(model.state_dict())
            if averaged is not None:
                averaged.swap_into(trainable)
            if epoch - result.best_epoch >= config.patience:
                break
    finally:
        for parameter, flag in zip(ranker_parameters, requires_grad, strict=True):
            parameter.requires_grad_(flag)
        for parameter in model.projector.parameters():
            parameter.requires_grad_(True)
    served = best_auc > coarse_scores["selection"] + config.min_gain
    if not served:
        best_state, best_scores, result.best_epoch = initial_state, coarse_scores, 0
        best_auc = coarse_scores["selection"]
    model.load_state_dict(best_state)
    model.eval()
    result.metrics = {
        "best_valid_auc": best_auc,
        "stage1_valid_auc": coarse_scores["selection"],
        "best_epoch": float(result.best_epoch),
        "served": float(served),
        "seconds": time.perf_counter() - started,
        "train_samples": float(len(train_samples)),
        "valid_samples": float(sum(len(samples) for samples in validation.values())),
    }
    for name in validation:
        if name in best_scores:
            result.metrics[f"{name}_valid_auc"] = best_scores[name]
            result.metrics[f"{name}_stage1_valid_auc"] = coarse_scores[name]
    return result


class WeightAverage:
    """An exponential moving average of parameters: ``avg <- decay * avg + (1 - decay) * w``.

    ``swap_into`` exchanges the averaged and the live values in place (call it twice to undo),
    so the model can be scored and copied with its averaged weights between training epochs.
    """

    def __init__(self, parameters: list[torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.values = [parameter.detach().clone() for parameter in parameters]

    @torch.no_grad()
    def update(self, parameters: list[torch.nn.Parameter]) -> None:
        for average, parameter in zip(self.values, parameters, strict=True):
            average.lerp_(parameter.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap_into(self, parameters: list[torch.nn.Parameter]) -> None:
        for average, parameter in zip(self.values, parameters, strict=True):
            live = parameter.detach().clone()
            parameter.copy_(average)
            average.copy_(live)


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in scores.items()}


def samples_of_items(samples: RankerInputs, item_rows: torch.Tensor) -> RankerInputs:
    """The samples whose candidate is one of ``item_rows``."""
    mask = torch.from_numpy(np.isin(samples.item.numpy(), item_rows.numpy()))
    return samples.subset(mask)
