"""The content-encoder contract: what goes in (:class:`ContentItem`), what comes out
(:class:`EncoderOutput`) and the :class:`ContentEncoder` protocol both encoders follow.

Example::

    encoder = build_encoder(EncoderConfig(kind="text"))
    output = encoder.encode([ContentItem(text="Toy Story (1995). Genres: Animation")])
    output.global_embedding.shape   # (1, 384)
    output.layer_states.shape       # (1, 7, 384): embeddings output + 6 layers
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from idproxy_stream.encoders.registry import build_encoder
from idproxy_stream.errors import IdProxyError

__all__ = [
    "ContentEncoder",
    "ContentItem",
    "EncoderError",
    "EncoderOutput",
    "build_encoder",
]


class EncoderError(IdProxyError, ValueError):
    """An encoder cannot be built or run with the given settings; the message says what to fix."""


@dataclass(frozen=True)
class ContentItem:
    """One item's content as an encoder reads it.

    ``text`` may be empty (it is then encoded as the empty string); ``image`` is an
    already decoded and validated RGB image (see :func:`idproxy_stream.encoders.images.load_image`)
    or None. Text-only encoders ignore the image.
    """

    text: str
    image: Image.Image | None = None


@dataclass(frozen=True)
class EncoderOutput:
    """What an encoder returns for a batch of B items.

    global_embedding: (B, D) float32 on CPU, one vector per item (pooling set in the config).
    layer_states: (B, L, D) float32 on CPU; ``layer_states[:, l]`` is hidden state ``l``
        (``l = 0`` is the embeddings output, then one per transformer layer), mean-pooled
        over the item's content tokens with padding masked out.
    truncated: (B,) per item, True when its text was cut to the encoder's token limit.
    """

    global_embedding: torch.Tensor
    layer_states: torch.Tensor
    truncated: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        batch, width = self.global_embedding.shape
        if self.layer_states.ndim != 3 or self.layer_states.shape[0] != batch:
            raise ValueError(
                f"layer_states must be (B={batch}, L, D), got {tuple(self.layer_states.shape)}"
            )
        if self.layer_states.shape[2] != width:
            raise ValueError(
                f"layer_states width {self.layer_states.shape[2]} != global width {width}"
            )


@runtime_checkable
class ContentEncoder(Protocol):
    """An encoder of item content.

    name: ``"text"``, ``"internvl"`` or ``"text_image"``.
    output_settings: the settings that change the output (weights by their digest, pooling,
        truncation, prompt, dtype ...), keyed by the config key that sets them, e.g.
        ``{"encoder.kind": "text", "encoder.text.max_tokens": 256, ...}``; recorded in the
        content contract (``encoders/contract.py``), so a mismatch can be named.
    fingerprint: stable hash of ``output_settings``; features computed under different
        fingerprints must never be mixed.
    hidden_size: D. num_layers: L, the number of hidden states (embeddings + layers).
    """

    name: str
    output_settings: Mapping[str, Any]
    fingerprint: str
    hidden_size: int
    num_layers: int

    def encode(self, items: Sequence[ContentItem]) -> EncoderOutput:
        """Encode B items: ``(B items) -> EncoderOutput((B, D), (B, L, D))``."""
        ...
