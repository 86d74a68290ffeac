"""What every through-the-ranker cold-start baseline is fit on, and the helpers they share.

Meta-Embedding, MWUF and CVAR all learn on mature items' samples through the frozen ranker.
:class:`ThroughRankerContext` bundles what they may read (the ranker, content features by row,
the mature rows and the ranker's training samples); nothing in it describes a cold item, so a
method fit on a context cannot be supervised by cold items' rows.

Model selection. Every method chooses its epoch (or any other setting) by the ranker's AUC on
held-out items with each candidate's ID replaced by the method's cold-start embedding, scored by
:func:`~idproxy_stream.training.selection.validation_aucs` (the same function IDProxy is
selected by). With ``validation`` given, the held-out items are those of the validation sets
(IDProxy's, so every method is chosen on the same samples) and none of them is fit; without it,
a seeded share of the mature items is held out (:meth:`ThroughRankerContext.split_mature`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from idproxy_stream.errors import IdProxyError
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.selection import Embed, validation_aucs

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
    validation: held-out samples by name (e.g. ``{"mature": ..., "new_like": ...}``, IDProxy's
        validation sets) that choose each method's epoch by the mean of their AUCs; their
        candidate items are never fit. None = hold out a share of the mature items instead.
    """

    ranker: RankerAdapter
    features: RowFeatures
    mature_rows: torch.Tensor
    samples: RankerInputs
    item_counts: torch.Tensor
    seed: int = 0
    validation: dict[str, RankerInputs] | None = None

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
        if self.validation is not None and len(self.fit_rows_outside_validation()) < 2:
            raise ColdStartContextError(
                "fewer than 2 mature items remain outside the validation sets' items; pass"
                " validation sets of held-out items, not of every mature item"
            )

    def id_table(self) -> torch.Tensor:
        """(N_rows, D) detached copy of the ranker's ID table."""
        return self.ranker.id_embedding_table().detach().clone()

    def split_mature(self, holdout_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(fit rows, held-out rows): a seeded random ``holdout_fraction`` of the mature rows.

        The held-out rows serve model selection only; with ``holdout_fraction`` 0 every
        mature row is fit and the held-out set is empty. Ignores ``validation`` (see
        :meth:`selection_split`).
        """
        if holdout_fraction <= 0.0:
            return self.mature_rows.clone(), self.mature_rows[:0]
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.mature_rows), generator=generator)
        held = max(1, round(len(self.mature_rows) * holdout_fraction))
        return self.mature_rows[order[held:]].sort().values, self.mature_rows[
            order[:held]
        ].sort().values

    def validation_rows(self) -> torch.Tensor:
        """(V,) sorted candidate rows of the ``validation`` sets (empty when None)."""
        if self.validation is None:
            return self.mature_rows[:0]
        items = [samples.item for samples in self.validation.values()]
        return torch.unique(torch.cat(items)) if items else self.mature_rows[:0]

    def fit_rows_outside_validation(self) -> torch.Tensor:
        """(M',) the mature rows that are not a candidate of any validation sample."""
        held = self.validation_rows()
        return self.mature_rows[~torch.isin(self.mature_rows, held)]

    def selection_split(
        self, holdout_fraction: float
    ) -> tuple[torch.Tensor, dict[str, RankerInputs]]:
        """(fit rows (M',), validation sets): what a method fits on and is chosen by.

        With ``validation`` given: the mature rows outside its items, and ``validation``
        itself. Otherwise :meth:`split_mature` and ``{"mature": held-out rows' samples}`` (no
        sets when ``holdout_fraction`` is 0, and then nothing is chosen).
        """
        if self.validation is not None:
            return self.fit_rows_outside_validation(), dict(self.validation)
        fit_rows, held_rows = self.split_mature(holdout_fraction)
        if len(held_rows) == 0:
            return fit_rows, {}
        return fit_rows, {"mature": self.samples_of(held_rows)}

    def selection_scores(
        self, validation: dict[str, RankerInputs], embed: Embed
    ) -> dict[str, float]:
        """Validation AUCs with candidates embedded by ``embed`` (rows (B,) -> (B, D)), and their
        mean under ``"selection"`` (:func:`~idproxy_stream.training.selection.validation_aucs`).
        """
        with frozen_ranker(self.ranker):
            return validation_aucs(self.ranker, validation, embed)

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


class BestCheckpoint:
    """Early stopping by selection AUC: keeps a copy of the best-scoring state of ``module``.

    Checkpoint 0 (the state it is created with) is a candidate unless ``include_initial`` is
    False; ties keep the earlier checkpoint. A NaN score (no validation set to choose by) keeps
    the latest state and never stops. ``unit`` names the checkpoints in :meth:`metrics`
    ("epoch", "checkpoint").
    """

    def __init__(
        self, module: nn.Module, patience: int, unit: str = "epoch", include_initial: bool = True
    ) -> None:
        self.module = module
        self.patience = patience
        self.unit = unit
        self.scores: dict[int, float] = {}
        self.best_score = -math.inf
        self.best_index = 0
        self.since_best = 0
        self.state = copy.deepcopy(module.state_dict())
        self.include_initial = include_initial

    def record(self, index: int, score: float) -> bool:
        """Record checkpoint ``index``'s selection score; True when training should stop."""
        self.scores[index] = score
        if index == 0 and not self.include_initial:
            return False
        if math.isnan(score) or score > self.best_score:
            if not math.isnan(score):
                self.best_score = score
            self.best_index, self.since_best = index, 0
            self.state = copy.deepcopy(self.module.state_dict())
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def restore(self) -> None:
        """Load the best state back into the module."""
        self.module.load_state_dict(self.state)

    def metrics(self) -> dict[str, float]:
        """The chosen checkpoint, its score (NaN without validation) and every one's score."""
        unit = self.unit
        metrics = {
            "best_selection_auc": self.scores.get(self.best_index, float("nan")),
            f"best_{unit}": float(self.best_index),
            f"{unit}s_run": float(max(self.scores, default=0)),
        }
        metrics.update({f"selection_auc_{unit}_{i}": score for i, score in self.scores.items()})
        return metrics


@dataclass(frozen=True)
class ContentScaler:
    """Per-dimension standardisation of content features, fit on the supervising rows.

    mean, std: (D_enc,); ``std`` is floored so constant dimensions map to 0.
    unit_rms: also divide by sqrt(D_enc), so a standardised item has root-mean-square norm 1
        instead of sqrt(D_enc) (a layer's output then moves as much per Adam step whatever
        the encoder's width).
    """

    mean: torch.Tensor
    std: torch.Tensor
    unit_rms: bool = False

    @classmethod
    def fit(
        cls, features: RowFeatures, rows: torch.Tensor, unit_rms: bool = False
    ) -> ContentScaler:
        content = features.global_embedding[rows]
        return cls(mean=content.mean(0), std=content.std(0).clamp(min=1e-6), unit_rms=unit_rms)

    def __call__(self, content: torch.Tensor) -> torch.Tensor:
        """(..., D_enc) -> (..., D_enc) standardised."""
        standardised = (content - self.mean) / self.std
        return standardised / math.sqrt(len(self.mean)) if self.unit_rms else standardised
