"""Encoder kinds by name (Feast-style): ``EncoderConfig.kind`` -> the class that implements it.

Classes are named by import path and imported only when built, so choosing the text
encoder never imports the InternVL or EfficientNet code (the ``vision`` extra) and vice versa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from idproxy_stream.config import EncoderConfig
from idproxy_stream.encoders.checkpoints import settings_fingerprint

if TYPE_CHECKING:
    from idproxy_stream.encoders.base import ContentEncoder

ENCODER_CLASSES: dict[str, str] = {
    "text": "idproxy_stream.encoders.text.TextEncoder",
    "internvl": "idproxy_stream.encoders.internvl.InternVLEncoder",
    "text_image": "idproxy_stream.encoders.text_image.TextImageEncoder",
}


def encoder_class(kind: str) -> type:
    """The encoder class registered for ``kind``; ValueError naming the known kinds otherwise."""
    if kind not in ENCODER_CLASSES:
        raise ValueError(
            f"unknown encoder kind {kind!r}: set encoder.kind to one of {sorted(ENCODER_CLASSES)}"
        )
    module_name, class_name = ENCODER_CLASSES[kind].rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name)


def build_encoder(config: EncoderConfig) -> ContentEncoder:
    """Build the encoder ``config.kind`` names, from that kind's sub-config."""
    cls = encoder_class(config.kind)
    return cls.from_config(config)


def encoder_output_settings(config: EncoderConfig) -> dict[str, Any]:
    """The ``output_settings`` ``build_encoder(config)`` will have, without loading weights."""
    return encoder_class(config.kind).output_settings_for(config)


def encoder_fingerprint(config: EncoderConfig) -> str:
    """The fingerprint ``build_encoder(config)`` will have, computed without loading weights."""
    return settings_fingerprint(encoder_output_settings(config))
