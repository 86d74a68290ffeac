"""What every through-the-ranker cold-start baseline is fit on, and the helpers they share.

Meta-Embedding, MWUF and CVAR all learn on mature items' samples through the frozen ranker.
:class:`ThroughRankerContext` bundles what they may read (the ranker, content features by row,
the mature rows and the ranker's training samples); nothing in it describes a cold item, so a
method fit on a context cannot be supervised by cold items' rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from idproxy_stream.errors import IdProxyError
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.metrics import roc_auc
from idproxy_stream.training.item_features import RowFeatures

logger = logging.getLogger(__name__)


class ColdStartContextError(IdProxyError, ValueError):
    """A :class:`ThroughRankerContext` that cannot supervise a cold-start method."""


def interaction_counts(samples: RankerInputs, num_rows: int) -> torch.Tensor:
    """(num_rows,) int64: how many of ``samples`` have each row as candidate (row 0 -> 0)."""
    counts = torch.bincount(samples.item, minlength=num_rows)
    counts[0] = 0
    return counts


@dataclass(frozen=True)
class ThroughRankerContext:
    """The supervision a cold-start baseline may use: mature items seen through the ranker.

    ranker: the frozen ranker (never trained here; its weights stay bit-identical).
    features: content features by ranker row (``global_embedding`` (N_rows, D_enc)).
    mature_rows: (M,) int64 ranker rows of the mature items that supervise the method.
    samples: the ranker's training samples (warm_train + warm_valid); only those whose
        candidate is a mature row are used.
    item_counts: (N_rows,) interactions per row in ``samples`` (see :func:`interaction_counts`).
    seed: seeds every random step of a fit.
    """

    ranker: RankerAdapter
    features: RowFeatures
    mature_rows: torch.Tensor
    samples: RankerInputs
    item_counts: torch.Tensor
    seed: int = 0

    def __post_init__(self) -> None:
        num_rows = int(self.features.global_embedding.shape[0])
        if len(self.mature_rows) < 2:
            raise ColdStartContextError(
                f"a cold-start baseline needs at least 2 mature items, got {len(self.mature_rows)}"
                " (lower stage1.tau or use more data)"
            )
        if bool((self.mature_rows <= 0).any()) or int(self.mature_rows.max()) >= num_rows:
            raise ColdStartContextError(
                f"mature_rows must be ranker item rows in 1..{num_rows - 1} (row 0 is padding)"
            )
        if self.item_counts.shape != (num_rows,):
            raise ColdStartContextError(
                f"item_counts must have shape ({num_rows},), one count per ranker row; got "
                f"{tuple(self.item_counts.shape)} (build it with interaction_counts)"
            )

    def id_table(self) -> torch.Tensor:
        """(N_rows, D) detached copy of the ranker's ID table."""
        return self.ranker.id_embedding_table().detach().clone()

    def split_mature(self, holdout_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(fit rows, held-out rows): a seeded random ``holdout_fraction`` of the mature rows.

        The held-out rows serve model selection only; with ``holdout_fraction`` 0 every
        mature row is fit and the held-out set is empty.
        """
        if holdout_fraction <= 0.0:
            return self.mature_rows.clone(), self.mature_rows[:0]
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.mature_rows), generator=generator)
        held = max(1, round(len(self.mature_rows) * holdout_fraction))
        return self.mature_rows[order[held:]].sort().values, self.mature_rows[
            order[:held]
        ].sort().values

    def samples_of(self, rows: torch.Tensor) -> RankerInputs:
        """The samples whose candidate is one of ``rows``."""
        mask = torch.from_numpy(np.isin(self.samples.item.numpy(), rows.numpy()))
        return self.samples.subset(mask)


@contextmanager
def frozen_ranker(ranker: RankerAdapter, eval_mode: bool = True) -> Iterator[None]:
    """Freeze the ranker inside the block; restore its requires_grad flags and mode after.

    ``eval_mode`` also switches it to eval mode (dropout off) for the block.
    """
    parameters = list(ranker.parameters()) if hasattr(ranker, "parameters") else []
    requires_grad = [p.requires_grad for p in parameters]
    was_training = bool(getattr(ranker, "training", False))
    for parameter in parameters:
        parameter.requires_grad_(False)
    if eval_mode and hasattr(ranker, "eval"):
        ranker.eval()
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, requires_grad, strict=True):
            parameter.requires_grad_(flag)
        if eval_mode and was_training and hasattr(ranker, "train"):
            ranker.train()


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block (module initialisers draw from it), then restore
    the caller's RNG state, so fitting a baseline changes no process-wide state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def row_positions(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """(num_rows,) int64: the position of each row in ``rows`` (M,), -1 for rows not in it."""
    positions = torch.full((num_rows,), -1, dtype=torch.long)
    positions[rows] = torch.arange(len(rows))
    return positions


def click_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of click logits (B,) against labels (B,)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


@torch.no_grad()
def candidate_auc(
    ranker: RankerAdapter,
    samples: RankerInputs,
    rows: torch.Tensor,
    embeddings: torch.Tensor,
    batch_size: int = 4096,
) -> float:
    """AUC of the ranker on ``samples`` with each candidate's ID replaced by its embedding.

    Args:
        rows: (Q,) the candidate rows that ``embeddings`` (Q, D) stand in for; every sample's
            candidate must be one of them.
    """
    if len(samples) == 0:
        return float("nan")
    positions = row_positions(rows, int(max(int(rows.max()), int(samples.item.max())) + 1))
    logits = [
        ranker.forward(batch, embeddings[positions[batch.item]])
        for batch in samples.batches(batch_size)
    ]
    return roc_auc(samples.label.numpy(), torch.cat(logits).numpy())


@dataclass(frozen=True)
class ContentScaler:
    """Per-dimension standardisation of content features, fit on the supervising rows.

    mean, std: (D_enc,); ``std`` is floored so constant dimensions map to 0.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, features: RowFeatures, rows: torch.Tensor) -> ContentScaler:
        content = features.global_embedding[rows]
        return cls(mean=content.mean(0), std=content.std(0).clamp(min=1e-6))

    def __call__(self, content: torch.Tensor) -> torch.Tensor:
        """(..., D_enc) -> (..., D_enc) standardised."""
        return (content - self.mean) / self.std
