"""MWUF (Zhu et al., SIGIR 2021): meta scaling and shifting networks that warm up ID embeddings.

"Learning to Warm Up Cold Item Embeddings for Cold-start Recommendation with Meta Scaling and
Shifting Networks". A new item's ID embedding ``e`` starts from the average of the existing
items' embeddings and is learned as usual (the "cold" embedding); what the ranker is scored
with is the warmed embedding

    warm = scale(content) ⊙ e + shift(mean of the interacting users' embeddings)

where the meta scaling network reads the item's content features and the meta shifting
network reads the users who have interacted with the item so far.

How it works. Training on mature items, the ranker frozen (one pass by default, as in the
official code): every mature item's cold embedding starts at the base (the mean mature ID
embedding) and, batch by batch, (1) the cold embeddings of the batch's items take an Adam step
on the cold loss (the ranker's click loss with the candidate ID = ``e``), then (2) the meta
networks take an Adam step on the warm loss (candidate ID = ``scale ⊙ e.detach() + shift``). The
shift reads, per item, the mean representation of the users in all its training samples. So the
meta networks learn to warm up embeddings at every point of their trajectory from the base.

Warm-up (:meth:`MwufModel.cold_embeddings`): the cold items' embeddings ``e`` start at the base
and are updated by the protocol's warm-up optimiser on the cold loss, as in training; the meta
networks (frozen) are applied every time the items are scored; the shift reads the users who
interacted with each cold item in the warm-up rows seen so far (each stage's users are added
when the stage begins). At cold start no user has interacted yet and the shift is exactly zero,
so the cold-start embedding is ``scale(content) ⊙ base``.

Deviations from the paper and the reference PyTorch code (BestActionNow/CVAR,
``model/warm.py`` class ``MWUF`` and ``main.py`` function ``mwuf``):

- Users. The :class:`~idproxy_stream.ranker.adapter.RankerAdapter` protocol exposes no user
  embeddings, so a user is represented by what the ranker sees of them in its own ID space: the
  mean ID embedding of the sample's behaviour history (padding masked). In warm-up, cold items
  in a history are left out of that mean (their rows are not learned ID rows), and samples whose
  history is then empty contribute no user.
- Cold start. The reference code, finding no users for a cold item, falls back to the scored
  sample's own user embedding and writes ``scale ⊙ e + shift`` into the table once before
  warm-up, using the users of warm-up set a before it is seen; here the shift is zero until
  users arrive, and the meta networks keep being applied during warm-up, as in the paper.
- Base. New items start from the mean of the fit (mature) items' ID embeddings (the reference
  code averages every row of the table, padding and untrained rows included).
- Content is the encoder's ``global_embedding`` (standardised on the mature items) instead of
  embeddings of categorical side features.
- Initialisation: the networks start at the identity warm-up (scale 1, shift 0); the reference
  code draws every weight from U(-0.01, 0.01), i.e. starts at scale 0.
- Learning rates: the cold embeddings use the protocol's warm-up step (1e-2) so that the
  training trajectories resemble the warm-up they prepare for; the meta networks use 3e-3
  (reference 1e-3 on a ~12x larger dataset). With ``epochs`` > 1, each pass restarts the cold
  embeddings at the base.
- The meta networks are not trained on the cold items' warm-up rows.
- Selection. The reference code trains one pass and keeps it. Here the items of the context's
  validation sets are never fit, and with ``epochs`` > 1 the epoch whose cold-start embeddings
  rank them best is kept (early stopping with ``patience``); with one epoch, or without
  validation sets, the last epoch is kept. The untrained networks are no candidate: they are
  plain warm-up from the mean, not MWUF.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.cold_start_context import (
    BestCheckpoint,
    ContentScaler,
    ThroughRankerContext,
    click_loss,
    frozen_ranker,
    row_positions,
    seeded_global_rng,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MwufSettings:
    """MWUF hyper-parameters.

    hidden_dim: width of the two meta networks' hidden layer (reference 16).
    embedding_learning_rate: Adam step of the cold embeddings in training.
    meta_learning_rate, weight_decay: Adam on the meta networks (reference 1e-3 with batches of
        2048 over ML-1M's ~850k samples; 3e-3 suits ML-100K's ~70k at batch 256; reference
        weight decay 1e-6).
    batch_size, epochs: training batches of mature samples and passes over them.
    patience: with ``epochs`` > 1, stop when the selection AUC has not improved for this many
        epochs.
    """

    hidden_dim: int = 16
    embedding_learning_rate: float = 1e-2
    meta_learning_rate: float = 3e-3
    weight_decay: float = 1e-6
    batch_size: int = 256
    epochs: int = 1
    patience: int = 2


def user_representations(
    id_table: torch.Tensor, history: torch.Tensor, excluded_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's user as the ranker sees them: the mean ID embedding of their history.

    Args:
        id_table: (N_rows, D).
        history: (B, H) item rows, 0 = padding.
        excluded_rows: (N_rows,) bool, rows left out of the mean (e.g. cold items); None = none.

    Returns:
        (B, D) representations (zero where none) and (B,) bool, whether the sample has one.
    """
    valid = history > 0
    if excluded_rows is not None:
        valid = valid & ~excluded_rows[history]
    weights = valid.float().unsqueeze(-1)
    count = weights.sum(1)
    summed = (id_table[history] * weights).sum(1)
    return summed / count.clamp(min=1.0), count.squeeze(-1) > 0


class MetaNetworks(nn.Module):
    """Meta scaling (content (N, D_enc) -> (N, D)) and shifting (users (N, D) -> (N, D))."""

    def __init__(self, scaler: ContentScaler, encoder_dim: int, id_dim: int, hidden: int) -> None:
        super().__init__()
        self.scaler = scaler
        self.scale = nn.Sequential(
            nn.Linear(encoder_dim, hidden), nn.ReLU(), nn.Linear(hidden, id_dim)
        )
        self.shift = nn.Sequential(nn.Linear(id_dim, hidden), nn.ReLU(), nn.Linear(hidden, id_dim))
        for network, bias in ((self.scale, 1.0), (self.shift, 0.0)):
            nn.init.uniform_(network[-1].weight, -0.01, 0.01)
            nn.init.constant_(network[-1].bias, bias)

    def warm(
        self,
        content: torch.Tensor,
        cold: torch.Tensor,
        users: torch.Tensor,
        has_users: torch.Tensor,
    ) -> torch.Tensor:
        """(N, D) ``scale(content) ⊙ cold + shift(users)``, the shift zero where not has_users."""
        shift = self.shift(users) * has_users.float().unsqueeze(-1)
        return self.scale(self.scaler(content)) * cold + shift


@dataclass
class MwufModel:
    """Trained meta networks plus what warming up a new item needs."""

    networks: MetaNetworks
    base: torch.Tensor
    id_table: torch.Tensor
    content: torch.Tensor
    metrics: dict[str, float]

    def cold_embeddings(self, query_rows: torch.Tensor) -> MwufColdEmbeddings:
        """The warm-up state of the items at ``query_rows`` (C,), at cold start."""
        return MwufColdEmbeddings(self, query_rows)

    @torch.no_grad()
    def cold_start_embeddings(self, query_rows: torch.Tensor) -> torch.Tensor:
        """(Q, D) the embeddings at cold start: ``scale(content) ⊙ base`` (no users yet)."""
        return self.cold_embeddings(query_rows).embeddings()


class MwufColdEmbeddings:
    """MWUF's :class:`~idproxy_stream.eval.warmup.ColdEmbeddings`: cold ``e`` + meta warm-up.

    ``training_embeddings()`` is the cold embedding ``e`` (C, D), trained on the cold loss;
    ``embeddings()`` is the warmed ``scale ⊙ e + shift`` (C, D); ``begin_stage`` adds the stage's
    interacting users to each cold item's user mean.
    """

    def __init__(self, model: MwufModel, query_rows: torch.Tensor) -> None:
        self.model = model
        self.rows = query_rows
        self.cold = nn.Parameter(model.base.expand(len(query_rows), -1).clone())
        self.user_sum = torch.zeros_like(self.cold.detach())
        self.user_count = torch.zeros(len(query_rows))
        self.positions = row_positions(query_rows, len(model.id_table))
        self.excluded = self.positions >= 0

    def parameters(self) -> list[torch.Tensor]:
        return [self.cold]

    def training_embeddings(self) -> torch.Tensor:
        return self.cold

    @torch.no_grad()
    def user_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, D) mean interacting-user representation per cold item, (C,) whether any."""
        return self.user_sum / self.user_count.clamp(min=1.0).unsqueeze(-1), self.user_count > 0

    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        users, has_users = self.user_means()
        self.model.networks.eval()
        return self.model.networks.warm(
            self.model.content[self.rows], self.cold.detach(), users, has_users
        )

    def begin_stage(self, samples: RankerInputs) -> None:
        """Add the users of ``samples`` whose candidate is a cold item to that item's mean."""
        positions = self.positions[samples.item]
        keep = positions >= 0
        users, has_user = user_representations(
            self.model.id_table, samples.history[keep], self.excluded
        )
        owners = positions[keep][has_user]
        self.user_sum.index_add_(0, owners, users[has_user])
        self.user_count.index_add_(0, owners, torch.ones(len(owners)))

    def end_stage(self, samples: RankerInputs) -> None:
        del samples


def mature_user_means(
    id_table: torch.Tensor, samples: RankerInputs, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, D) mean user representation over each row's samples, (M,) whether it has any."""
    positions = row_positions(rows, len(id_table))[samples.item]
    users, has_user = user_representations(id_table, samples.history)
    keep = (positions >= 0) & has_user
    sums = torch.zeros(len(rows), id_table.shape[1]).index_add(0, positions[keep], users[keep])
    counts = torch.zeros(len(rows)).index_add(0, positions[keep], torch.ones(int(keep.sum())))
    return sums / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


def fit_mwuf(context: ThroughRankerContext, settings: MwufSettings = MwufSettings()) -> MwufModel:
    """Train the meta scaling and shifting networks on the context's mature items.

    With validation sets in the context their items are not fit, and with ``epochs`` > 1 the
    epoch whose cold-start embeddings (``scale(content) ⊙ base``) rank them best is kept; the
    untrained networks are no candidate (they are plain warm-up from the mean, not MWUF).
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(context.seed)
    id_table = context.id_table()
    rows = context.fit_rows_outside_validation()
    validation = dict(context.validation or {})
    samples = context.samples_of(rows)
    content = context.features.global_embedding
    base = id_table[rows].mean(0)
    users, has_users = mature_user_means(id_table, samples, rows)
    positions = row_positions(rows, len(id_table))
    with seeded_global_rng(context.seed):
        networks = MetaNetworks(
            ContentScaler.fit(context.features, rows),
            context.features.encoder_dim,
            int(id_table.shape[1]),
            settings.hidden_dim,
        )
    meta_optimizer = torch.optim.Adam(
        networks.parameters(), lr=settings.meta_learning_rate, weight_decay=settings.weight_decay
    )

    def selection_auc() -> float:
        networks.eval()
        return context.selection_scores(
            validation,
            lambda batch_rows: networks.scale(networks.scaler(content[batch_rows])) * base,
        )["selection"]

    best = BestCheckpoint(networks, settings.patience, include_initial=False)
    cold_loss_total, warm_loss_total, steps = 0.0, 0.0, 0
    with frozen_ranker(context.ranker):
        for epoch in range(1, settings.epochs + 1):
            cold = nn.Parameter(base.expand(len(rows), -1).clone())
            cold_optimizer = torch.optim.Adam([cold], lr=settings.embedding_learning_rate)
            networks.train()
            for batch in samples.batches(settings.batch_size, shuffle=True, generator=generator):
                position = positions[batch.item]
                cold_loss = click_loss(context.ranker.forward(batch, cold[position]), batch.label)
                cold_optimizer.zero_grad(set_to_none=True)
                cold_loss.backward()
                cold_optimizer.step()
                warm = networks.warm(
                    content[batch.item],
                    cold.detach()[position],
                    users[position],
                    has_users[position],
                )
                warm_loss = click_loss(context.ranker.forward(batch, warm), batch.label)
                meta_optimizer.zero_grad(set_to_none=True)
                warm_loss.backward()
                meta_optimizer.step()
                cold_loss_total += cold_loss.item()
                warm_loss_total += warm_loss.item()
                steps += 1
            # one epoch leaves nothing to choose between: skip scoring it
            score = selection_auc() if settings.epochs > 1 else float("nan")
            if best.record(epoch, score):
                break
    best.restore()
    networks.eval()
    metrics = {
        "mean_cold_loss": cold_loss_total / max(steps, 1),
        "mean_warm_loss": warm_loss_total / max(steps, 1),
        "steps": float(steps),
    }
    metrics.update(best.metrics())
    metrics["seconds"] = time.perf_counter() - started
    logger.info("mwuf fit: %s", metrics)
    return MwufModel(
        networks=networks, base=base, id_table=id_table, content=content, metrics=metrics
    )
