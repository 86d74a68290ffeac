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
- The generator is the official single dense tanh layer placed in the fit items' ID
  distribution: ``mean + spread ⊙ tanh(W x + b)``, with ``mean`` their mean ID embedding and
  ``spread`` twice their per-dimension standard deviation (the official code divides the tanh
  by 5 to match its embeddings' scale). ``W`` starts at U(-0.01, 0.01) and ``b`` at 0
  (BestActionNow/CVAR's ``MetaE.init_metaE`` draws both from U(-0.01, 0.01)), so training
  starts at the mean ID embedding. Scaling the tanh by the largest absolute ID value instead,
  as this module first did, let the layer saturate: its embeddings had about twice the ID
  embeddings' norm and ranked cold items worse than the mean ID, as a random start does.
  ``hidden_dim`` > 0 adds a hidden layer.
- The official code steps each sample's copy of the embedding by that single sample's gradient
  of a 500-sample batch mean (with ``cold_lr = 1e-4``) and only minimises ``L_b``; here the step
  uses the item's own mean loss over its mini-batch a, as the paper writes it, and the loss is
  the paper's ``alpha * L_a + (1 - alpha) * L_b``. ``cold_learning_rate`` therefore has a
  different scale from the official value; the default makes one step move an embedding about
  as far as the protocol's warm-up does on one stage.
- Each epoch draws fresh a / b mini-batches (the official code rotates four fixed quarters of
  each item's samples over 3 epochs). After each epoch the generated embeddings of the held-out
  items (the context's validation sets, or a seeded tenth of the mature items) are scored
  through the ranker; the best epoch is kept (epoch 0, the mean ID start, included) and
  training stops after ``patience`` epochs without improvement. With a few hundred fit items
  and hundreds of content dimensions the generator memorises them within a few epochs; early
  stopping is what regularises it (Adam without weight decay, as in the official code;
  decoupled decay up to 0.1 did not change the selected model on the development data).
- Only the candidate's ID embedding is generated; behaviour histories of mature items' samples
  hold warm items and read the ranker's own table. Meta-batches skip samples with an empty
  history: the reference ranker's target attention (softmax over an all-masked row) has no
  second derivative there, and the meta-gradient is second order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.training.cold_start_context import (
    BestCheckpoint,
    ContentScaler,
    ThroughRankerContext,
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
    learning_rate, weight_decay: Adam on the generator (official 1e-3, no decay); what keeps
        the generator from memorising the few hundred fit items is early stopping.
    spread: the generator's output range per dimension, in standard deviations of the fit items'
        ID embeddings (output = mean ± spread * std * tanh(...)).
    epochs, patience: at most ``epochs`` passes over the fit items; stop when the selection AUC
        has not improved for ``patience`` epochs.
    holdout_fraction: share of mature items held out for model selection when the context has
        no validation sets.
    hidden_dim: 0 = a one-layer generator; > 0 adds a hidden layer of that width.
    """

    shots: int = 20
    items_per_batch: int = 25
    alpha: float = 0.1
    cold_learning_rate: float = 0.3
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    spread: float = 2.0
    epochs: int = 30
    patience: int = 5
    holdout_fraction: float = 0.1
    hidden_dim: int = 0


class MetaEmbeddingGenerator(nn.Module):
    """Content (N, D_enc) -> initial ID embeddings (N, D): ``centre + spread ⊙ tanh(f(x))``.

    ``x`` is the standardised content; ``centre`` (D,) is the mean ID embedding of the fit items
    and ``spread`` (D,) their per-dimension standard deviation times
    :attr:`MetaEmbeddingSettings.spread`. The last layer starts near zero (weights
    U(-0.01, 0.01), bias 0), so the generator starts at the mean ID embedding, and ``tanh``
    keeps every output within ``centre ± spread``.
    """

    def __init__(
        self,
        scaler: ContentScaler,
        encoder_dim: int,
        hidden_dim: int,
        centre: torch.Tensor,
        spread: torch.Tensor,
    ) -> None:
        super().__init__()
        self.scaler = scaler
        id_dim = int(centre.shape[0])
        self.register_buffer("centre", centre.clone())
        self.register_buffer("spread", spread.clone())
        if hidden_dim > 0:
            self.network: nn.Module = nn.Sequential(
                nn.Linear(encoder_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, id_dim)
            )
            last = self.network[-1]
        else:
            self.network = last = nn.Linear(encoder_dim, id_dim)
        nn.init.uniform_(last.weight, -0.01, 0.01)
        nn.init.zeros_(last.bias)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.centre + self.spread * torch.tanh(self.network(self.scaler(content)))


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
    fit_rows, validation = context.selection_split(settings.holdout_fraction)
    samples = context.samples_of(fit_rows)
    # the ranker's target attention has no second derivative for an empty history (softmax
    # over an all-masked row), so the meta-gradient is taken on samples with a history
    samples = samples.subset((samples.history > 0).any(1))
    item_samples = PerItemSamples(samples, fit_rows)
    usable = torch.nonzero(item_samples.counts >= 2).squeeze(1)
    content = context.features.global_embedding
    id_targets = context.id_table()[fit_rows]
    with seeded_global_rng(context.seed):
        model = MetaEmbeddingGenerator(
            ContentScaler.fit(context.features, fit_rows),
            context.features.encoder_dim,
            settings.hidden_dim,
            centre=id_targets.mean(0),
            spread=settings.spread * id_targets.std(0),
        )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    ranker = context.ranker

    def selection_auc() -> float:
        model.eval()
        return context.selection_scores(validation, lambda rows: model(content[rows]))["selection"]

    best = BestCheckpoint(model, settings.patience)
    best.record(0, selection_auc())
    with frozen_ranker(ranker):
        for epoch in range(1, settings.epochs + 1):
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
            auc = selection_auc()
            logger.info("meta-embedding epoch %d selection auc %.4f", epoch, auc)
            if best.record(epoch, auc):
                break
    best.restore()
    model.eval()
    metrics = best.metrics()
    metrics["seconds"] = time.perf_counter() - started
    logger.info("meta-embedding fit: %s", metrics)
    return MetaEmbeddingModel(generator=model, content=content, metrics=metrics)


def meta_embedding_proxies(
    context: ThroughRankerContext,
    query_rows: torch.Tensor,
    settings: MetaEmbeddingSettings = MetaEmbeddingSettings(),
) -> torch.Tensor:
    """(Q, D) Meta-Embedding initial ID embeddings for ``query_rows`` (Q,), fit on ``context``."""
    return fit_meta_embedding(context, settings).proxies(query_rows)
