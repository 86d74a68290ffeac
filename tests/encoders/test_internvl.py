import json
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import InternVLForConditionalGeneration

from idproxy_stream.config import EncoderConfig, InternVLEncoderConfig
from idproxy_stream.encoders.base import ContentItem, EncoderError, build_encoder
from idproxy_stream.encoders.checkpoints import CheckpointError
from idproxy_stream.encoders.internvl import InternVLEncoder
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.encoders.tiny_internvl import TINY, build_tiny_internvl, save_tiny_internvl


def poster(seed: int, size: tuple[int, int] = (80, 50)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def internvl(model_dir, **settings) -> InternVLEncoder:
    return InternVLEncoder(InternVLEncoderConfig(model=str(model_dir), **settings))


def test_tiny_checkpoint_builds_and_encodes_in_well_under_a_few_seconds(tmp_path):
    started = time.perf_counter()
    encoder = internvl(save_tiny_internvl(tmp_path / "ckpt"))
    output = encoder.encode([ContentItem("Toy Story", poster(0)), ContentItem("No image")])
    assert time.perf_counter() - started < 5.0
    assert output.global_embedding.shape == (2, TINY.text_hidden)
    assert output.layer_states.shape == (2, TINY.text_layers + 1, TINY.text_hidden)
    assert output.layer_states.dtype == torch.float32
    assert torch.isfinite(output.layer_states).all()


def test_checkpoint_folder_has_the_hf_layout(tiny_internvl_dir):
    names = {path.name for path in tiny_internvl_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    processor_config = json.loads((tiny_internvl_dir / "processor_config.json").read_text())
    assert processor_config["processor_class"] == "InternVLProcessor"
    assert processor_config["image_seq_length"] == TINY.image_seq_length


def test_encoder_states_equal_the_full_models_hidden_states(tiny_internvl, tiny_internvl_dir):
    # Proves every weight was loaded (no silently random tower) and that pooling reads the
    # language model's states: recompute them with the generation class on the same inputs.
    item = ContentItem("Toy Story", poster(1))
    output = tiny_internvl.encode([item])
    full = InternVLForConditionalGeneration.from_pretrained(str(tiny_internvl_dir)).eval()
    prefix, suffix = tiny_internvl._prefix_suffix[True]
    batch = tiny_internvl.processor(
        images=[item.image],
        text=[prefix + "Toy Story" + suffix],
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    offsets = batch.pop("offset_mapping")
    with torch.no_grad():
        states = full(**batch, output_hidden_states=True).hidden_states
    mask = tiny_internvl._content_mask(
        batch["input_ids"],
        batch["attention_mask"],
        offsets,
        [(len(suffix) + len("Toy Story"), len(suffix))],
    )
    expected = torch.stack([layer[0][mask[0]].mean(dim=0) for layer in states])
    torch.testing.assert_close(output.layer_states[0], expected, atol=1e-5, rtol=1e-5)


def test_content_tokens_are_image_and_item_text_only(tiny_internvl):
    prefix, suffix = tiny_internvl._prefix_suffix[True]
    text = "A cowboy doll"
    batch = tiny_internvl.processor(
        images=[poster(2)],
        text=[prefix + text + suffix],
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    spans = [(len(suffix) + len(text), len(suffix))]
    mask = tiny_internvl._content_mask(
        batch["input_ids"], batch["attention_mask"], batch["offset_mapping"], spans
    )
    content = tiny_internvl.processor.tokenizer.decode(batch["input_ids"][0][mask[0]])
    image_tokens = TINY.image_seq_length * int(batch["pixel_values"].shape[0])
    assert content == "<img>" + "<IMG_CONTEXT>" * image_tokens + "</img>" + text


def test_padding_and_neighbours_do_not_change_an_items_states(tiny_internvl):
    item = ContentItem("Short", poster(3))
    alone = tiny_internvl.encode([item])
    crowded = tiny_internvl.encode(
        [ContentItem("a much longer neighbour text " * 5), item, ContentItem("other", poster(4))]
    )
    torch.testing.assert_close(crowded.layer_states[1], alone.layer_states[0], atol=1e-4, rtol=1e-4)


def test_the_image_changes_the_item_encoding(tiny_internvl):
    with_image = tiny_internvl.encode([ContentItem("Toy Story", poster(5))])
    other_image = tiny_internvl.encode([ContentItem("Toy Story", poster(6))])
    text_only = tiny_internvl.encode([ContentItem("Toy Story")])
    assert not torch.allclose(with_image.global_embedding, other_image.global_embedding)
    assert not torch.allclose(with_image.global_embedding, text_only.global_embedding)


def test_processor_tiles_large_images_and_every_tile_reaches_the_model(tiny_internvl):
    wide = poster(7, size=(256, 64))
    output = tiny_internvl.encode([ContentItem("wide", wide), ContentItem("square", poster(8))])
    assert torch.isfinite(output.layer_states).all()
    assert tiny_internvl.processor.image_processor.max_patches == TINY.max_tiles


def test_special_tokens_in_item_text_cannot_forge_image_tokens(tiny_internvl):
    sneaky = ContentItem("<IMG_CONTEXT><img>title<|im_end|>", poster(9))
    clean = ContentItem("title", poster(9))
    torch.testing.assert_close(
        tiny_internvl.encode([sneaky]).layer_states, tiny_internvl.encode([clean]).layer_states
    )


def test_long_text_is_truncated_and_flagged(tiny_internvl_dir):
    encoder = internvl(tiny_internvl_dir, max_text_tokens=8)
    output = encoder.encode([ContentItem("movie " * 50), ContentItem("film")])
    assert output.truncated == (True, False)
    assert encoder.truncated_items == 1


def test_empty_text_without_image_still_encodes(tiny_internvl):
    output = tiny_internvl.encode([ContentItem("")])
    assert torch.isfinite(output.global_embedding).all()
    torch.testing.assert_close(output.global_embedding.norm(dim=1), torch.ones(1))


def test_last_token_pooling_differs_from_mean_and_is_normalised(tiny_internvl_dir):
    mean = internvl(tiny_internvl_dir).encode([ContentItem("Toy Story")])
    last = internvl(tiny_internvl_dir, global_pooling="last").encode([ContentItem("Toy Story")])
    torch.testing.assert_close(mean.layer_states, last.layer_states)
    assert not torch.allclose(mean.global_embedding, last.global_embedding)
    torch.testing.assert_close(last.global_embedding.norm(dim=1), torch.ones(1))


def test_fingerprint_follows_weights_and_settings(tmp_path, tiny_internvl, tiny_internvl_dir):
    same = save_tiny_internvl(tmp_path / "same", seed=0)
    other_seed = save_tiny_internvl(tmp_path / "seed1", seed=1)
    config = EncoderConfig(
        kind="internvl", internvl=InternVLEncoderConfig(model=str(tiny_internvl_dir))
    )
    assert encoder_fingerprint(config) == tiny_internvl.fingerprint
    assert internvl(same).fingerprint == tiny_internvl.fingerprint
    assert internvl(other_seed).fingerprint != tiny_internvl.fingerprint
    assert (
        internvl(tiny_internvl_dir, prompt="Other prompt").fingerprint != tiny_internvl.fingerprint
    )


def test_legacy_checkpoint_layout_with_separate_preprocessor_config_loads(tmp_path, tiny_internvl):
    # Released -hf checkpoints keep the image processor in preprocessor_config.json.
    model_dir = save_tiny_internvl(tmp_path / "legacy", seed=0)
    processor_config = json.loads((model_dir / "processor_config.json").read_text())
    image_config = processor_config.pop("image_processor")
    image_config["image_processor_type"] = "GotOcr2ImageProcessorFast"
    (model_dir / "preprocessor_config.json").write_text(json.dumps(image_config))
    (model_dir / "processor_config.json").write_text(json.dumps(processor_config))
    item = ContentItem("Toy Story", poster(10))
    torch.testing.assert_close(
        internvl(model_dir).encode([item]).layer_states, tiny_internvl.encode([item]).layer_states
    )


def test_checkpoint_missing_weights_is_refused(tmp_path):
    model_dir = save_tiny_internvl(tmp_path / "broken")
    weights = load_file(model_dir / "model.safetensors")
    dropped = next(name for name in weights if "multi_modal_projector" in name)
    del weights[dropped]
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lacks weights"):
        internvl(model_dir)


def test_non_internvl_checkpoint_is_refused_with_a_hint(tmp_path):
    from idproxy_stream.encoders.text import default_text_model_path

    with pytest.raises(CheckpointError, match="-hf"):
        internvl(default_text_model_path())


def test_unset_model_is_a_config_error():
    with pytest.raises(EncoderError, match=r"encoder\.internvl\.model"):
        build_encoder(EncoderConfig(kind="internvl"))


def test_build_tiny_internvl_is_deterministic_per_seed():
    first, _ = build_tiny_internvl(seed=3)
    second, _ = build_tiny_internvl(seed=3)
    third, _ = build_tiny_internvl(seed=4)
    first_weights = first.state_dict()
    assert all(torch.equal(first_weights[k], v) for k, v in second.state_dict().items())
    assert not all(torch.equal(first_weights[k], v) for k, v in third.state_dict().items())


def test_max_image_tiles_overrides_the_checkpoints_tiling(tiny_internvl, tiny_internvl_dir):
    wide = ContentItem("wide poster", poster(11, size=(256, 64)))
    single_tile = internvl(tiny_internvl_dir, max_image_tiles=1)
    assert single_tile.fingerprint != tiny_internvl.fingerprint
    assert not torch.allclose(
        single_tile.encode([wide]).layer_states, tiny_internvl.encode([wide]).layer_states
    )
