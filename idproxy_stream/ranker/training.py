"""Training, scoring and persistence of the reference ranker.

Persistence is safetensors (weights) + JSON (config and vocabulary); nothing is pickled.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from idproxy_stream.config import RankerConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.din import DinRanker
from idproxy_stream.ranker.inputs import FeatureVocab, RankerBatch, RankerInputs
from idproxy_stream.ranker.metrics import log_loss, roc_auc

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "ranker.safetensors"
MANIFEST_FILE = "ranker.json"

EmbeddingOverride = Callable[[RankerBatch], tuple[torch.Tensor | None, torch.Tensor | None]]


class RankerLoadError(IdProxyError, ValueError):
    """A saved ranker is missing or does not match its manifest."""


@dataclass
class RankerTrainReport:
    """What training did: epochs run, validation AUC per epoch, best epoch, wall time."""

    valid_auc: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def table_override(item_table: torch.Tensor) -> EmbeddingOverride:
    """An override that reads every candidate and behaviour embedding from ``item_table``.

    Args:
        item_table: (N_rows, D) embeddings indexed by item row (row 0 = padding).
    """

    def override(batch: RankerBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return item_table[batch.item], item_table[batch.history]

    return override


def predict_logits(
    ranker: RankerAdapter,
    inputs: RankerInputs,
    batch_size: int = 4096,
    override: EmbeddingOverride | None = None,
) -> np.ndarray:
    """Logits (S,) for every sample; ``override`` supplies ID-embedding stand-ins per batch."""
    was_training = getattr(ranker, "training", False)
    if hasattr(ranker, "eval"):
        ranker.eval()
    outputs = []
    with torch.no_grad():
        for batch in inputs.batches(batch_size):
            candidate, history = override(batch) if override else (None, None)
            outputs.append(ranker.forward(batch, candidate, history))
    if was_training:
        ranker.train()
    return torch.cat(outputs).numpy() if outputs else np.zeros(0, dtype=np.float32)


def evaluate_ranker(
    ranker: RankerAdapter,
    inputs: RankerInputs,
    override: EmbeddingOverride | None = None,
) -> dict[str, float]:
    """AUC and log loss of the ranker on ``inputs``."""
    logits = predict_logits(ranker, inputs, override=override)
    labels = inputs.label.numpy()
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return {"auc": roc_auc(labels, logits), "logloss": log_loss(labels, probabilities)}


def train_ranker(
    train: RankerInputs,
    valid: RankerInputs,
    config: RankerConfig,
    vocab: FeatureVocab,
) -> tuple[DinRanker, RankerTrainReport]:
    """Train a :class:`DinRanker` with early stopping on validation AUC.

    Uses the process's torch threads: entry points set them from ``ranker.num_threads``.
    """
    torch.manual_seed(config.seed)
    model = DinRanker(config, vocab)
    id_parameters = [model.item_ids.weight]
    other_parameters = [p for name, p in model.named_parameters() if name != "item_ids.weight"]
    optimizer = torch.optim.Adam(
        [
            {"params": id_parameters, "weight_decay": 0.0},
            {"params": other_parameters, "weight_decay": config.weight_decay},
        ],
        lr=config.learning_rate,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    report = RankerTrainReport()
    best_state = copy.deepcopy(model.state_dict())
    best_auc = -1.0
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        for batch in train.batches(config.batch_size, shuffle=True, generator=generator):
            logits = model(batch)
            loss = loss_fn(logits, batch.label)
            if config.id_weight_decay > 0:
                touched = model.item_ids(batch.item)
                loss = loss + config.id_weight_decay * touched.pow(2).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        auc = evaluate_ranker(model, valid)["auc"]
        report.valid_auc.append(auc)
        logger.info(
            "ranker epoch %d/%d: valid AUC %.4f (%.0f s so far)",
            epoch + 1,
            config.epochs,
            auc,
            time.perf_counter() - started,
        )
        if auc > best_auc:
            best_auc, report.best_epoch = auc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 - report.best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - started
    return model, report


def save_ranker(model: DinRanker, directory: str | Path) -> Path:
    """Write ``ranker.safetensors`` + ``ranker.json`` (config and vocabulary) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    manifest = {
        "format": "idproxy-din-ranker/1",
        "config": model.config.model_dump(mode="json"),
        "vocab": model.vocab.to_dict(),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    return directory


def load_ranker(directory: str | Path) -> DinRanker:
    """Load a ranker written by :func:`save_ranker` (safetensors, no pickle)."""
    directory = Path(directory)
    manifest_path, weights_path = directory / MANIFEST_FILE, directory / WEIGHTS_FILE
    if not manifest_path.is_file() or not weights_path.is_file():
        raise RankerLoadError(
            f"{directory} holds no saved ranker: expected {MANIFEST_FILE} and {WEIGHTS_FILE} "
            "(train one with `idproxy ranker train`)"
        )
    manifest = json.loads(manifest_path.read_text())
    model = DinRanker(
        RankerConfig.model_validate(manifest["config"]),
        FeatureVocab.from_dict(manifest["vocab"]),
    )
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RankerLoadError(
            f"{weights_path} does not match its manifest: missing {missing}, unexpected "
            f"{unexpected}"
        )
    model.eval()
    return model
