"""Fixtures for the encoder tests: real models (packaged MiniLM, a tiny random InternVL
checkpoint written to a temp folder), synthetic images, and a local Ray."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from idproxy_stream.config import EncoderConfig, InternVLEncoderConfig, TextEncoderConfig
from idproxy_stream.encoders.base import build_encoder
from idproxy_stream.encoders.tiny_internvl import save_tiny_internvl


def png_bytes(width: int = 40, height: int = 30, seed: int = 0, mode: str = "RGB") -> bytes:
    """A small random PNG."""
    generator = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = generator.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def items_frame(texts: list[str], images: list[bytes | str | None] | None = None) -> pd.DataFrame:
    """An items table in the RecDataset shape (see data/schema.py) with the given content."""
    images = images if images is not None else [None] * len(texts)
    return pd.DataFrame(
        {
            "item_id": np.arange(1, len(texts) + 1, dtype=np.int64),
            "title": texts,
            "description": [""] * len(texts),
            "tags": [[] for _ in texts],
            "categories": [[] for _ in texts],
            "year": [0] * len(texts),
            "image_uri": [ref if isinstance(ref, str) else None for ref in images],
            "image_bytes": [ref if isinstance(ref, bytes) else None for ref in images],
        }
    )


@pytest.fixture(scope="session")
def tiny_internvl_dir(tmp_path_factory) -> Path:
    return save_tiny_internvl(tmp_path_factory.mktemp("tiny-internvl"), seed=0)


@pytest.fixture(scope="session")
def tiny_internvl(tiny_internvl_dir):
    return build_encoder(
        EncoderConfig(kind="internvl", internvl=InternVLEncoderConfig(model=str(tiny_internvl_dir)))
    )


@pytest.fixture(scope="session")
def minilm():
    return build_encoder(EncoderConfig(kind="text", text=TextEncoderConfig()))


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A local 2-CPU Ray for the session (reused when another fixture already started one)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        logging_level="WARNING",
    )
    yield ray
    ray.shutdown()
