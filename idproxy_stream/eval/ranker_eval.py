"""``idproxy ranker train``: the reference ranker on the warm split, next to a popularity baseline.

Trains the ranker on the warm items' training samples for each seed and reports warm-test AUC
and log loss (mean ± std), plus the AUC of ranking by item popularity (number of clicks in the
training samples) on the same warm-test samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from idproxy_stream.config import AppConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.data.split import build_cold_start_split
from idproxy_stream.ranker.inputs import (
    FeatureVocab,
    ItemSideFeatures,
    RankerInputs,
    encode_samples,
)
from idproxy_stream.ranker.metrics import roc_auc
from idproxy_stream.ranker.training import evaluate_ranker, save_ranker, train_ranker

logger = logging.getLogger(__name__)


def popularity_auc(train: RankerInputs, test: RankerInputs, num_rows: int) -> float:
    """AUC of scoring each test sample by its item's click count in ``train``."""
    clicks = np.bincount(
        train.item.numpy(), weights=train.label.numpy().astype(np.float64), minlength=num_rows
    )
    return roc_auc(test.label.numpy(), clicks[test.item.numpy()])


def _spread(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def run_ranker_benchmark(
    config: AppConfig,
    seeds: Sequence[int],
    output_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Per-seed and mean ± std warm-test metrics; saves each seed's ranker under output_dir."""
    say = progress or (lambda message: logger.info(message))
    dataset = load_dataset(config.data)
    split = build_cold_start_split(dataset, config.split)
    if output_dir is not None:
        split.save(Path(output_dir) / "split")
    vocab = FeatureVocab.from_dataset(dataset)
    side = ItemSideFeatures.from_dataset(dataset, vocab)
    train, valid, test = (
        encode_samples(split.parts[name], dataset, vocab, side)
        for name in ("warm_train", "warm_valid", "warm_test")
    )
    say(f"split: {split.counts()}")
    per_seed = []
    for seed in seeds:
        started = time.perf_counter()
        ranker, report = train_ranker(
            train, valid, config.ranker.model_copy(update={"seed": seed}), vocab
        )
        metrics = evaluate_ranker(ranker, test)
        metrics.update(seed=seed, seconds=time.perf_counter() - started, epochs=report.best_epoch)
        per_seed.append(metrics)
        say(
            f"seed {seed}: warm-test AUC {metrics['auc']:.4f}, logloss {metrics['logloss']:.4f}"
            f" ({metrics['seconds']:.1f} s)"
        )
        if output_dir is not None:
            save_ranker(ranker, Path(output_dir) / f"ranker-seed{seed}")
    aucs = np.array([m["auc"] for m in per_seed])
    losses = np.array([m["logloss"] for m in per_seed])
    return {
        "dataset": dataset.summary(),
        "split": split.counts(),
        "per_seed": per_seed,
        "auc_mean": float(aucs.mean()),
        "auc_std": _spread(aucs),
        "logloss_mean": float(losses.mean()),
        "logloss_std": _spread(losses),
        "popularity_auc": popularity_auc(train, test, vocab.num_item_rows),
    }
