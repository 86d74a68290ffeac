"""InternVL content encoder on transformers-native classes (``InternVLModel`` + its processor).

Loads any Hugging Face-format InternVL checkpoint (``OpenGVLab/InternVL3-1B-hf`` and
friends, or a local folder such as the one ``tiny_internvl.save_tiny_internvl`` writes):
bfloat16 + SDPA on GPU, float32 on CPU, ``trust_remote_code`` only when configured,
offline unless ``local_files_only`` is False.

Per item the prompt is built with the processor's chat template: one user turn holding
an image placeholder (when the item has an image) and the text ``"{prompt}\\n{item text}"``.
The processor tiles the image and expands the placeholder into
``<img><IMG_CONTEXT> x (image_seq_length * tiles)</img>``.

Content tokens are the image tokens (``<img>``, the context tokens, ``</img>``) and the
tokens of the item text; the instruction, the chat-template scaffolding and padding are
left out. ``layer_states[:, l]`` is the masked mean of language-model hidden state ``l``
(0 = input embeddings with the image features merged in) over the content tokens.
``global_embedding`` is, by default (``global_pooling="mean"``), the last layer's mean over
content tokens: robust for retrieval-like use, where a single position is noisy;
``"last"`` takes the final position's state instead (the next-token summary a causal model
builds). An item with neither text nor image pools over all its non-padding tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from transformers import AutoConfig, InternVLModel

from idproxy_stream.config import EncoderConfig, InternVLEncoderConfig
from idproxy_stream.encoders.base import ContentItem, EncoderError, EncoderOutput
from idproxy_stream.encoders.checkpoints import (
    CheckpointError,
    resolve_device,
    resolve_model_dir,
    settings_fingerprint,
    weights_digest,
)
from idproxy_stream.encoders.internvl_processor import ImageTextInternVLProcessor
from idproxy_stream.encoders.pooling import last_token_states, pool_hidden_states

logger = logging.getLogger(__name__)

# Stands in for the item text while the chat template renders, to locate where it goes.
_ITEM_SLOT = "\u2063ITEM-TEXT-SLOT\u2063"

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``"auto"`` -> bfloat16 on GPU, float32 on CPU; other names map to their torch dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


def _require_model(config: InternVLEncoderConfig) -> InternVLEncoderConfig:
    if config.model is None:
        raise EncoderError(
            "encoder.internvl.model is not set: give a local folder or hub id of a "
            "Hugging Face-format InternVL checkpoint (e.g. OpenGVLab/InternVL3-1B-hf)"
        )
    return config


def internvl_encoder_settings(
    model_dir: Path, config: InternVLEncoderConfig, dtype: torch.dtype
) -> dict[str, Any]:
    """The settings that change an InternVL encoder's output, by config key.

    The weights by their digest; ``dtype`` as resolved on the device (``auto`` is bfloat16 on
    a GPU and float32 on a CPU, and their proxies differ).
    """
    return {
        "encoder.kind": InternVLEncoder.name,
        "encoder.internvl.model": weights_digest(model_dir),
        "encoder.internvl.max_text_tokens": config.max_text_tokens,
        "encoder.internvl.global_pooling": config.global_pooling,
        "encoder.internvl.normalize": config.normalize,
        "encoder.internvl.prompt": config.prompt,
        "encoder.internvl.max_image_tiles": config.max_image_tiles,
        "encoder.internvl.image_backend": config.image_backend,
        "encoder.internvl.dtype": str(dtype).removeprefix("torch."),
    }


class InternVLEncoder:
    """InternVL: ``B items (text + optional image) -> (B, D) global, (B, L, D) layer states``.

    D is the language model's hidden size, L its number of layers + 1.

    Example::

        save_tiny_internvl(tmp_dir)                       # or an -hf checkpoint
        encoder = InternVLEncoder(InternVLEncoderConfig(model=str(tmp_dir)))
        out = encoder.encode([ContentItem("Toy Story", image=poster)])
        out.layer_states.shape                            # (1, 4, 64) for the tiny model
    """

    name = "internvl"
    reads_images = True

    def __init__(self, config: InternVLEncoderConfig) -> None:
        self.config = _require_model(config)
        self.model_dir = resolve_model_dir(config.model, config.local_files_only)
        self.device = torch.device(resolve_device(config.device))
        self.dtype = resolve_dtype(config.dtype, self.device.type)
        self._require_internvl_checkpoint()
        self.processor = ImageTextInternVLProcessor.from_pretrained(
            str(self.model_dir),
            local_files_only=True,
            trust_remote_code=config.trust_remote_code,
            backend=config.image_backend,
        )
        self.model = self._load_model()
        text_config = self.model.config.text_config
        self.hidden_size = int(text_config.hidden_size)
        self.num_layers = int(text_config.num_hidden_layers) + 1
        tokenizer = self.processor.tokenizer
        self._special_tokens = sorted(
            {*tokenizer.all_special_tokens, *map(str, tokenizer.added_tokens_decoder.values())},
            key=len,
            reverse=True,
        )
        self._image_token_ids = torch.tensor(self.processor.image_token_ids)
        self._prefix_suffix = {
            has_image: self._template_around_item(has_image) for has_image in (False, True)
        }
        self.output_settings = internvl_encoder_settings(self.model_dir, config, self.dtype)
        self.fingerprint = settings_fingerprint(self.output_settings)
        self.truncated_items = 0
        logger.info(
            "internvl encoder %s: D=%d L=%d device=%s dtype=%s fingerprint=%s",
            self.model_dir,
            self.hidden_size,
            self.num_layers,
            self.device,
            self.dtype,
            self.fingerprint,
        )

    @classmethod
    def from_config(cls, config: EncoderConfig) -> InternVLEncoder:
        return cls(config.internvl)

    @classmethod
    def output_settings_for(cls, config: EncoderConfig) -> dict[str, Any]:
        """The :attr:`output_settings` an encoder built from ``config`` will have, unloaded."""
        internvl = _require_model(config.internvl)
        model_dir = resolve_model_dir(internvl.model, internvl.local_files_only)
        dtype = resolve_dtype(internvl.dtype, resolve_device(internvl.device))
        return internvl_encoder_settings(model_dir, internvl, dtype)

    def _require_internvl_checkpoint(self) -> None:
        """Refuse other model types (e.g. the original remote-code InternVL releases) early."""
        model_config = AutoConfig.from_pretrained(
            str(self.model_dir),
            local_files_only=True,
            trust_remote_code=self.config.trust_remote_code,
        )
        if model_config.model_type != "internvl":
            raise CheckpointError(
                f"{self.model_dir} is a {model_config.model_type!r} checkpoint, not 'internvl': "
                "use the Hugging Face-format release (the '-hf' repos, e.g. "
                "OpenGVLab/InternVL3-1B-hf)"
            )

    def _load_model(self) -> InternVLModel:
        attn = self.config.attn_implementation if self.device.type == "cuda" else "sdpa"
        model, loading = InternVLModel.from_pretrained(
            str(self.model_dir),
            local_files_only=True,
            dtype=self.dtype,
            attn_implementation=attn,
            output_loading_info=True,
        )
        if loading["missing_keys"] or loading["mismatched_keys"]:
            # A silently random-initialised tower would encode garbage: refuse instead.
            missing = sorted(loading["missing_keys"]) + sorted(map(str, loading["mismatched_keys"]))
            raise CheckpointError(
                f"{self.model_dir} lacks weights for {len(missing)} parameters "
                f"(e.g. {missing[:3]}): the checkpoint is incomplete or not InternVL -hf"
            )
        return model.eval().to(self.device)

    def _template_around_item(self, has_image: bool) -> tuple[str, str]:
        """The chat-template text before and after the item text, for items with/without image."""
        content: list[dict] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": f"{self.config.prompt}\n{_ITEM_SLOT}"})
        rendered = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        if rendered.count(_ITEM_SLOT) != 1:
            raise EncoderError(
                f"the chat template of {self.model_dir} does not render a user text part "
                "exactly once; InternVL -hf checkpoints do"
            )
        prefix, suffix = rendered.split(_ITEM_SLOT)
        return prefix, suffix

    def _clean_and_truncate(self, text: str) -> tuple[str, bool]:
        """Item text without special-token strings, cut to ``max_text_tokens`` tokens."""
        for token in self._special_tokens:
            text = text.replace(token, "")
        tokenizer = self.processor.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_text_tokens:
            return text, False
        return tokenizer.decode(ids[: self.config.max_text_tokens]), True

    @torch.inference_mode()
    def encode(self, items: Sequence[ContentItem]) -> EncoderOutput:
        """Encode B items: ``-> (B, D) global embedding, (B, L, D) layer states`` (float32, CPU)."""
        if not items:
            return EncoderOutput(
                torch.zeros(0, self.hidden_size), torch.zeros(0, self.num_layers, self.hidden_size)
            )
        texts, spans_from_end, truncated = [], [], []
        for item in items:
            item_text, was_cut = self._clean_and_truncate(item.text)
            prefix, suffix = self._prefix_suffix[item.image is not None]
            texts.append(prefix + item_text + suffix)
            # Offsets are counted from the end: image expansion happens before the item text.
            spans_from_end.append((len(suffix) + len(item_text), len(suffix)))
            truncated.append(was_cut)
        images = [item.image for item in items if item.image is not None]
        images_kwargs = {}
        if self.config.max_image_tiles is not None:
            images_kwargs["max_patches"] = self.config.max_image_tiles
        batch = self.processor(
            images=images or None,
            text=texts,
            padding=True,
            return_tensors="pt",
            return_offsets_mapping=True,
            **images_kwargs,
        )
        content_mask = self._content_mask(
            batch["input_ids"], batch["attention_mask"], batch.pop("offset_mapping"), spans_from_end
        )
        inputs = {key: value.to(self.device) for key, value in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs, output_hidden_states=True)
        content_mask = content_mask.to(self.device)
        layer_states = pool_hidden_states(outputs.hidden_states, content_mask)
        if self.config.global_pooling == "last":
            last_layer = outputs.hidden_states[-1]
            global_embedding = last_token_states(last_layer, inputs["attention_mask"])
        else:
            global_embedding = layer_states[:, -1]
        if self.config.normalize:
            global_embedding = functional.normalize(global_embedding, dim=-1)
        self._count_truncated(truncated)
        return EncoderOutput(
            global_embedding=global_embedding.cpu(),
            layer_states=layer_states.cpu(),
            truncated=tuple(truncated),
        )

    def _content_mask(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        offsets: torch.Tensor,
        spans_from_end: list[tuple[int, int]],
    ) -> torch.Tensor:
        """(B, T) bool: image tokens plus tokens overlapping the item text; padding never."""
        real = attention_mask.bool()
        is_image = torch.isin(input_ids, self._image_token_ids)
        text_end = torch.where(real, offsets[..., 1], 0).max(dim=1).values
        from_end = torch.tensor(spans_from_end, dtype=offsets.dtype)
        span_start = text_end - from_end[:, 0]
        span_end = text_end - from_end[:, 1]
        in_text = (
            (offsets[..., 0] < span_end[:, None])
            & (offsets[..., 1] > span_start[:, None])
            & (span_end > span_start)[:, None]
        )
        mask = (is_image | in_text) & real
        empty = ~mask.any(dim=1)
        mask[empty] = real[empty]
        return mask

    def _count_truncated(self, truncated: list[bool]) -> None:
        count = sum(truncated)
        if count:
            self.truncated_items += count
            logger.info(
                "truncated %d of %d item texts to %d tokens (%d so far)",
                count,
                len(truncated),
                self.config.max_text_tokens,
                self.truncated_items,
            )
