"""Random InternVL checkpoints for tests and benchmarks, written in the real -hf layout.

:func:`save_tiny_internvl` writes a complete local checkpoint folder — ``config.json``,
``model.safetensors``, tokenizer files with a chat template, ``processor_config.json`` and
``preprocessor_config.json`` — that :class:`~idproxy_stream.encoders.internvl.InternVLEncoder`
loads through its production path, fully offline. The Qwen2 tokenizer files live on the hub
only, so a small byte-level BPE tokenizer is trained here on a few sentences, with the special
tokens InternVL's processor and chat template use. Weights are random: outputs are
meaningless, shapes and code paths are real.

Shapes: :data:`TINY` (vision 64-d x 2 layers on 64 px / 16 px patches, Qwen2 64-d x 3
layers, vocab 1000: builds and runs in milliseconds) and :data:`INTERNVL3_1B`
(InternViT-300M + Qwen2.5-0.5B as in InternVL3-1B, 448 px, 256 image tokens per tile).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from idproxy_stream.encoders.internvl_processor import ImageTextInternVLProcessor

# The same template the InternVL -hf checkpoints ship (images become <IMG_CONTEXT>).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)
SPECIAL_TOKENS = {
    "pad_token": "<|endoftext|>",
    "eos_token": "<|im_end|>",
}
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_TRAINING_SENTENCES = (
    "Describe this item for a recommender system.",
    "Toy Story (1995). Genres: Animation, Children's, Comedy. A cowboy doll is threatened.",
    "A thriller about a detective who hunts a killer through a rainy city at night.",
    "Tags: classic, romance, drama, funny, dark, space, war, music, family, western.",
    "user assistant system image movie film poster story plot year title the a of and in",
)


@dataclass(frozen=True)
class RandomInternVLShape:
    """Sizes of a random InternVL: vision tower, Qwen2 language model, image tiling."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vocab_size: int
    max_tiles: int

    @property
    def image_seq_length(self) -> int:
        """Image tokens per tile: (image_size / patch)^2 patches, pixel-shuffled by 0.5 x 0.5."""
        return (self.image_size // self.patch_size) ** 2 // 4


TINY = RandomInternVLShape(
    vision_hidden=64,
    vision_layers=2,
    vision_heads=4,
    vision_intermediate=128,
    image_size=64,
    patch_size=16,
    text_hidden=64,
    text_layers=3,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=128,
    vocab_size=1000,
    max_tiles=2,
)
INTERNVL3_1B = RandomInternVLShape(
    vision_hidden=1024,
    vision_layers=24,
    vision_heads=16,
    vision_intermediate=4096,
    image_size=448,
    patch_size=14,
    text_hidden=896,
    text_layers=24,
    text_heads=14,
    text_kv_heads=2,
    text_intermediate=4864,
    vocab_size=151_674,
    max_tiles=1,
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (a few hundred tokens) with InternVL's special tokens."""
    special = [*SPECIAL_TOKENS.values(), "<|im_start|>", *IMAGE_TOKENS.values()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TRAINING_SENTENCES, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        extra_special_tokens=dict(IMAGE_TOKENS),
        model_max_length=4096,
        chat_template=CHAT_TEMPLATE,
        **SPECIAL_TOKENS,
    )


def build_tiny_processor(shape: RandomInternVLShape = TINY) -> ImageTextInternVLProcessor:
    """InternVL processor: the tiny tokenizer + Pillow GotOcr2 image processor for ``shape``."""
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": shape.image_size, "width": shape.image_size},
        crop_to_patches=shape.max_tiles > 1,
        min_patches=1,
        max_patches=shape.max_tiles,
    )
    return ImageTextInternVLProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        image_seq_length=shape.image_seq_length,
        chat_template=CHAT_TEMPLATE,
    )


def random_internvl_config(shape: RandomInternVLShape, image_token_id: int) -> InternVLConfig:
    """An ``InternVLConfig`` of the given shape (Qwen2 text backbone)."""
    if image_token_id >= shape.vocab_size:
        raise ValueError(f"image_token_id {image_token_id} must be < vocab {shape.vocab_size}")
    vision = InternVLVisionConfig(
        hidden_size=shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        intermediate_size=shape.vision_intermediate,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
    )
    text = Qwen2Config(
        hidden_size=shape.text_hidden,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_kv_heads,
        intermediate_size=shape.text_intermediate,
        vocab_size=shape.vocab_size,
        max_position_embeddings=32_768,
        tie_word_embeddings=True,
    )
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        image_seq_length=shape.image_seq_length,
    )


def build_tiny_internvl(
    output_dir: Path | None = None,
    seed: int = 0,
    shape: RandomInternVLShape = TINY,
    dtype: torch.dtype = torch.float32,
) -> tuple[InternVLForConditionalGeneration, ImageTextInternVLProcessor]:
    """A random InternVL model and its processor; saved as a checkpoint when ``output_dir``.

    The seed fixes the weights (the global torch RNG is left as it was).
    """
    processor = build_tiny_processor(shape)
    config = random_internvl_config(shape, processor.image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).to(dtype).eval()
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
    return model, processor


def save_tiny_internvl(
    output_dir: Path,
    seed: int = 0,
    shape: RandomInternVLShape = TINY,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random InternVL checkpoint folder (see module docstring) and return its path."""
    build_tiny_internvl(Path(output_dir), seed=seed, shape=shape, dtype=dtype)
    return Path(output_dir)
