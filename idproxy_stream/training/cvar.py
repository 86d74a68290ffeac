"""CVAR (Zhao et al., SIGIR 2022): a conditional VAE that generates ID embeddings from content.

"Improving Item Cold-start Recommendation via Model-agnostic Conditional Variational
Autoencoder". A latent space is shared by an item's ID embedding and its content: an encoder
``q(z | e)`` reads the ID embedding, a prior encoder ``p(z | x)`` reads the content, and a decoder
conditioned on the item's interaction frequency ``f`` maps ``z`` back to an ID embedding. A cold
item's embedding is ``decoder(z ~ p(z | x), f)``.

How it works. On mature items' training samples, the ranker frozen, per batch (``iterations``
Adam steps on the same batch, as in the official code), the loss is, as in the official
``main.py``, ``click + reconstruction + 1e-4 * sum over the batch of the alignment``:

- reconstruction: ``|| decoder(z_e, f) - e ||²`` (summed over dimensions, mean over the batch)
  with ``z_e`` drawn from ``q(z | e)``; it trains the ID encoder and the decoder;
- alignment: the squared 2-Wasserstein distance between the diagonal Gaussians ``q(z | e)``
  and ``p(z | x)`` (``||μ - μ_p||² + ||σ - σ_p||²``); it pulls the content prior onto the ID
  embeddings' latents, so that ``decoder(μ_p(x))`` lands near the ID embeddings;
- click loss: the ranker's BCE with the candidate ID replaced by ``decoder(z_x, f)``, ``z_x``
  drawn from ``p(z | x)``.

Model selection: every ``selection_every`` batches the cold-start embeddings
``decoder(μ_p(x), f = 0)`` of the held-out items are scored through the ranker (the context's
validation sets, or a seeded tenth of the mature items), and the best checkpoint is kept
(checkpoint 0, the initialisation, whose output is about the mean ID, included); training
stops after ``patience`` checkpoints without improvement.

Cold start: ``decoder(μ_p(x), f = 0)``. Warm-up (:meth:`CvarModel.cold_embeddings`), as in the
official code: after the protocol's optimiser has trained the cold embeddings on a stage, CVAR
(a copy of the networks) is trained further on that stage's samples in the same way, with the
cold items' current embeddings as ``e`` and their interactions seen so far as ``f``, and then
every cold item's embedding is regenerated as ``decoder(μ_p(x), f)``.

Deviations from the paper and the official code (BestActionNow/CVAR, ``model/warm.py`` class
``CVAR``, ``main.py`` function ``cvar``, ``datahub/movielens1M/movielens1M_preprocess.ipynb``):

- Content is the encoder's ``global_embedding``, standardised on the fit items and divided by
  sqrt(D_enc) (unit root-mean-square norm). The official prior encoder reads CVAR's own
  embeddings of the item's side features and of the item ID itself; a per-item free embedding
  is left out here, since for a cold item it is untrained noise at cold start. The division
  matters: with hundreds of unit-variance inputs, one Adam step (1e-3 per weight, 10 per
  batch) can move the prior's latent by more than the ID embeddings' spread; the content path
  oscillated and memorised the few hundred fit items, and its held-out AUC fell below the
  untrained networks' (whose output is about the mean ID) within the first epoch.
- The alignment is weighted per sample: ``alignment_weight`` (0.2048) times its batch mean, the
  official ``1e-4 *`` batch sum at the official batch of 2048, but independent of the batch
  size.
- Selection and early stopping (above); the official code trains one epoch and keeps it.
- Frequency. The official ``count`` is the item's min-max normalised number of interactions in
  the whole log (for cold items this includes their test interactions); here ``f`` is the
  number of interactions the method has seen divided by the largest count of a fit item: the
  training samples' count for mature items, 0 at cold start and the warm-up rows seen so far
  during warm-up. As in the official code the encoder reads the ID embedding only and the
  decoder is conditioned on ``f``.
- Generation uses the prior mean (the official code adds noise with standard deviation
  ``1e-4 * σ_p``, negligible); training keeps the official ``1e-4`` noise scale.
- Only the candidate's ID embedding is generated during training (mature items' histories hold
  warm items and read the ranker's table); in warm-up fine-tuning, behaviour histories read the
  warm-up table (cold rows = the current cold embeddings).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerBatch, RankerInputs
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
class CvarSettings:
    """CVAR hyper-parameters (defaults from the official code, except the selection ones).

    latent_dim: size of z (16).
    batch_size, iterations, epochs: mature samples per batch (2048), Adam steps per batch (10,
        ``cvar_iters``) and at most this many passes over the samples (official 1; early
        stopping usually ends training within the first two).
    learning_rate, weight_decay: Adam (1e-3, 1e-6).
    alignment_weight: weight of the batch-mean Wasserstein term (0.2048 = the official 1e-4 on
        the sum over a batch of 2048).
    latent_noise: scale of the reparameterisation noise, z = μ + latent_noise * σ * ε (1e-4).
    warmup_epochs, warmup_iterations: CVAR's own training on each warm-up stage (1 and 10).
    regenerate_during_warmup: fine-tune on each warm-up stage and regenerate the cold items'
        embeddings after it (official); False = warm-up is the generic one.
    selection_every, patience: score the held-out items every this many batches; stop after
        ``patience`` scores without improvement.
    holdout_fraction: share of mature items held out for selection when the context has no
        validation sets.
    """

    latent_dim: int = 16
    batch_size: int = 2048
    iterations: int = 10
    epochs: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    alignment_weight: float = 0.2048
    latent_noise: float = 1e-4
    warmup_epochs: int = 1
    warmup_iterations: int = 10
    regenerate_during_warmup: bool = True
    patience: int = 5
    holdout_fraction: float = 0.1
    selection_every: int = 4


class CvarNetworks(nn.Module):
    """ID encoder (B, D) -> z, content prior (B, D_enc) -> z, decoder ([z, f]) -> (B, D)."""

    def __init__(self, scaler: ContentScaler, encoder_dim: int, id_dim: int, latent: int) -> None:
        super().__init__()
        self.scaler = scaler
        self.mean_encoder = nn.Linear(id_dim, latent)
        self.log_variance_encoder = nn.Linear(id_dim, latent)
        self.mean_prior = nn.Linear(encoder_dim, latent)
        self.log_variance_prior = nn.Linear(encoder_dim, latent)
        self.decoder = nn.Linear(latent + 1, id_dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -0.01, 0.01)

    def prior(self, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D_enc) content -> mean and log-variance (B, Z) of p(z | x)."""
        standardised = self.scaler(content)
        return self.mean_prior(standardised), self.log_variance_prior(standardised)

    def posterior(self, id_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) ID embeddings -> mean and log-variance (B, Z) of q(z | e)."""
        return self.mean_encoder(id_embedding), self.log_variance_encoder(id_embedding)

    def decode(self, latent: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
        """(B, Z) latents and (B,) frequencies -> (B, D) ID embeddings."""
        return self.decoder(torch.cat([latent, frequency.unsqueeze(-1)], dim=-1))

    def generate(self, content: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings decoded from the prior mean: what a cold item gets."""
        return self.decode(self.prior(content)[0], frequency)


def wasserstein(
    mean: torch.Tensor,
    log_variance: torch.Tensor,
    mean_p: torch.Tensor,
    log_variance_p: torch.Tensor,
) -> torch.Tensor:
    """(B,) squared 2-Wasserstein distance between diagonal Gaussians given by (B, Z) means and
    log-variances."""
    means = (mean - mean_p).pow(2).sum(1)
    deviations = (torch.exp(0.5 * log_variance) - torch.exp(0.5 * log_variance_p)).pow(2).sum(1)
    return means + deviations


def cvar_loss(
    networks: CvarNetworks,
    ranker: RankerAdapter,
    batch_samples: RankerBatch,
    id_embedding: torch.Tensor,
    content: torch.Tensor,
    frequency: torch.Tensor,
    settings: CvarSettings,
    generator: torch.Generator,
    history_embedding: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CVAR's training loss on one batch (see the module docstring) and its parts.

    Args:
        batch_samples: a RankerBatch of B samples.
        id_embedding, content, frequency: (B, D), (B, D_enc), (B,) of each sample's candidate.
        history_embedding: (B, H, D) behaviour embeddings for the ranker, None = its table.
    """
    mean, log_variance = networks.posterior(id_embedding)
    mean_p, log_variance_p = networks.prior(content)
    alignment = wasserstein(mean, log_variance, mean_p, log_variance_p).mean()
    noise = settings.latent_noise
    latent = mean + noise * torch.exp(0.5 * log_variance) * torch.randn(
        mean.shape, generator=generator
    )
    latent_p = mean_p + noise * torch.exp(0.5 * log_variance_p) * torch.randn(
        mean_p.shape, generator=generator
    )
    reconstruction = (networks.decode(latent, frequency) - id_embedding).pow(2).sum(-1).mean()
    generated = networks.decode(latent_p, frequency)
    click = click_loss(
        ranker.forward(batch_samples, generated, history_embedding), batch_samples.label
    )
    loss = click + reconstruction + settings.alignment_weight * alignment
    return loss, {
        "click": click.item(),
        "reconstruction": reconstruction.item(),
        "alignment": alignment.item(),
    }


@dataclass
class CvarModel:
    """Trained CVAR networks plus what generating and warming up embeddings needs."""

    networks: CvarNetworks
    ranker: RankerAdapter
    id_table: torch.Tensor
    content: torch.Tensor
    max_count: float
    settings: CvarSettings
    seed: int
    metrics: dict[str, float]

    def frequency(self, counts: torch.Tensor) -> torch.Tensor:
        """(B,) interaction counts -> (B,) the decoder's frequency condition."""
        return counts.float() / self.max_count

    @torch.no_grad()
    def proxies(self, query_rows: torch.Tensor) -> torch.Tensor:
        """(Q, D) cold-start embeddings of ``query_rows`` (Q,): decoder(μ_p(x), f = 0)."""
        self.networks.eval()
        return self.networks.generate(self.content[query_rows], torch.zeros(len(query_rows)))

    def cold_embeddings(self, query_rows: torch.Tensor) -> CvarColdEmbeddings:
        """The warm-up state of ``query_rows`` (C,), at cold start (the model is not changed)."""
        return CvarColdEmbeddings(self, query_rows)


class CvarColdEmbeddings:
    """CVAR's :class:`~idproxy_stream.eval.warmup.ColdEmbeddings` (official warm-up).

    A free (C, D) parameter starting at the cold-start proxies; after each stage a copy of the
    CVAR networks is trained on the stage and the parameter is overwritten with the embeddings
    it regenerates (see the module docstring).
    """

    def __init__(self, model: CvarModel, query_rows: torch.Tensor) -> None:
        self.model = model
        self.rows = query_rows
        self.networks = copy.deepcopy(model.networks)
        self.cold = nn.Parameter(model.proxies(query_rows))
        self.counts = torch.zeros(len(query_rows), dtype=torch.long)
        self.positions = row_positions(query_rows, len(model.id_table))
        self.generator = torch.Generator().manual_seed(model.seed + 1)

    def parameters(self) -> list[torch.Tensor]:
        return [self.cold]

    def training_embeddings(self) -> torch.Tensor:
        return self.cold

    def embeddings(self) -> torch.Tensor:
        return self.cold

    def begin_stage(self, samples: RankerInputs) -> None:
        """Count the stage's interactions of each cold item (the decoder's frequency)."""
        positions = self.positions[samples.item]
        positions = positions[positions >= 0]
        self.counts += torch.bincount(positions, minlength=len(self.rows))

    def end_stage(self, samples: RankerInputs) -> None:
        """Train a copy of CVAR on the stage's cold samples, then regenerate the embeddings."""
        settings = self.model.settings
        if not settings.regenerate_during_warmup:
            return
        positions = self.positions[samples.item]
        samples = samples.subset(positions >= 0)
        content = self.model.content
        optimizer = torch.optim.Adam(
            self.networks.parameters(),
            lr=settings.learning_rate,
            weight_decay=settings.weight_decay,
        )
        table = self.model.id_table.index_put((self.rows,), self.cold.detach())
        frequency = self.model.frequency(self.counts)
        self.networks.train()
        with frozen_ranker(self.model.ranker):
            for _ in range(settings.warmup_epochs):
                for batch in samples.batches(settings.batch_size, True, self.generator):
                    position = self.positions[batch.item]
                    for _ in range(settings.warmup_iterations):
                        loss, _ = cvar_loss(
                            self.networks,
                            self.model.ranker,
                            batch,
                            self.cold.detach()[position],
                            content[batch.item],
                            frequency[position],
                            settings,
                            self.generator,
                            table[batch.history],
                        )
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
        self.networks.eval()
        with torch.no_grad():
            self.cold.copy_(self.networks.generate(content[self.rows], frequency))


def fit_cvar(context: ThroughRankerContext, settings: CvarSettings = CvarSettings()) -> CvarModel:
    """Train CVAR on the context's mature items through the frozen ranker.

    The validation items (the context's validation sets, or a held-out share of the mature
    items) are never fit; every ``settings.selection_every`` batches their cold-start
    embeddings ``decoder(μ_p(x), f = 0)`` are scored through the ranker and the best checkpoint
    (0 = the initialisation) is kept (see the module docstring).
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(context.seed)
    id_table = context.id_table()
    rows, validation = context.selection_split(settings.holdout_fraction)
    samples = context.samples_of(rows)
    content = context.features.global_embedding
    max_count = float(context.item_counts[rows].max().clamp(min=1))
    with seeded_global_rng(context.seed):
        networks = CvarNetworks(
            ContentScaler.fit(context.features, rows, unit_rms=True),
            context.features.encoder_dim,
            int(id_table.shape[1]),
            settings.latent_dim,
        )
    optimizer = torch.optim.Adam(
        networks.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    frequency = context.item_counts.float() / max_count

    def selection_auc() -> float:
        networks.eval()
        return context.selection_scores(
            validation,
            lambda batch_rows: networks.generate(content[batch_rows], torch.zeros(len(batch_rows))),
        )["selection"]

    best = BestCheckpoint(networks, settings.patience, unit="checkpoint")
    best.record(0, selection_auc())
    totals = {"click": 0.0, "reconstruction": 0.0, "alignment": 0.0}
    steps, batches, stop = 0, 0, False
    with frozen_ranker(context.ranker):
        for _ in range(settings.epochs):
            for batch in samples.batches(settings.batch_size, shuffle=True, generator=generator):
                networks.train()
                for _ in range(settings.iterations):
                    loss, parts = cvar_loss(
                        networks,
                        context.ranker,
                        batch,
                        id_table[batch.item],
                        content[batch.item],
                        frequency[batch.item],
                        settings,
                        generator,
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    for name, value in parts.items():
                        totals[name] += value
                    steps += 1
                batches += 1
                if batches % settings.selection_every == 0:
                    auc = selection_auc()
                    logger.debug("cvar checkpoint %d selection auc %.4f", len(best.scores), auc)
                    stop = best.record(len(best.scores), auc)
                    if stop:
                        break
            if stop:
                break
        if not stop and batches % settings.selection_every:
            best.record(len(best.scores), selection_auc())  # the batches after the last score
    best.restore()
    networks.eval()
    metrics = {f"mean_{name}_loss": value / max(steps, 1) for name, value in totals.items()}
    metrics.update(best.metrics())
    metrics.update({"steps": float(steps), "seconds": time.perf_counter() - started})
    logger.info("cvar fit: %s", metrics)
    return CvarModel(
        networks=networks,
        ranker=context.ranker,
        id_table=id_table,
        content=content,
        max_count=max_count,
        settings=settings,
        seed=context.seed,
        metrics=metrics,
    )
