"""The residual gate that fuses the coarse and the fine proxy.

Exact form implemented (elementwise over the D_id dimensions)::

    g = sigmoid(W_c p_coarse + W_g h_fine + b)          # (B, D_id), each entry in (0, 1)
    p = p_coarse + g * p_fine

``W_c`` (D_id x D_id), ``W_g`` (H x D_id) and ``b`` (D_id) are learned; ``b`` starts at 0
(the gate half open). The coarse proxy always passes through unchanged; the gate decides, per
item and per dimension, how much of the fine correction to add. A *closed* gate (``closed=True``)
forces g = 0, so the output is exactly the coarse proxy.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualGate(nn.Module):
    """(p_coarse (B, D_id), h_fine (B, H), p_fine (B, D_id)) -> p (B, D_id)."""

    def __init__(self, id_dim: int, hidden_dim: int, closed: bool = False) -> None:
        super().__init__()
        self.from_coarse = nn.Linear(id_dim, id_dim, bias=False)
        self.from_fine = nn.Linear(hidden_dim, id_dim)
        nn.init.zeros_(self.from_fine.bias)
        self.closed = closed

    def gate(self, coarse: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """(B, D_id) gate values in (0, 1); zeros when the gate is closed."""
        if self.closed:
            return torch.zeros_like(coarse)
        return torch.sigmoid(self.from_coarse(coarse) + self.from_fine(hidden))

    def forward(
        self, coarse: torch.Tensor, hidden: torch.Tensor, fine: torch.Tensor
    ) -> torch.Tensor:
        if self.closed:
            return coarse
        return coarse + self.gate(coarse, hidden) * fine
