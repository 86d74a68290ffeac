"""Stage 1 head: the coarse projector phi and its scale calibration.

``phi`` maps the encoder's global content embedding to a *direction* in the ranker's ID space
(it is trained contrastively against L2-normalised ID embeddings, so only direction is learned).
A proxy must also have the right *length* and sit around the right *centre*: the ranker's ID
embeddings are neither unit-norm nor centred at the origin. The coarse proxy is therefore

    p_coarse = centre + scale * normalize(phi(g))

where ``centre`` is the mean ID embedding of mature items (zero when Stage 1 trains on
un-centred targets) and ``scale`` is the least-squares scalar
``sum_i <u_i, y_i - centre> / sum_i <u_i, u_i>`` over held-out mature items (u_i the offset,
y_i the raw ID embedding). That scalar is the length that minimises the squared error of
``scale * u`` against the ID embedding: it equals the mean ID norm when directions are perfect
and shrinks toward the centre as alignment gets worse, which is what a ranker needs from an
uncertain proxy.

``hidden_dim=0`` makes ``phi`` linear: the ridge-regression coarse proxy that training keeps
as the fallback a Stage 2 must beat.

With ``unit_offsets=False`` (Stage 1 trained with a regression term, see
``training/stage1.py``) the offset is ``phi(g)`` itself rather than its direction: the network
then learns a length per item (short where the content says little) and ``scale`` is the same
least-squares shrinkage of that whole offset.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CoarseProjector(nn.Module):
    """phi: (B, D_enc) global content embedding -> (B, D_id) coarse proxy.

    Example:
        >>> projector = CoarseProjector(384, 16, hidden_dim=256)
        >>> projector(torch.randn(4, 384)).shape
        torch.Size([4, 16])
    """

    def __init__(
        self,
        input_dim: int,
        id_dim: int,
        hidden_dim: int = 256,
        dropout: float = 0.1,
        unit_offsets: bool = True,
    ) -> None:
        super().__init__()
        self.input_dim, self.id_dim = input_dim, id_dim
        self.unit_offsets = unit_offsets
        self.hidden_dim = hidden_dim
        # hidden_dim 0: a linear map (the ridge-regression coarse proxy, training/stage1.py)
        self.net = (
            nn.Sequential(nn.Linear(input_dim, id_dim))
            if hidden_dim == 0
            else nn.Sequential(
                nn.LayerNorm(input_dim),
                nn.Dropout(dropout),
                nn.Linear(input_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, id_dim),
            )
        )
        self.register_buffer("centre", torch.zeros(id_dim))
        self.register_buffer("scale", torch.ones(()))

    def direction(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """(B, D_enc) -> (B, D_id) unit vectors; what the contrastive loss trains."""
        return F.normalize(self.net(global_embedding), dim=-1)

    def offset(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """(B, D_enc) -> (B, D_id) offset from the centre before scaling.

        The unit direction when ``unit_offsets``, else the network's raw output.
        """
        raw = self.net(global_embedding)
        return F.normalize(raw, dim=-1) if self.unit_offsets else raw

    def forward(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """(B, D_enc) -> (B, D_id) coarse proxy ``centre + scale * offset``."""
        return self.centre + self.scale * self.offset(global_embedding)

    @torch.no_grad()
    def calibrate(self, global_embedding: torch.Tensor, id_embedding: torch.Tensor) -> float:
        """Set ``scale`` to the least-squares length on (N, D_enc) inputs, (N, D_id) raw IDs.

        Returns the calibrated scale.
        """
        was_training = self.training
        self.eval()
        offset = self.offset(global_embedding)
        aligned = (offset * (id_embedding - self.centre)).sum()
        scale = (aligned / offset.pow(2).sum().clamp(min=1e-12)).clamp(min=0.0)
        self.scale.copy_(scale)
        self.train(was_training)
        return float(scale)
