"""Checkpoints of the CTR-library ranker adapters: ``din.safetensors`` + ``din.json``.

The weights go through safetensors and the manifest (format tag, the adapter's settings and the
item vocabulary it was trained on) through JSON; nothing is pickled. Shared by the DeepCTR-Torch
and FuxiCTR adapters (``ranker/deepctr_din.py``, ``ranker/fuxictr_din.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from idproxy_stream.ranker.inputs import FeatureVocab
from idproxy_stream.ranker.plugins import RankerPluginError

WEIGHTS_FILE = "din.safetensors"
MANIFEST_FILE = "din.json"


def has_checkpoint(directory: Path | None) -> bool:
    """Whether ``directory`` holds a checkpoint (its manifest exists)."""
    return directory is not None and (directory / MANIFEST_FILE).is_file()


def save_checkpoint(
    model: nn.Module, settings: BaseModel, vocab: FeatureVocab, directory: Path, fmt: str
) -> None:
    """Write ``model``'s weights and the manifest (``fmt``, ``settings``, ``vocab``)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    manifest = {
        "format": fmt,
        "settings": settings.model_dump(mode="json"),
        "vocab": vocab.to_dict(),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def read_checkpoint(
    directory: Path, vocab: FeatureVocab, fmt: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The saved settings and weights; refused when of another format or another catalogue."""
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    if manifest.get("format") != fmt:
        raise RankerPluginError(f"ranker.checkpoint = {directory}: not a {fmt} checkpoint")
    if FeatureVocab.from_dict(manifest["vocab"]) != vocab:
        raise RankerPluginError(
            f"ranker.checkpoint = {directory} was trained on another catalogue (its item "
            "vocabulary differs): point it at an empty folder to train a new DIN"
        )
    return manifest["settings"], load_file(str(directory / WEIGHTS_FILE))
