"""Token pooling shared by the encoders: hidden states over T tokens -> one vector per item.

Padding never leaks: a masked-out position's value is multiplied by zero *and* replaced
before the product, so even NaN or inf in padded positions leave the result unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def masked_mean_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is true: ``(B, T, D), (B, T) -> (B, D)``.

    A row with no selected token pools to zeros (callers avoid that by construction).
    Computed in float32 whatever the input dtype.
    """
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden (B, T, D) and mask (B, T), got {tuple(hidden.shape)} and "
            f"{tuple(mask.shape)}"
        )
    keep = mask.to(dtype=torch.bool, device=hidden.device).unsqueeze(-1)
    values = torch.where(keep, hidden.float(), torch.zeros((), device=hidden.device))
    counts = keep.sum(dim=1).clamp(min=1).float()
    return values.sum(dim=1) / counts


def pool_hidden_states(hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of every layer's states: ``L x (B, T, D), (B, T) -> (B, L, D)`` float32."""
    return torch.stack([masked_mean_tokens(layer, mask) for layer in hidden_states], dim=1)


def last_token_states(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last position where ``mask`` is true: ``(B, T, D), (B, T) -> (B, D)``.

    Works for left and right padding alike (it looks for the highest masked-in index).
    """
    positions = torch.arange(mask.shape[1], device=hidden.device).expand_as(mask)
    last = torch.where(mask.to(hidden.device).bool(), positions, -1).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
