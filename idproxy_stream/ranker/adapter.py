"""The protocol a ranker implements so a proxy can stand in for an item's ID embedding.

Users implement :class:`RankerAdapter` for their own production ranker; the reference ranker
(:class:`idproxy_stream.ranker.din.DinRanker`) is the first implementation. Everything that
injects proxies (Stage 2 training, cold-start evaluation) talks to this protocol only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from idproxy_stream.ranker.inputs import RankerBatch


@runtime_checkable
class RankerAdapter(Protocol):
    """A CTR ranker whose item-ID embeddings can be overridden per call.

    ``forward`` must read the candidate's ID embedding and every behaviour item's ID embedding
    from the overrides when they are given, everywhere it would otherwise look them up
    (feature interaction and target attention alike).
    """

    id_embedding_dim: int

    def item_id_embedding(self, item_rows: torch.Tensor) -> torch.Tensor:
        """The learned ID embeddings: item rows (...) -> (..., D); row 0 is padding."""
        ...

    def id_embedding_table(self) -> torch.Tensor:
        """The whole ID table (N_rows, D), row 0 = padding."""
        ...

    def forward(
        self,
        batch: RankerBatch,
        candidate_item_embedding: torch.Tensor | None = None,
        history_item_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits (B,).

        Args:
            batch: encoded samples.
            candidate_item_embedding: (B, D) used instead of the candidate's ID embedding.
            history_item_embedding: (B, H, D) used instead of the behaviour items' ID
                embeddings (padding positions are masked by ``batch.history == 0`` regardless).
        """
        ...
