"""Stage 1: contrastive alignment of content to the mature items' ID embeddings.

The projector phi maps each mature item's global content embedding to a direction; the target
is the item's L2-normalised ID embedding from the frozen ranker (centred on the mature mean
first when ``center_targets``: every ID shares a large common component, and without centring
the contrastive loss spends its capacity on it). The loss is the symmetric InfoNCE over in-batch
negatives (content->ID and ID->content), with a temperature that is fixed or learned. After
training, the proxy's length is calibrated by least squares on held-out mature items (see
``proxy/projector.py``), and Recall@1/10 of each held-out item's own ID among all mature IDs is
reported.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from idproxy_stream.config import Stage1Config
from idproxy_stream.errors import IdProxyError
from idproxy_stream.proxy.projector import CoarseProjector
from idproxy_stream.training.baselines import ridge_coefficients
from idproxy_stream.training.item_features import RowFeatures

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0  # at most one progress log line per this many seconds


class Stage1Error(IdProxyError, ValueError):
    """Stage 1 cannot run on the data given; the message says what to fix."""


@dataclass
class Stage1Result:
    """The trained projector and what training measured."""

    projector: CoarseProjector
    fit_rows: torch.Tensor
    holdout_rows: torch.Tensor
    loss_history: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def split_mature_rows(
    mature_rows: torch.Tensor, holdout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (fit, holdout) partition of mature item rows; deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    order = mature_rows[torch.randperm(len(mature_rows), generator=generator)]
    num_holdout = round(len(order) * holdout_fraction)
    return order[num_holdout:].sort().values, order[:num_holdout].sort().values


def contrastive_targets(id_embedding: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(N, D_id) raw IDs -> (N, D_id) unit targets ``normalize(id - centre)``."""
    return F.normalize(id_embedding - centre, dim=-1)


def symmetric_info_nce(
    directions: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over in-batch negatives: (B, D), (B, D) unit vectors -> scalar."""
    logits = directions @ targets.T / temperature
    labels = torch.arange(len(directions))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@torch.no_grad()
def retrieval_recall(
    directions: torch.Tensor,
    own_positions: torch.Tensor,
    candidates: torch.Tensor,
    ks: tuple[int, ...] = (1, 10),
) -> dict[str, float]:
    """Recall@k of each query's own target among all candidates.

    Args:
        directions: (Q, D) unit query vectors.
        own_positions: (Q,) index of each query's true target in ``candidates``.
        candidates: (M, D) unit target vectors.
    """
    scores = directions @ candidates.T
    own = scores.gather(1, own_positions.unsqueeze(1))
    rank = (scores > own).sum(1)
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def train_stage1(
    features: RowFeatures,
    id_table: torch.Tensor,
    mature_rows: torch.Tensor,
    config: Stage1Config,
) -> Stage1Result:
    """Train the coarse projector on mature items.

    The loss is ``contrastive_weight * InfoNCE(directions, normalised centred IDs)`` plus, when
    ``regression_weight > 0``, ``regression_weight * ||phi(g) - (y - centre)||^2 / E||y -
    centre||^2``. With a regression term the projector's raw output is the offset (a length per
    item) and training keeps the epoch with the lowest held-out squared error; without it the
    offset is a unit direction and every epoch runs (the paper's Stage 1).

    Args:
        features: encoder features by ranker row.
        id_table: (N_rows, D_id) the frozen ranker's ID embeddings.
        mature_rows: (M,) rows of mature items (interactions >= tau).
        config: Stage 1 settings.
    """
    mature_rows = mature_rows[features.has_features[mature_rows]]
    if len(mature_rows) < 4:
        raise Stage1Error(
            f"Stage 1 needs at least 4 mature items with content features, found "
            f"{len(mature_rows)}: lower stage1.tau or check that features cover the catalogue"
        )
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    fit_rows, holdout_rows = split_mature_rows(mature_rows, config.holdout_fraction, config.seed)
    id_table = id_table.detach()
    if config.objective == "ridge":
        projector, penalty = fit_ridge_coarse(features, id_table, fit_rows)
        result = Stage1Result(projector=projector, fit_rows=fit_rows, holdout_rows=holdout_rows)
        result.metrics = {
            "ridge_penalty": penalty,
            "scale": 1.0,
            "mature_items": len(mature_rows),
            "seconds": time.perf_counter() - started,
        }
        return result
    regression = config.regression_weight > 0
    projector = CoarseProjector(
        features.encoder_dim,
        id_table.shape[1],
        config.hidden_dim,
        config.dropout,
        unit_offsets=not regression,
    )
    centre = id_table[fit_rows].mean(0) if config.center_targets else torch.zeros(id_table.shape[1])
    projector.centre.copy_(centre)
    log_temperature = torch.nn.Parameter(
        torch.tensor(math.log(config.temperature)), requires_grad=config.learn_temperature
    )
    parameters = [*projector.parameters(), log_temperature]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    targets = contrastive_targets(id_table, centre)
    offsets = id_table - centre
    offset_variance = offsets[fit_rows].pow(2).sum(-1).mean().clamp(min=1e-12)
    result = Stage1Result(projector=projector, fit_rows=fit_rows, holdout_rows=holdout_rows)
    selection_rows = holdout_rows if len(holdout_rows) else fit_rows
    best_error, best_epoch = float("inf"), 0
    best_state = copy.deepcopy(projector.state_dict())
    next_report = time.monotonic() + PROGRESS_EVERY_S
    for epoch in range(1, config.epochs + 1):
        projector.train()
        order = fit_rows[torch.randperm(len(fit_rows), generator=generator)]
        epoch_loss, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            if len(rows) < 2:
                continue
            raw = projector.net(features.global_embedding[rows])
            loss = torch.zeros(())
            if config.contrastive_weight > 0:
                temperature = log_temperature.exp().clamp(0.01, 1.0)
                contrastive = symmetric_info_nce(
                    F.normalize(raw, dim=-1), targets[rows], temperature
                )
                loss = loss + config.contrastive_weight * contrastive
            if regression:
                squared = (raw - offsets[rows]).pow(2).sum(-1).mean() / offset_variance
                loss = loss + config.regression_weight * squared
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss, batches = epoch_loss + float(loss.detach()), batches + 1
        result.loss_history.append(epoch_loss / max(batches, 1))
        if time.monotonic() > next_report:
            logger.info(
                "stage 1 epoch %d/%d: loss %.4f", epoch, config.epochs, result.loss_history[-1]
            )
            next_report = time.monotonic() + PROGRESS_EVERY_S
        if not regression:
            continue
        projector.eval()
        with torch.no_grad():
            raw = projector.net(features.global_embedding[selection_rows])
            error = float((raw - offsets[selection_rows]).pow(2).sum(-1).mean())
        if error < best_error:
            best_error, best_epoch = error, epoch
            best_state = copy.deepcopy(projector.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    if regression:
        projector.load_state_dict(best_state)
    projector.eval()

    scale = projector.calibrate(features.global_embedding[selection_rows], id_table[selection_rows])
    result.metrics = {
        "scale": scale,
        "temperature": float(log_temperature.detach().exp().clamp(0.01, 1.0)),
        "final_loss": result.loss_history[-1] if result.loss_history else float("nan"),
        "mature_items": len(mature_rows),
        "epochs": float(len(result.loss_history)),
        "seconds": time.perf_counter() - started,
    }
    if regression:
        result.metrics["best_epoch"] = float(best_epoch)
        result.metrics["holdout_relative_error"] = best_error / float(
            offsets[selection_rows].pow(2).sum(-1).mean().clamp(min=1e-12)
        )
    if len(holdout_rows):
        result.metrics.update(
            stage1_recall(projector, features, targets, mature_rows, holdout_rows)
        )
    logger.info("stage 1: %s", result.metrics)
    return result


@torch.no_grad()
def fit_ridge_coarse(
    features: RowFeatures, id_table: torch.Tensor, fit_rows: torch.Tensor
) -> tuple[CoarseProjector, float]:
    """A linear coarse projector fitted by ridge regression of raw IDs on global embeddings.

    The centre is the fit items' mean ID and the linear map predicts the offset from it (its
    penalty chosen by 5-fold cross-validation over ``fit_rows``); the scale starts at 1. Returns
    the projector and the penalty.
    """
    id_table = id_table.detach()
    centre = id_table[fit_rows].mean(0)
    coefficients, penalty = ridge_coefficients(
        features.global_embedding[fit_rows], id_table[fit_rows] - centre
    )
    projector = CoarseProjector(
        features.encoder_dim, id_table.shape[1], hidden_dim=0, unit_offsets=False
    )
    linear = projector.net[0]
    linear.weight.copy_(coefficients[:-1].T.float())
    linear.bias.copy_(coefficients[-1].float())
    projector.centre.copy_(centre)
    projector.eval()
    return projector, penalty


@torch.no_grad()
def stage1_recall(
    projector: CoarseProjector,
    features: RowFeatures,
    targets: torch.Tensor,
    mature_rows: torch.Tensor,
    query_rows: torch.Tensor,
) -> dict[str, float]:
    """Recall@1/10 of each query item's own ID among all mature IDs."""
    projector.eval()
    position_of_row = {int(row): position for position, row in enumerate(mature_rows)}
    own = torch.tensor([position_of_row[int(row)] for row in query_rows])
    directions = projector.direction(features.global_embedding[query_rows])
    return retrieval_recall(directions, own, targets[mature_rows])
