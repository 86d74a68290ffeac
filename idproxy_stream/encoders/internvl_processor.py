"""InternVL's own processor without its video part.

``InternVLProcessor`` requires a video processor, and the only one transformers ships needs
torchvision (not installable beside the pinned CPU torch, and never used here: items carry
at most one still image). :class:`ImageTextInternVLProcessor` is the same class with the
video slot removed: the same ``__call__`` (image tiling, image-token expansion, tokenisation),
the same chat template, the same image processor and tokenizer, loaded from the same
``processor_config.json`` / ``preprocessor_config.json`` / tokenizer files of any ``-hf``
InternVL checkpoint.
"""

from __future__ import annotations

import re

from transformers import InternVLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageTextInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` for images and text only (no ``video_processor`` attribute).

    Sub-processors are found by ``ProcessorMixin`` from this ``__init__``'s parameter names,
    so leaving ``video_processor`` out is what removes it.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 256,
        chat_template: str | None = None,
        **kwargs,
    ) -> None:
        ProcessorMixin.__init__(
            self, image_processor, tokenizer, chat_template=chat_template, **kwargs
        )
        # The same attributes InternVLProcessor.__init__ sets (it cannot be called: it
        # passes the video processor on).
        self.image_seq_length = image_seq_length
        self.start_image_token = tokenizer.start_image_token
        self.end_image_token = tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token = tokenizer.context_image_token
        self.video_token = tokenizer.video_token
        self.image_token_id = tokenizer.context_image_token_id
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
        )

    def to_dict(self) -> dict:
        # Saved checkpoints name the stock class, so AutoProcessor (with torchvision) loads them.
        output = super().to_dict()
        output["processor_class"] = "InternVLProcessor"
        return output
