from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from idproxy_stream.data.images import (
    SHAPES,
    GlyphAttributes,
    encode_png,
    hsv_to_rgb,
    render_glyphs,
)


def attributes_for(shapes: list[int], hue: float = 0.0, background: float = 0.5) -> GlyphAttributes:
    count = len(shapes)
    return GlyphAttributes(
        shape=np.asarray(shapes),
        hue=np.full(count, hue),
        size=np.full(count, 0.6),
        centre=np.zeros((count, 2)),
        stripe_frequency=np.zeros(count),  # flat: shade 0.6 + 0.4 * (0.5 + 0.5 sin 0) = 0.8
        stripe_angle=np.zeros(count),
        background=np.full(count, background),
    )


def test_png_round_trip_is_lossless_for_non_square_images():
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    encoded = encode_png(pixels)
    for original, data in zip(pixels, encoded, strict=True):
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (7, 5))
        np.testing.assert_array_equal(np.asarray(image), original)


def test_png_encoder_rejects_other_layouts():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        encode_png(np.zeros((1, 4, 4, 4), dtype=np.uint8))


def test_hsv_primary_hues():
    rgb = hsv_to_rgb(np.array([0.0, 1 / 3, 2 / 3]), saturation=1.0, value=1.0)
    np.testing.assert_allclose(rgb, np.eye(3), atol=1e-6)


def test_glyph_has_foreground_centre_and_background_corners_without_noise():
    images = render_glyphs(
        attributes_for(list(range(len(SHAPES)))), 32, 0.0, np.random.default_rng(0)
    )
    assert images.shape == (len(SHAPES), 32, 32, 3) and images.dtype == np.uint8
    red = np.rint(hsv_to_rgb(np.array([0.0]), 0.8, 0.95)[0] * 0.8 * 255)
    grey = np.rint(0.5 * 255)
    for name, image in zip(SHAPES, images, strict=True):
        assert (image[0, 0] == grey).all(), name
        if name not in ("ring", "crescent"):  # hollow or offset shapes leave the centre empty
            np.testing.assert_allclose(image[16, 16], red, atol=1, err_msg=name)
    assert len({image.tobytes() for image in images}) == len(SHAPES)  # shapes differ


def test_rendering_is_deterministic_for_a_seeded_generator_and_noise_changes_pixels():
    attributes = attributes_for([0, 3, 6])
    first = render_glyphs(attributes, 16, 0.1, np.random.default_rng(5))
    second = render_glyphs(attributes, 16, 0.1, np.random.default_rng(5))
    clean = render_glyphs(attributes, 16, 0.0, np.random.default_rng(5))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first.astype(int) - clean.astype(int)).mean() > 3
