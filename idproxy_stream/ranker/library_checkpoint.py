"""What the CTR-library ranker adapters share: checkpoints, the override lookup, the factory.

Checkpoints are ``din.safetensors`` + ``din.json``: the weights go through safetensors and the
manifest (format tag, the adapter's settings and the item vocabulary it was trained on) through
JSON; nothing is pickled. :class:`LibraryDin` is the load-or-train factory of one library's DIN.
Shared by the DeepCTR-Torch and FuxiCTR adapters (``ranker/deepctr_din.py``,
``ranker/fuxictr_din.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from idproxy_stream.ranker.fitting import fit_adapter
from idproxy_stream.ranker.inputs import FeatureVocab
from idproxy_stream.ranker.plugins import AdapterContext, RankerPluginError

logger = logging.getLogger(__name__)

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


class OverrideLookup(nn.Module):
    """Stands in for a library's item embedding layer: positions (...) -> rows of ``table``
    (..., D)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


def settings_error(error: ValueError) -> RankerPluginError:
    """A pydantic validation error of ``ranker.adapter_settings`` as one line naming the field."""
    lines = str(error).splitlines()
    detail = lines[1] + ": " + lines[2].strip() if len(lines) > 2 else lines[0]
    return RankerPluginError(f"ranker.adapter_settings: {detail}")


@dataclass(frozen=True)
class LibraryDin:
    """One CTR library's DIN as a ranker plugin: build, save, load, and the factory.

    name: for logs ("DeepCTR DIN"); fmt: the checkpoint's format tag; settings_model: the
    adapter's settings (``ranker.adapter_settings``); build: ``(vocab, settings, seed) -> model``
    (untrained); adapter: ``(model, vocab, settings) -> adapter`` (an ``nn.Module`` with
    ``model``, ``vocab`` and ``settings`` attributes); check: an optional
    ``(settings, context) -> None`` that raises :class:`RankerPluginError` for settings that
    do not fit the data.
    """

    name: str
    fmt: str
    settings_model: type[BaseModel]
    build: Callable[[FeatureVocab, Any, int], nn.Module]
    adapter: Callable[[nn.Module, FeatureVocab, Any], nn.Module]
    check: Callable[[Any, AdapterContext], None] | None = None

    def save(self, adapter: nn.Module, directory: Path) -> None:
        """``din.safetensors`` + ``din.json`` (settings and vocabulary); nothing pickled."""
        save_checkpoint(adapter.model, adapter.settings, adapter.vocab, directory, self.fmt)

    def load(self, directory: Path, vocab: FeatureVocab) -> nn.Module:
        """The adapter saved by :meth:`save`; refused when trained on another vocabulary."""
        saved, state = read_checkpoint(directory, vocab, self.fmt)
        settings = self.settings_model.model_validate(saved)
        model = self.build(vocab, settings, 0)
        model.load_state_dict(state)
        return self.adapter(model, vocab, settings).eval()

    def load_or_train(self, context: AdapterContext) -> nn.Module:
        """The factory: load ``context.checkpoint`` or train a DIN (and save it there)."""
        checkpoint = context.checkpoint
        if has_checkpoint(checkpoint):
            return self.load(checkpoint, context.vocab)
        try:
            settings = self.settings_model.model_validate(dict(context.settings))
        except ValueError as error:
            raise settings_error(error) from None
        if self.check is not None:
            self.check(settings, context)
        adapter = self.adapter(
            self.build(context.vocab, settings, context.seed), context.vocab, settings
        )
        auc = fit_adapter(
            adapter,
            context.train,
            context.valid,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            patience=settings.patience,
            seed=context.seed,
        )
        logger.info("%s trained: best warm-valid AUC %.4f", self.name, auc)
        if checkpoint is not None:
            self.save(adapter, checkpoint)
        return adapter
