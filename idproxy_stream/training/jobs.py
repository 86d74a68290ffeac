"""IDProxy training as two jobs: Stage 1 (coarse proxy), then Stage 2 (fine proxy).

What ``jobs/train_stage1.py`` and ``jobs/train_stage2.py`` run, so that the cheap Stage 1 and
the heavier Stage 2 (through the ranker, on the logs) can be scheduled and re-run apart.

- :func:`run_stage1` is :func:`~idproxy_stream.training.bundle.train_model_bundle` with the
  gate closed: it trains the ranker when the bundle has none (and exports its ID space), trains
  Stage 1, builds the index and publishes a Stage-1-only ProxyModel (``gate_closed``: its proxy
  is the coarse one) as LATEST. The stream can serve it.
- :func:`run_stage2` loads a Stage-1 version, keeps its projector, trains the adaptor and the
  gate through the frozen ranker on the same fit/holdout split of mature items Stage 1 used,
  recalibrates the index's void threshold on the new proxies of held-out items and publishes
  the result as LATEST.

Content features: when ``extract.output_path`` holds part files of the configured encoder
(written by ``idproxy encode`` / ``jobs/encode.py`` on the GPU pool), both stages read them;
otherwise the catalogue is encoded in this process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, with_updates
from idproxy_stream.encoders.contract import configured_contract
from idproxy_stream.encoders.features import FeatureTable, feature_files, read_feature_table
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.errors import IdProxyError
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.model import ProxyModel, ProxyModelError, read_proxy_manifest
from idproxy_stream.proxy.registry import (
    latest_version,
    load_version,
    publish_version,
    version_directory,
)
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import (
    FeatureVocab,
    RankerInputs,
)
from idproxy_stream.ranker.training import evaluate_ranker
from idproxy_stream.training.bundle import (
    BundleReport,
    TrainingData,
    build_neighbour_checker,
    default_version,
    encode_catalogue,
    load_training_data,
    train_model_bundle,
)
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.pipeline import choose_ridge_blend, new_manifest, stage2_data
from idproxy_stream.training.rankers import bundle_has_ranker, bundle_ranker, ranker_id_space
from idproxy_stream.training.stage1 import split_mature_rows
from idproxy_stream.training.stage2 import train_stage2

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class TrainingJobError(IdProxyError, ValueError):
    """A training job cannot run on this bundle; the message says what to run first."""


def stored_features(config: AppConfig) -> FeatureTable | None:
    """The features ``extract.output_path`` holds for the configured encoder and text, or None.

    Features extracted under another content contract (other text fields, encoder settings)
    are refused with the settings named.
    """
    folder = config.extract.output_path
    if not folder.is_dir() or not feature_files(folder):
        return None
    return read_feature_table(
        folder,
        fingerprint=encoder_fingerprint(config.encoder),
        content=configured_contract(config.encoder),
    )


def run_stage1(
    config: AppConfig,
    model_dir: str | Path,
    version: str | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Ranker (if absent) + Stage 1 + index; publish a Stage-1-only ProxyModel as LATEST."""
    closed = with_updates(config.stage2, gate_closed=True)
    return train_model_bundle(
        with_updates(config, stage2=closed),
        model_dir,
        version,
        features=stored_features(config),
        progress=progress,
    )


@dataclass
class Stage2Inputs:
    """What Stage 2 trains on, read back from the bundle and the dataset."""

    ranker: RankerAdapter
    id_space: IdSpace
    vocab: FeatureVocab
    row_features: RowFeatures
    samples: dict[str, RankerInputs]
    summary: dict


def check_stage1_version(layout: BundleLayout, version: str | None) -> str:
    """``version`` (LATEST when None) if the bundle has a ranker and it is a Stage-1 model."""
    if not bundle_has_ranker(layout) or not layout.id_space.is_dir():
        raise TrainingJobError(
            f"{layout.root} holds no ranker and ID space: run Stage 1 first "
            "(jobs/train_stage1.py or `idproxy train`)"
        )
    version = version or latest_version(layout.registry)
    if version is None:
        raise TrainingJobError(f"{layout.registry} holds no model: run Stage 1 first")
    if not read_proxy_manifest(version_directory(layout.registry, version)).spec.gate_closed:
        raise TrainingJobError(
            f"model version {version} already has an open gate (a Stage 2 model): pass the "
            "version jobs/train_stage1.py published"
        )
    return version


def stage2_inputs(
    data: TrainingData, layout: BundleLayout, features: FeatureTable, config: AppConfig
) -> Stage2Inputs:
    """The frozen ranker (the bundle's, or ``ranker.adapter``'s), its ID space, features by
    ranker row and the encoded samples."""
    ranker, _ = bundle_ranker(
        config, layout, data.vocab, data.samples, data.dataset.items, train_if_missing=False
    )
    id_space = IdSpace.load(layout.id_space)
    served = ranker_id_space(ranker, data.vocab, id_space.item_ids, id_space.interaction_counts)
    if served.fingerprint != id_space.fingerprint:
        raise TrainingJobError(
            f"the ranker ({config.ranker.adapter or 'reference'}, ranker.checkpoint = "
            f"{config.ranker.checkpoint}) gives ID space {served.fingerprint}, but Stage 1 in "
            f"{layout.root} aligned to {id_space.fingerprint}: point ranker.checkpoint at the "
            "ranker Stage 1 used, or run Stage 1 again in a fresh model_dir"
        )
    row_features = RowFeatures.from_table(
        features, data.vocab.item_rows(features.item_ids), data.vocab.num_item_rows
    )
    return Stage2Inputs(ranker, id_space, data.vocab, row_features, data.samples, data.summary)


def run_stage2(
    config: AppConfig,
    model_dir: str | Path,
    stage1_version: str | None = None,
    version: str | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Train Stage 2 on top of a published Stage-1 version (LATEST when None); publish it.

    Raises :class:`TrainingJobError` when the bundle has no ranker or the version is not a
    Stage-1 model, and :class:`~idproxy_stream.proxy.model.ProxyModelMismatchError` when the
    features or the ID space differ from the ones Stage 1 used.
    """
    say = progress or (lambda message: logger.info(message))
    layout = BundleLayout(Path(model_dir))
    version = version or default_version()
    started = time.perf_counter()
    stage1_version = check_stage1_version(layout, stage1_version)
    data = load_training_data(config)
    features = stored_features(config)
    if features is None:
        features = encode_catalogue(config, data.dataset.items)
    inputs = stage2_inputs(data, layout, features, config)
    coarse, stage1_manifest = load_version(
        layout.registry,
        stage1_version,
        expected_encoder_fingerprint=features.encoder_fingerprint,
        expected_id_space_fingerprint=inputs.id_space.fingerprint,
        expected_content=features.content,
    )
    if coarse.spec.clusters != features.clusters:
        raise ProxyModelError(
            f"model version {stage1_manifest.version} uses layer clusters "
            f"{coarse.spec.clusters.boundaries}, the features {features.clusters.boundaries}: "
            "train Stage 1 again on these features"
        )
    say(f"stage 2: from Stage-1 version {stage1_manifest.version}")

    # The same mature items and fit/holdout split as Stage 1 (train_stage1 keeps the mature
    # items that have features, then splits them with its seed).
    mature_ids = inputs.id_space.item_ids[inputs.id_space.mature_mask(config.stage1.tau)]
    mature_rows = torch.from_numpy(inputs.vocab.item_rows(mature_ids))
    mature_rows = mature_rows[inputs.row_features.has_features[mature_rows]]
    fit_rows, holdout_rows = split_mature_rows(
        mature_rows, config.stage1.holdout_fraction, config.stage1.seed
    )
    spec = replace(
        coarse.spec,
        adaptor_hidden=config.stage2.hidden_dim,
        dropout=config.stage2.dropout,
        gate_closed=config.stage2.gate_closed,
    )
    torch.manual_seed(config.stage2.seed)  # the adaptor's and gate's initial weights
    model = ProxyModel(spec)
    model.projector.load_state_dict(coarse.projector.state_dict())
    data = stage2_data(
        RankerInputs.concat([inputs.samples["warm_train"], inputs.samples["warm_valid"]]),
        inputs.samples["rare"],
        fit_rows,
        holdout_rows,
        inputs.row_features,
        config.stage2,
    )
    result = train_stage2(
        model,
        inputs.ranker,
        inputs.row_features,
        data.train,
        data.validation,
        config.stage2,
        data.item_weights,
    )
    say(f"stage 2: held-out-item AUC {result.metrics.get('best_valid_auc', float('nan')):.4f}")
    served, chosen = result.model, {}
    if config.stage2.ridge_fallback:  # the same serving choice as ``idproxy train``
        served_name = "stage2" if result.metrics.get("served", 0.0) else "stage1"
        served, chosen["served_model"] = choose_ridge_blend(
            result.model,
            served_name,
            inputs.ranker,
            inputs.row_features,
            inputs.ranker.id_embedding_table().detach(),
            fit_rows,
            data.validation,
            config.stage2.ridge_weights,
            config.stage1.scale_multipliers,
            chosen,
        )
        say(f"stage 2: serving {chosen['served_model']} (ridge weight {chosen['ridge_weight']:g})")

    checker = build_neighbour_checker(
        served,
        inputs.row_features,
        holdout_rows,
        inputs.vocab.item_ids,
        inputs.id_space,
        config,
    )
    checker.save(layout.index)

    warm_auc = evaluate_ranker(inputs.ranker, inputs.samples["warm_test"])["auc"]
    metrics = {
        **{k: v for k, v in stage1_manifest.metrics.items() if k.startswith("stage1_")},
        **{f"stage2_{name}": value for name, value in result.metrics.items()},
        "ranker_warm_test_auc": warm_auc,
        **chosen,
    }
    manifest = new_manifest(
        served,
        version,
        features.encoder_fingerprint,
        inputs.id_space.fingerprint,
        training={
            **inputs.summary,
            "stage1_version": stage1_manifest.version,
            "stage2": config.stage2.model_dump(mode="json"),
        },
        metrics=metrics,
    )
    manifest.content = features.content
    publish_version(served, manifest, layout.registry)
    timings = {"stage2": time.perf_counter() - started}
    layout.summary.write_text(
        json.dumps(
            {"version": version, **inputs.summary, "metrics": metrics, "timings": timings},
            indent=1,
            default=float,
        )
    )
    return BundleReport(
        model_dir=layout.root,
        version=version,
        dataset=inputs.summary["dataset"],
        split=inputs.summary["split"],
        metrics=metrics,
        timings=timings,
    )
