"""Train everything the stream serves, in one call: ranker, ID space, index, ProxyModel.

``train_model_bundle(config, model_dir)`` loads the configured dataset, builds the cold-start
split, trains the reference ranker on the warm items, exports its ID space, encodes the catalogue
with the configured encoder, trains IDProxy (Stage 1 + 2), builds the Faiss neighbour checker
(void threshold calibrated on the proxies of held-out mature items) and writes the bundle (see
``artifacts.py``) with the ProxyModel published as the LATEST version of the registry.
A bundle whose ranker already exists is reused (only the ProxyModel is retrained), so publishing
a new model version never moves the ID space under the stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.data.schema import RecDataset
from idproxy_stream.data.split import ColdStartSplit, build_cold_start_split
from idproxy_stream.encoders.extract import extract_features
from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.encoders.registry import build_encoder
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.index.void import NeighbourChecker
from idproxy_stream.proxy.model import ProxyModel
from idproxy_stream.proxy.registry import publish_version
from idproxy_stream.ranker.inputs import (
    FeatureVocab,
    ItemSideFeatures,
    RankerInputs,
    encode_samples,
)
from idproxy_stream.ranker.plugins import load_factory
from idproxy_stream.ranker.training import evaluate_ranker
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.pipeline import new_manifest, train_idproxy
from idproxy_stream.training.rankers import bundle_ranker, ranker_id_space

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class BundleReport:
    """What ``train_model_bundle`` did, for the CLI to print."""

    model_dir: Path
    version: str
    dataset: dict
    split: dict
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def default_version() -> str:
    return datetime.now(UTC).strftime("v%Y%m%dT%H%M%S")


@dataclass(frozen=True)
class TrainingData:
    """The dataset, its split and the encoded samples every training step reads."""

    dataset: RecDataset
    split: ColdStartSplit
    vocab: FeatureVocab
    samples: dict[str, RankerInputs]

    @property
    def summary(self) -> dict:
        return {"dataset": self.dataset.summary(), "split": self.split.counts()}


def load_training_data(config: AppConfig) -> TrainingData:
    """Load ``config.data``, split it and encode the parts training uses."""
    dataset = load_dataset(config.data)
    split = build_cold_start_split(dataset, config.split)
    vocab = FeatureVocab.from_dataset(dataset)
    side = ItemSideFeatures.from_dataset(dataset, vocab)
    samples = {
        name: encode_samples(split.parts[name], dataset, vocab, side)
        for name in ("warm_train", "warm_valid", "warm_test", "rare")
    }
    return TrainingData(dataset, split, vocab, samples)


def encode_catalogue(config: AppConfig, items: pd.DataFrame) -> FeatureTable:
    """Content features of every item with the configured encoder, in this process."""
    return extract_features(
        build_encoder(config.encoder),
        items,
        batch_size=config.extract.batch_size,
        text_fields=config.encoder.text_fields,
        image_config=config.encoder.images,
        layer_config=config.encoder.layers,
    )


def build_neighbour_checker(
    model: ProxyModel,
    features: RowFeatures,
    holdout_rows: torch.Tensor,
    row_item_ids: Sequence[int],
    id_space: IdSpace,
    config: AppConfig,
) -> NeighbourChecker:
    """Faiss index over the ID space, void threshold calibrated on held-out items' proxies.

    ``row_item_ids``: the item ID of ranker rows 1, 2, ... (``FeatureVocab.item_ids``).
    With fewer than 20 held-out items the checker calibrates leave-one-out on mature IDs.
    """
    proxies = model.predict(
        features.global_embedding[holdout_rows], features.cluster_states[holdout_rows]
    ).numpy()
    item_ids = np.asarray(row_item_ids, dtype=np.int64)[holdout_rows.numpy() - 1]
    use_holdout = len(item_ids) >= 20
    return NeighbourChecker.build(
        id_space,
        config.index,
        config.stage1.tau,
        calibration_queries=proxies if use_holdout else None,
        calibration_item_ids=item_ids if use_holdout else None,
    )


def train_model_bundle(
    config: AppConfig,
    model_dir: str | Path,
    version: str | None = None,
    features: FeatureTable | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Train (or reuse) the ranker and train + publish a ProxyModel into ``model_dir``.

    With ``ranker.adapter`` set the ranker is the plugin's (``training/rankers.py``).
    """
    say = progress or (lambda message: logger.info(message))
    layout = BundleLayout(Path(model_dir))
    version = version or default_version()
    timings: dict[str, float] = {}

    if config.ranker.adapter is not None:
        load_factory(config.ranker.adapter)  # a wrong import path fails before any work
    started = time.perf_counter()
    data = load_training_data(config)
    dataset, split, vocab, inputs = data.dataset, data.split, data.vocab, data.samples
    timings["data"] = time.perf_counter() - started
    say(f"data: {dataset.summary()}; split: {split.counts()}")

    started = time.perf_counter()
    ranker, origin = bundle_ranker(config, layout, vocab, inputs, dataset.items)
    say(f"ranker: {origin} ({config.ranker.adapter or 'reference ranker'}, {layout.ranker})")
    warm_metrics = evaluate_ranker(ranker, inputs["warm_test"])
    timings["ranker"] = time.perf_counter() - started
    say(f"ranker: warm-test AUC {warm_metrics['auc']:.4f}, logloss {warm_metrics['logloss']:.4f}")

    train_counts = np.bincount(inputs["warm_train"].item.numpy(), minlength=vocab.num_item_rows)
    warm_counts = train_counts[vocab.item_rows(split.warm_items)]
    id_space = ranker_id_space(ranker, vocab, split.warm_items, warm_counts)
    if layout.id_space.exists():
        stored = IdSpace.load(layout.id_space)
        if stored.fingerprint != id_space.fingerprint:
            raise ValueError(
                f"{layout.id_space} holds ID space {stored.fingerprint} but the ranker in "
                f"{layout.ranker} gives {id_space.fingerprint}: use a fresh model_dir"
            )
    else:
        id_space.save(layout.id_space)

    started = time.perf_counter()
    if features is None:
        features = encode_catalogue(config, dataset.items)
    timings["encode"] = time.perf_counter() - started
    say(f"encoder: {len(features)} items encoded ({features.encoder_fingerprint})")

    row_features = RowFeatures.from_table(
        features, vocab.item_rows(features.item_ids), vocab.num_item_rows
    )
    mature_rows = torch.from_numpy(
        vocab.item_rows(split.warm_items[id_space.mature_mask(config.stage1.tau)])
    )
    started = time.perf_counter()
    training = train_idproxy(
        ranker,
        row_features,
        mature_rows,
        RankerInputs.concat([inputs["warm_train"], inputs["warm_valid"]]),
        inputs["rare"],
        config.stage1,
        config.stage2,
    )
    timings["idproxy"] = time.perf_counter() - started
    stage2_auc = training.metrics.get("stage2_best_valid_auc", float("nan"))  # nan: gate closed
    say(
        f"IDProxy: Stage 1 recall@10 {training.metrics.get('stage1_recall@10', float('nan')):.3f}"
        f", Stage 2 held-out-item AUC {stage2_auc:.4f}"
    )

    started = time.perf_counter()
    checker = build_neighbour_checker(
        training.model, row_features, training.holdout_rows, vocab.item_ids, id_space, config
    )
    checker.save(layout.index)
    timings["index"] = time.perf_counter() - started

    manifest = new_manifest(
        training.model,
        version,
        features.encoder_fingerprint,
        id_space.fingerprint,
        training={
            "dataset": dataset.summary(),
            "split": split.counts(),
            "mature_items": len(mature_rows),
            "stage1": config.stage1.model_dump(mode="json"),
            "stage2": config.stage2.model_dump(mode="json"),
        },
        metrics={**training.metrics, "ranker_warm_test_auc": warm_metrics["auc"]},
    )
    manifest.content = features.content  # what the stream must read and encode the same way
    publish_version(training.model, manifest, layout.registry)
    report = BundleReport(
        model_dir=layout.root,
        version=version,
        dataset=dataset.summary(),
        split=split.counts(),
        metrics=manifest.metrics,
        timings=timings,
    )
    layout.summary.write_text(
        json.dumps(
            {
                "version": version,
                "dataset": report.dataset,
                "split": report.split,
                "metrics": report.metrics,
                "timings": timings,
            },
            indent=1,
            default=float,
        )
    )
    return report
