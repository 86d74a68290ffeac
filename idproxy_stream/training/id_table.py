"""A bundle from an exported ID table alone: what IDProxy can train without a ranker.

``train_id_table_bundle(config, id_table, model_dir)`` reads the table (``data/id_table.py``),
encodes the catalogue of ``config.data`` with the configured encoder, and trains the two
coarse proxies that need only IDs: Stage 1 (the contrastive / regression projector onto mature
items' IDs) and the ridge regression of IDs on content. With no ranker to rank held-out items,
it serves the one with the lower relative squared error ``||proxy - id||^2 / ||id - mean||^2``
on Stage 1's held-out mature items. The index, ID space and registry are the ones
``idproxy train`` writes, so ``idproxy stream`` / ``backfill`` / ``ProxyReader`` serve it as is.

What is left out is Stage 2 (adaptor + gate trained by the click loss through the frozen
ranker), which fits what the ranker actually does with an ID rather than the ID's coordinates;
:data:`STAGE2_NOTE` says so in the log and the manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig
from idproxy_stream.data.id_table import load_id_table
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.model import ProxyModel
from idproxy_stream.proxy.registry import publish_version
from idproxy_stream.training.bundle import (
    BundleReport,
    build_neighbour_checker,
    default_version,
    encode_catalogue,
)
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.pipeline import new_manifest, ridge_proxy_model, stage1_proxy_model
from idproxy_stream.training.stage1 import train_stage1

logger = logging.getLogger(__name__)

ID_TABLE_RECORD = "id_table.json"  # in <model_dir>/ranker/: where the IDs came from
STAGE2_NOTE = (
    "ID-table-only bundle: Stage 2 was not trained (no ranker forward pass). Stage 2 trains an "
    "adaptor + gate on the click loss through the frozen ranker, fitting what the ranker does "
    "with an ID (not just its coordinates), which is what cold-item AUC through the ranker "
    "measures; set ranker.adapter (docs/ranker-adapter.md) and run `idproxy train` to get it"
)


@torch.no_grad()
def relative_id_error(
    model: ProxyModel, features: RowFeatures, id_table: torch.Tensor, rows: torch.Tensor
) -> float:
    """``sum ||proxy - id||^2 / sum ||id - mean id||^2`` over ``rows`` (M,); 1.0 = the mean ID."""
    proxies = model.predict(features.global_embedding[rows], features.cluster_states[rows])
    targets = id_table[rows]
    spread = (targets - targets.mean(0)).pow(2).sum().clamp(min=1e-12)
    return float((proxies - targets).pow(2).sum() / spread)


def train_id_table_bundle(
    config: AppConfig,
    id_table_path: str | Path,
    model_dir: str | Path,
    version: str | None = None,
    features: FeatureTable | None = None,
    progress: Callable[[str], None] | None = None,
) -> BundleReport:
    """Train and publish the coarse ProxyModel of an exported ID table (module docstring).

    ``features``: the catalogue's content features when already extracted, else encoded here.
    """
    say = progress or (lambda message: logger.info(message))
    layout = BundleLayout(Path(model_dir))
    version = version or default_version()
    table = load_id_table(id_table_path)
    id_space = IdSpace.from_arrays(table.item_ids, table.embeddings, table.interactions)
    if layout.id_space.exists() and IdSpace.load(layout.id_space).fingerprint != (
        id_space.fingerprint
    ):
        raise ValueError(
            f"{layout.id_space} holds another ID space than {id_table_path}: use a fresh "
            "model_dir, or `idproxy realign --id-table` to replace it"
        )
    say(f"ID table {id_table_path}: {len(id_space.item_ids)} items, D={id_space.dim}")
    if features is None:
        features = encode_catalogue(config, load_dataset(config.data).items)
    # rows as the ranker's would be: 0 is padding, row r is the table's item r - 1
    id_rows = torch.cat([torch.zeros(1, id_space.dim), torch.tensor(id_space.embeddings)])
    feature_rows = id_space.rows_of(features.item_ids) + 1  # 0: not in the table
    row_features = RowFeatures.from_table(features, feature_rows, len(id_space.item_ids) + 1)
    mature_rows = torch.from_numpy(np.flatnonzero(id_space.mature_mask(config.stage1.tau)) + 1)

    stage1 = train_stage1(row_features, id_rows, mature_rows, config.stage1)
    candidates = {
        "stage1": stage1_proxy_model(stage1, row_features, id_space.dim, config.stage2),
    }
    candidates["ridge"], penalty = ridge_proxy_model(
        candidates["stage1"].spec, row_features, id_rows, stage1.fit_rows
    )
    errors = {
        name: relative_id_error(model, row_features, id_rows, stage1.holdout_rows)
        for name, model in candidates.items()
    }
    served = min(errors, key=errors.get)
    say(
        f"held-out ID-space relative error: Stage 1 {errors['stage1']:.4f}, ridge "
        f"{errors['ridge']:.4f}; serving {served}"
    )
    logger.warning(STAGE2_NOTE)
    model = candidates[served]

    checker = build_neighbour_checker(
        model, row_features, stage1.holdout_rows, id_space.item_ids, id_space, config
    )
    if not layout.id_space.exists():
        id_space.save(layout.id_space)
    checker.save(layout.index)
    metrics = {
        **{f"stage1_{name}": value for name, value in stage1.metrics.items()},
        "ridge_penalty": penalty,
        "stage1_holdout_id_error": errors["stage1"],
        "ridge_holdout_id_error": errors["ridge"],
        "served_model": served,
    }
    training = {
        "source": "id_table",
        "id_table": str(id_table_path),
        "items": len(id_space.item_ids),
        "mature_items": len(mature_rows),
        "stage1": config.stage1.model_dump(mode="json"),
        "stage2": STAGE2_NOTE,
    }
    manifest = new_manifest(
        model, version, features.encoder_fingerprint, id_space.fingerprint, training, metrics
    )
    manifest.content = features.content
    publish_version(model, manifest, layout.registry)
    layout.ranker.mkdir(parents=True, exist_ok=True)
    (layout.ranker / ID_TABLE_RECORD).write_text(json.dumps(training, indent=1))
    summary = {"version": version, "training": training, "metrics": metrics}
    layout.summary.write_text(json.dumps(summary, indent=1, default=float))
    return BundleReport(layout.root, version, {}, {}, metrics=metrics)
