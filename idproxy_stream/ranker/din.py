"""Reference CTR ranker: DIN target attention + DCN-v2 cross layers + MLP head.

One forward pass, top to bottom:

1. Look up embeddings: candidate item ID (B, D), behaviour item IDs (B, H, D), user ID and user
   side features, item categories (bag, mean) and year bucket (B, S each).
2. Target attention (DIN, Zhou et al. 2018): an activation unit scores every behaviour item
   against the candidate from ``[q, k, q - k, q * k]``; scores are masked at padding, softmaxed,
   and the weighted sum of behaviour embeddings is the user's interest (B, D).
3. Feature interaction (DCN-v2, Wang et al. 2021): x0 = concat(candidate, interest,
   candidate * interest, user, side features); ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``.
4. MLP head on [x_L] -> logit (B,).

The candidate and behaviour ID embeddings can be overridden per call (the RankerAdapter hook),
so a proxy reaches both the feature interaction and the target attention.
"""

from __future__ import annotations

import torch
from torch import nn

from idproxy_stream.config import RankerConfig
from idproxy_stream.ranker.inputs import FeatureVocab, RankerBatch


class TargetAttention(nn.Module):
    """DIN activation unit: (B, D) query, (B, H, D) keys, (B, H) mask -> (B, D) interest."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(4 * dim, hidden), nn.PReLU(), nn.Linear(hidden, 1))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        expanded = query.unsqueeze(1).expand_as(keys)
        features = torch.cat([expanded, keys, expanded - keys, expanded * keys], dim=-1)
        scores = self.score(features).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        # users with an empty history get a zero interest vector, not NaN
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return torch.einsum("bh,bhd->bd", weights, keys)


class CrossNetworkV2(nn.Module):
    """DCN-v2 cross layers: (B, F) -> (B, F)."""

    def __init__(self, width: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DinRanker(nn.Module):
    """The reference ranker; implements :class:`~idproxy_stream.ranker.adapter.RankerAdapter`."""

    def __init__(self, config: RankerConfig, vocab: FeatureVocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.id_embedding_dim = config.id_dim
        side = config.side_dim
        self.item_ids = nn.Embedding(vocab.num_item_rows, config.id_dim, padding_idx=0)
        self.user_ids = nn.Embedding(vocab.num_user_rows, side, padding_idx=0)
        self.user_features = nn.ModuleList(
            nn.Embedding(len(values) + 1, side, padding_idx=0)
            for values in vocab.user_feature_values
        )
        self.categories = nn.Embedding(len(vocab.categories) + 1, side, padding_idx=0)
        self.year = nn.Embedding(len(vocab.year_buckets) + 1, side, padding_idx=0)
        self.attention = TargetAttention(config.id_dim, config.attention_hidden)
        num_item_side = 2 if config.item_side_features else 0
        width = 3 * config.id_dim + side * (1 + num_item_side + len(vocab.user_feature_values))
        self.cross = CrossNetworkV2(width, config.cross_layers)
        layers: list[nn.Module] = []
        previous = width
        for hidden in config.mlp_hidden:
            layers += [nn.Linear(previous, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            previous = hidden
        layers.append(nn.Linear(previous, 1))
        self.head = nn.Sequential(*layers)
        nn.init.normal_(self.item_ids.weight, std=0.05)
        with torch.no_grad():
            self.item_ids.weight[0].zero_()

    def item_id_embedding(self, item_rows: torch.Tensor) -> torch.Tensor:
        """(...) item rows -> (..., D) learned ID embeddings."""
        return self.item_ids(item_rows)

    def id_embedding_table(self) -> torch.Tensor:
        """(N_rows, D) the ID table, row 0 = padding."""
        return self.item_ids.weight

    def forward(
        self,
        batch: RankerBatch,
        candidate_item_embedding: torch.Tensor | None = None,
        history_item_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits (B,); see the module docstring and RankerAdapter.forward."""
        candidate = (
            self.item_ids(batch.item)
            if candidate_item_embedding is None
            else candidate_item_embedding
        )
        history_mask = batch.history > 0
        history = (
            self.item_ids(batch.history)
            if history_item_embedding is None
            else history_item_embedding
        )
        history = history * history_mask.unsqueeze(-1)
        interest = self.attention(candidate, history, history_mask)

        parts = [candidate, interest, candidate * interest, self.user_ids(batch.user)]
        if self.config.item_side_features:
            category_mask = (batch.item_categories > 0).unsqueeze(-1).float()
            category_bag = (self.categories(batch.item_categories) * category_mask).sum(1) / (
                category_mask.sum(1).clamp(min=1.0)
            )
            parts += [category_bag, self.year(batch.item_year)]
        parts += [
            embedding(batch.user_features[:, column])
            for column, embedding in enumerate(self.user_features)
        ]
        x0 = torch.cat(parts, dim=-1)
        return self.head(self.cross(x0)).squeeze(-1)
