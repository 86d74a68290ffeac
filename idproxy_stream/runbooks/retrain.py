"""The ranker-retrain runbook in one call: re-align, publish, hot-swap, backfill.

A retrained ranker has a new ID space, so every stored proxy (aligned to the old one) is
ignored by the reader (``store/reader.py``) and the item serves the fallback. ``realign`` closes
that window to the length of one backfill:

1. **Re-align.** ``train_model_bundle`` (the path ``idproxy train`` runs) trains Stage 1 + 2,
   the ID-space index and a ProxyModel ``version`` through the new ranker, into a staging bundle
   ``<model_dir>/.realign-<version>/`` next to the serving one. The new ranker is
   ``ranker.checkpoint`` for a plugin (``ranker.adapter``), else a folder holding a saved
   reference ranker (``ranker.json`` + safetensors), copied into the staging bundle; or, with
   ``id_table``, an exported ID table (``train_id_table_bundle``, no Stage 2).
2. **Publish and hot-swap.** The serving bundle's ``ranker/``, ``id_space/``, ``index/`` and
   ``bundle.json`` move to ``<model_dir>/retired/<previous version>/`` and the staged ones
   take their place (renames on one file system), the version directory moves into the serving
   registry, and ``LATEST`` is swapped atomically (``proxy/registry.py``). A running stream's
   workers poll ``LATEST``, see a version of another ID space and load the bundle's new one with
   it; its sink loads the new index on the first batch of the new version.
3. **Backfill.** ``backfill_catalogue`` (``idproxy backfill``) recomputes every catalogue item
   with the new version pinned; items mature in the new ID space are skipped (the ranker serves
   their own ID). When it returns, every cold item has a row of the new version.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.backfill.catalogue import backfill_catalogue
from idproxy_stream.backfill.runner import BackfillReport
from idproxy_stream.config import AppConfig, with_updates
from idproxy_stream.errors import IdProxyError
from idproxy_stream.proxy.registry import (
    check_version_name,
    latest_version,
    set_latest,
    version_directory,
)
from idproxy_stream.ranker.training import MANIFEST_FILE as RANKER_MANIFEST
from idproxy_stream.training.bundle import BundleReport, default_version, train_model_bundle
from idproxy_stream.training.id_table import train_id_table_bundle

logger = logging.getLogger(__name__)

RETIRED_DIR = "retired"
SWAPPED_PARTS = ("ranker", "id_space", "index", "summary")  # BundleLayout properties


class RealignError(IdProxyError, ValueError):
    """The runbook cannot start; the message names the option or file."""


@dataclass
class RealignReport:
    """What ``realign`` did: the training report, the version it replaced and the backfill."""

    training: BundleReport
    previous_version: str | None
    backfill: BackfillReport | None

    def to_dict(self) -> dict:
        return {
            "version": self.training.version,
            "previous_version": self.previous_version,
            "metrics": self.training.metrics,
            "timings": self.training.timings,
            "backfill": None if self.backfill is None else self.backfill.to_dict(),
        }


def new_ranker_config(config: AppConfig, ranker_checkpoint: Path | None) -> AppConfig:
    """``config`` with ``ranker.checkpoint`` set to the new ranker (a plugin reads it)."""
    if ranker_checkpoint is None:
        return config
    return with_updates(config, ranker=with_updates(config.ranker, checkpoint=ranker_checkpoint))


def stage_reference_ranker(ranker_checkpoint: Path | None, staging: BundleLayout) -> None:
    """Copy a saved reference ranker into the staging bundle, where training reuses it."""
    if ranker_checkpoint is None or not (Path(ranker_checkpoint) / RANKER_MANIFEST).is_file():
        raise RealignError(
            f"--ranker-checkpoint {ranker_checkpoint} holds no saved reference ranker "
            f"({RANKER_MANIFEST}): pass the folder `save_ranker` wrote, or set ranker.adapter "
            "for a plugin ranker"
        )
    shutil.copytree(ranker_checkpoint, staging.ranker)


def promote(staging: BundleLayout, serving: BundleLayout, version: str) -> str | None:
    """Swap the staged ranker, ID space and index in, then point ``LATEST`` at ``version``.

    Returns the version ``LATEST`` named before. The retired parts are kept under
    ``<model_dir>/retired/<previous version>/`` so a rollback is a rename away.
    """
    previous = latest_version(serving.registry) if serving.registry.is_dir() else None
    retired = serving.root / RETIRED_DIR / (previous or "unversioned")
    retired.mkdir(parents=True, exist_ok=True)
    for part in SWAPPED_PARTS:
        current, staged = getattr(serving, part), getattr(staging, part)
        if current.exists():
            os.replace(current, retired / current.name)
        os.replace(staged, current)
    target = version_directory(serving.registry, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(version_directory(staging.registry, version), target)
    set_latest(serving.registry, version)
    shutil.rmtree(staging.root)
    return previous


def realign(
    config: AppConfig,
    ranker_checkpoint: Path | None,
    version: str | None = None,
    backfill: bool = True,
    progress: Callable[[str], None] | None = None,
    id_table: Path | None = None,
) -> RealignReport:
    """Run the retrain runbook (module docstring) for the bundle in ``stream.model_dir``.

    ``id_table``: re-align to a new exported ID table instead (``training/id_table.py``).
    """
    serving = BundleLayout(Path(config.stream.model_dir).resolve())
    version = check_version_name(version or default_version())
    if not serving.registry.is_dir():
        raise RealignError(
            f"stream.model_dir = {serving.root} holds no published bundle: run `idproxy train` "
            "first; realign replaces a serving bundle's ranker"
        )
    if version_directory(serving.registry, version).exists():
        raise RealignError(f"--version {version} already exists in {serving.registry}")
    config = new_ranker_config(config, ranker_checkpoint)
    staging = BundleLayout(serving.root / f".realign-{version}")
    if staging.root.exists():
        shutil.rmtree(staging.root)  # what an interrupted run left
    staging.root.mkdir()
    if id_table is not None:
        training = train_id_table_bundle(config, id_table, staging.root, version, progress=progress)
    else:
        if config.ranker.adapter is None:
            stage_reference_ranker(ranker_checkpoint, staging)
        training = train_model_bundle(config, staging.root, version, progress=progress)
    previous = promote(staging, serving, version)
    logger.info("realign: serving %s (was %s), ID space swapped", version, previous)
    report = RealignReport(training, previous, None)
    if backfill:
        pinned = with_updates(config.backfill, model_version=version)
        report.backfill = backfill_catalogue(with_updates(config, backfill=pinned))
    return report
