"""The warm-up phase of the cold-start protocol, driven through a :class:`ColdEmbeddings` object.

After cold start, only the cold items' embeddings learn, on warm-up set a, then b, then c (one
pass each by default, Adam, the ranker frozen), and the cold test set is scored after each stage.
Most methods only choose the starting point, so their cold embeddings are a free (C, D)
parameter (:class:`FreeColdEmbeddings`). Some warm up in their own way, so the loop asks a
:class:`ColdEmbeddings` object for everything method-specific:

- ``parameters()``: the tensors the warm-up optimiser updates;
- ``training_embeddings()``: the (C, D) embeddings the warm-up loss reads (differentiable);
- ``embeddings()``: the (C, D) embeddings the ranker is scored with;
- ``begin_stage(samples)``: called with a stage's samples before training on them (MWUF counts
  the users who interacted with each cold item there);
- ``end_stage(samples)``: called after training on them, before scoring (CVAR fine-tunes its
  networks on the stage and regenerates the embeddings).

In both positions (candidate and behaviour history) a cold item's row is read from the same
(C, D) embeddings, through the ranker's override hook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.training import evaluate_ranker, table_override
from idproxy_stream.training.cold_start_context import click_loss, frozen_ranker

logger = logging.getLogger(__name__)


@runtime_checkable
class ColdEmbeddings(Protocol):
    """The cold items' embeddings during warm-up (see the module docstring); rows = cold rows."""

    def parameters(self) -> list[torch.Tensor]:
        """The leaf tensors the warm-up optimiser updates."""
        ...

    def training_embeddings(self) -> torch.Tensor:
        """(C, D) embeddings for the warm-up loss, differentiable w.r.t. ``parameters()``."""
        ...

    def embeddings(self) -> torch.Tensor:
        """(C, D) the cold items' current effective embeddings (what is scored)."""
        ...

    def begin_stage(self, samples: RankerInputs) -> None:
        """A warm-up stage's samples arrive (before any training on them)."""
        ...

    def end_stage(self, samples: RankerInputs) -> None:
        """Training on a warm-up stage's samples is done (before scoring)."""
        ...


class FreeColdEmbeddings:
    """The plain case: a free (C, D) parameter, initialised from a method's proxies."""

    def __init__(self, initial: torch.Tensor) -> None:
        self.cold = torch.nn.Parameter(initial.detach().clone())

    def parameters(self) -> list[torch.Tensor]:
        return [self.cold]

    def training_embeddings(self) -> torch.Tensor:
        return self.cold

    def embeddings(self) -> torch.Tensor:
        return self.cold

    def begin_stage(self, samples: RankerInputs) -> None:
        del samples

    def end_stage(self, samples: RankerInputs) -> None:
        del samples


def warmup_curve(
    ranker: RankerAdapter,
    id_table: torch.Tensor,
    cold_rows: torch.Tensor,
    cold_embeddings: ColdEmbeddings | torch.Tensor,
    stages: Sequence[RankerInputs],
    test: RankerInputs,
    learning_rate: float,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Cold-test metrics (AUC, log loss) at cold start and after each warm-up stage.

    Args:
        ranker: the frozen ranker (its weights are never updated).
        id_table: (N_rows, D) the ranker's ID table; its cold rows are replaced.
        cold_rows: (C,) ranker rows of the cold items, in the order of ``cold_embeddings``.
        cold_embeddings: a :class:`ColdEmbeddings`, or (C, D) initial proxies for the plain
            case (then this equals the original free-embedding warm-up number for number).
        stages: warm-up sets applied in order, each continuing from the previous one.
        test: the cold test set.
        learning_rate, epochs, batch_size: Adam step size, passes per stage, samples per step.
        seed: seeds the batch order.

    Returns:
        ``1 + len(stages)`` dicts with keys ``auc`` and ``logloss``.
    """
    if isinstance(cold_embeddings, torch.Tensor):
        cold_embeddings = FreeColdEmbeddings(cold_embeddings)
    base = id_table.detach().clone()
    optimizer = torch.optim.Adam(cold_embeddings.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)

    def scored_table() -> torch.Tensor:
        return base.index_put((cold_rows,), cold_embeddings.embeddings().detach())

    # the ranker keeps its mode: the plain case must match the original warm-up exactly
    with frozen_ranker(ranker, eval_mode=False):
        curve = [evaluate_ranker(ranker, test, table_override(scored_table()))]
        for stage in stages:
            cold_embeddings.begin_stage(stage)
            for _ in range(epochs):
                for batch in stage.batches(batch_size, shuffle=True, generator=generator):
                    current = base.index_put((cold_rows,), cold_embeddings.training_embeddings())
                    logits = ranker.forward(batch, current[batch.item], current[batch.history])
                    loss = click_loss(logits, batch.label)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            cold_embeddings.end_stage(stage)
            curve.append(evaluate_ranker(ranker, test, table_override(scored_table())))
    return curve
