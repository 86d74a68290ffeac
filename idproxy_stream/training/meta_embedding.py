"""Meta-Embedding (Pan et al., SIGIR 2019): learn to generate a new item's initial ID embedding.

"Warm Up Cold-start Advertisements: Improving CTR Predictions via Learning to Learn ID
Embeddings". A generator maps an item's content to an ID embedding for the frozen ranker, and is
meta-trained so that this embedding is good both before and after one warm-up step.

How it works. For a batch of mature items, each item draws two disjoint mini-batches a and b of
``shots`` samples each from its training samples. With the generated embedding ``e = g(x)``:

1. cold-start loss ``L_a``: the ranker's click loss on mini-batch a, candidate ID = ``e``;
2. one gradient step on the embedding, ``e' = e - cold_learning_rate * dL_a/de`` (per item, the
   gradient of that item's own mean loss; second order, as in MAML);
3. warm-up loss ``L_b``: the click loss on mini-batch b with candidate ID = ``e'``;
4. ``loss = alpha * L_a + (1 - alpha) * L_b``; only the generator is updated (Adam), the ranker
   is frozen.

The generated embedding is the cold item's initial ID embedding; warm-up then proceeds as for
every other method (:class:`~idproxy_stream.eval.warmup.FreeColdEmbeddings`).

Deviations from the paper and the official TensorFlow code (Feiyang/MetaEmbedding,
``code/example-MovieLens.ipynb``):

- Content is the encoder's ``RowFeatures.global_embedding`` (standardised on the fit items)
  instead of the base model's frozen embeddings of the item's side features.
- The generator is the official single dense tanh layer, scaled to the range of the mature ID
  embeddings (the official code divides by 5 to match its embeddings' scale), with a bias
  (the inputs are standardised, so the mean ID offset needs one); ``hidden_dim`` > 0 adds a
  hidden layer.
- The official code steps each sample's copy of the embedding by that single sample's gradient
  of a 500-sample batch mean (with ``cold_lr = 1e-4``) and only minimises ``L_b``; here the step
  uses the item's own mean loss over its mini-batch a, as the paper writes it, and the loss is
  the paper's ``alpha * L_a + (1 - alpha) * L_b``. ``cold_learning_rate`` therefore has a
  different scale from the official value; the default makes one step move an embedding about
  as far as the protocol's warm-up does on one stage.
- Each epoch draws fresh a / b mini-batches (the official code rotates four fixed quarters of
  each item's samples over 3 epochs); the epoch with the best cold-start AUC on held-out mature
  items is kept (early stopping with ``patience``).
- Only the candidate's ID embedding is generated; behaviour histories of mature items' samples
  hold warm items and read the ranker's own table. Meta-batches skip samples with an empty
  history: the reference ranker's target attention (softmax over an all-masked row) has no
  second derivative there, and the meta-gradient is second order.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.cold_start_context import (
    ContentScaler,
    ThroughRankerContext,
    candidate_auc,
    frozen_ranker,
    seeded_global_rng,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaEmbeddingSettings:
    """Meta-Embedding hyper-parameters (defaults follow the official code where it transfers).

    shots: samples per item in each of mini-batches a and b (official MINIBATCHSIZE = 20);
        items with fewer than ``2 * shots`` samples split theirs in half.
    items_per_batch: items per meta-batch (official 25).
    alpha: weight of the cold-start loss L_a (official 0.1).
    cold_learning_rate: step size of the one gradient step on the generated embedding.
    learning_rate, weight_decay: Adam on the generator (official 1e-3).
    epochs, patience: at most ``epochs`` passes over the fit items; stop when held-out AUC has
        not improved for ``patience`` epochs.
    holdout_fraction: share of mature items held out for model selection.
    hidden_dim: 0 = the official one-layer generator; > 0 adds a hidden layer of that width.
    """

    shots: int = 20
    items_per_batch: int = 25
    alpha: float = 0.1
    cold_learning_rate: float = 0.3
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 30
    patience: int = 5
    holdout_fraction: float = 0.1
    hidden_dim: int = 0


class MetaEmbeddingGenerator(nn.Module):
    """Content (N, D_enc) -> initial ID embeddings (N, D): ``scale * tanh(f(standardised x))``."""

    def __init__(
        self, scaler: ContentScaler, encoder_dim: int, id_dim: int, hidden_dim: int, scale: float
    ) -> None:
        super().__init__()
        self.scaler = scaler
        self.scale = scale
        if hidden_dim > 0:
            self.network: nn.Module = nn.Sequential(
                nn.Linear(encoder_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, id_dim)
            )
        else:
            self.network = nn.Linear(encoder_dim, id_dim)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.network(self.scaler(content)))


@dataclass
class MetaEmbeddingModel:
    """A fitted generator and what fitting it measured."""

    generator: MetaEmbeddingGenerator
    content: torch.Tensor
    metrics: dict[str, float]

    @torch.no_grad()
    def proxies(self, query_rows: torch.Tensor) -> torch.Tensor:
        """(Q, D) generated initial ID embeddings of ``query_rows`` (Q,)."""
        self.generator.eval()
        return self.generator(self.content[query_rows])


class PerItemSamples:
    """The samples of each of ``rows`` (M,), for drawing per-item mini-batches quickly."""

    def __init__(self, samples: RankerInputs, rows: torch.Tensor) -> None:
        order = torch.argsort(samples.item, stable=True)
        sorted_items = samples.item[order]
        self.order = order
        self.starts = torch.searchsorted(sorted_items, rows)
        self.counts = torch.searchsorted(sorted_items, rows, right=True) - self.starts

    def draw(
        self, positions: torch.Tensor, shots: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Disjoint mini-batches a and b for the items at ``positions`` (I,).

        Returns sample indices and their owner (position in ``positions``) for a and b.
        """
        a_index, a_owner, b_index, b_owner = [], [], [], []
        for owner, position in enumerate(positions.tolist()):
            count = int(self.counts[position])
            take = min(shots, count // 2)
            chosen = self.order[self.starts[position] + torch.randperm(count, generator=generator)]
            a_index.append(chosen[:take])
            b_index.append(chosen[take : 2 * take])
            a_owner.append(torch.full((take,), owner))
            b_owner.append(torch.full((take,), owner))
        return torch.cat(a_index), torch.cat(a_owner), torch.cat(b_index), torch.cat(b_owner)


def _per_item_mean_loss(
    logits: torch.Tensor, labels: torch.Tensor, owner: torch.Tensor, num_items: int
) -> torch.Tensor:
    """(I,) each item's mean click loss over its rows; ``owner`` (B,) gives each row's item."""
    row_loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    totals = torch.zeros(num_items).index_add(0, owner, row_loss)
    counts = torch.zeros(num_items).index_add(0, owner, torch.ones_like(row_loss))
    return totals / counts.clamp(min=1.0)


def fit_meta_embedding(
    context: ThroughRankerContext, settings: MetaEmbeddingSettings = MetaEmbeddingSettings()
) -> MetaEmbeddingModel:
    """Meta-train the generator on the context's mature items (see the module docstring)."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(context.seed)
    fit_rows, holdout_rows = context.split_mature(settings.holdout_fraction)
    samples = context.samples_of(fit_rows)
    # the ranker's target attention has no second derivative for an empty history (softmax
    # over an all-masked row), so the meta-gradient is taken on samples with a history
    samples = samples.subset((samples.history > 0).any(1))
    item_samples = PerItemSamples(samples, fit_rows)
    usable = torch.nonzero(item_samples.counts >= 2).squeeze(1)
    holdout_samples = context.samples_of(holdout_rows)
    content = context.features.global_embedding
    id_targets = context.id_table()[context.mature_rows]
    with seeded_global_rng(context.seed):
        model = MetaEmbeddingGenerator(
            ContentScaler.fit(context.features, fit_rows),
            context.features.encoder_dim,
            int(id_targets.shape[1]),
            settings.hidden_dim,
            float(id_targets.abs().max()),
        )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    ranker = context.ranker

    def holdout_auc() -> float:
        if len(holdout_rows) == 0:
            return float("nan")
        with torch.no_grad():
            model.eval()
            return candidate_auc(
                ranker, holdout_samples, holdout_rows, model(content[holdout_rows])
            )

    best_auc, best_epoch, since_best, epochs_run = holdout_auc(), 0, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    with frozen_ranker(ranker):
        for epoch in range(1, settings.epochs + 1):
            epochs_run = epoch
            model.train()
            order = usable[torch.randperm(len(usable), generator=generator)]
            for start in range(0, len(order), settings.items_per_batch):
                positions = order[start : start + settings.items_per_batch]
                a_index, a_owner, b_index, b_owner = item_samples.draw(
                    positions, settings.shots, generator
                )
                batch_a, batch_b = samples.batch(a_index), samples.batch(b_index)
                generated = model(content[fit_rows[positions]])
                loss_a = _per_item_mean_loss(
                    ranker.forward(batch_a, generated[a_owner]),
                    batch_a.label,
                    a_owner,
                    len(positions),
                )
                (gradient,) = torch.autograd.grad(loss_a.sum(), generated, create_graph=True)
                stepped = generated - settings.cold_learning_rate * gradient
                loss_b = _per_item_mean_loss(
                    ranker.forward(batch_b, stepped[b_owner]),
                    batch_b.label,
                    b_owner,
                    len(positions),
                )
                loss = settings.alpha * loss_a.mean() + (1.0 - settings.alpha) * loss_b.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            auc = holdout_auc()
            logger.info("meta-embedding epoch %d held-out cold-start auc %.4f", epoch, auc)
            if len(holdout_rows) == 0 or auc > best_auc:
                best_auc, best_epoch, since_best = auc, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= settings.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    metrics = {
        "best_holdout_auc": best_auc,
        "best_epoch": float(best_epoch),
        "epochs_run": float(epochs_run),
        "seconds": time.perf_counter() - started,
    }
    logger.info("meta-embedding fit: %s", metrics)
    return MetaEmbeddingModel(generator=model, content=content, metrics=metrics)


def meta_embedding_proxies(
    context: ThroughRankerContext,
    query_rows: torch.Tensor,
    settings: MetaEmbeddingSettings = MetaEmbeddingSettings(),
) -> torch.Tensor:
    """(Q, D) Meta-Embedding initial ID embeddings for ``query_rows`` (Q,), fit on ``context``."""
    return fit_meta_embedding(context, settings).proxies(query_rows)
