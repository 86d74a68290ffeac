"""Stage 2 adaptor phi_tilde: layer-cluster states -> fine hidden state and fine proxy.

The encoder's hidden states, pooled into K contiguous layer clusters (``encoders/layers.py``),
carry lexical and mid-level detail that the final global embedding averages away. The adaptor
normalises each cluster, projects it with its own linear map, mixes the clusters with learned
softmax weights, and turns the mix into ``h_fine`` (what the gate reads) and ``p_fine`` (the
residual the gate lets through). ``p_fine``'s output layer starts at zero, so an untrained
adaptor leaves the coarse proxy untouched.
"""

from __future__ import annotations

import torch
from torch import nn


class FineAdaptor(nn.Module):
    """(B, K, D_enc) cluster states -> ``(h_fine (B, H), p_fine (B, D_id))``.

    Example:
        >>> adaptor = FineAdaptor(num_clusters=3, input_dim=384, id_dim=16, hidden_dim=64)
        >>> h, p = adaptor(torch.randn(2, 3, 384))
        >>> h.shape, p.shape
        (torch.Size([2, 64]), torch.Size([2, 16]))
    """

    def __init__(
        self,
        num_clusters: int,
        input_dim: int,
        id_dim: int,
        hidden_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_clusters, self.input_dim, self.id_dim = num_clusters, input_dim, id_dim
        self.norm = nn.LayerNorm(input_dim)
        self.dropout = nn.Dropout(dropout)
        # one projection per cluster: (K, D_enc, H)
        self.cluster_projection = nn.Parameter(
            torch.randn(num_clusters, input_dim, hidden_dim) / input_dim**0.5
        )
        self.cluster_bias = nn.Parameter(torch.zeros(num_clusters, hidden_dim))
        self.cluster_logits = nn.Parameter(torch.zeros(num_clusters))
        self.hidden = nn.Sequential(
            nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim)
        )
        self.output = nn.Linear(hidden_dim, id_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def cluster_weights(self) -> torch.Tensor:
        """(K,) softmax mixing weights over the layer clusters."""
        return torch.softmax(self.cluster_logits, dim=0)

    def forward(self, cluster_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, D_enc) -> (h_fine (B, H), p_fine (B, D_id))."""
        normalised = self.dropout(self.norm(cluster_states))
        projected = torch.einsum("bkd,kdh->bkh", normalised, self.cluster_projection)
        projected = projected + self.cluster_bias
        mixed = torch.einsum("bkh,k->bh", projected, self.cluster_weights())
        hidden = self.hidden(mixed)
        return hidden, self.output(hidden)
