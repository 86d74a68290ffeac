"""The frozen ranker a bundle is trained through: the reference one or a plugin.

- ``ranker.adapter`` unset: the reference ranker, reused from ``<model_dir>/ranker/`` when the
  bundle has one, else trained on the warm split and saved there (safetensors + JSON).
- ``ranker.adapter: "package.module:factory"``: the factory builds the ranker
  (:mod:`idproxy_stream.ranker.plugins`); the bundle records which one in
  ``ranker/adapter.json`` (the weights stay where the plugin keeps them, ``ranker.checkpoint``),
  and a later run must name the same adapter. The ID-space fingerprint check of the bundle
  catches a plugin whose ID table changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import FeatureVocab, RankerInputs
from idproxy_stream.ranker.plugins import AdapterContext, RankerPluginError, build_adapter, freeze
from idproxy_stream.ranker.training import (
    MANIFEST_FILE,
    load_ranker,
    save_ranker,
    train_ranker,
)

ADAPTER_RECORD = "adapter.json"


def bundle_has_ranker(layout: BundleLayout) -> bool:
    """Whether the bundle holds a ranker: the reference one's files or a plugin's record."""
    return (layout.ranker / MANIFEST_FILE).is_file() or (layout.ranker / ADAPTER_RECORD).is_file()


def adapter_context(
    config: AppConfig,
    vocab: FeatureVocab,
    samples: Mapping[str, RankerInputs],
    items: pd.DataFrame | None = None,
    seed: int | None = None,
) -> AdapterContext:
    """The factory's view of this run (see :class:`AdapterContext`)."""
    return AdapterContext(
        settings=dict(config.ranker.adapter_settings),
        checkpoint=config.ranker.checkpoint,
        vocab=vocab,
        train=samples["warm_train"],
        valid=samples["warm_valid"],
        seed=config.ranker.seed if seed is None else seed,
        items=items,
    )


def _check_record(layout: BundleLayout, config: AppConfig) -> Path:
    record = layout.ranker / ADAPTER_RECORD
    if (layout.ranker / MANIFEST_FILE).is_file():
        raise RankerPluginError(
            f"ranker.adapter = {config.ranker.adapter!r}, but {layout.ranker} holds the reference "
            "ranker: use a fresh model_dir for a plugin ranker, or unset ranker.adapter"
        )
    if record.is_file():
        recorded = json.loads(record.read_text())["adapter"]
        if recorded != config.ranker.adapter:
            raise RankerPluginError(
                f"ranker.adapter = {config.ranker.adapter!r}, but the bundle in {layout.root} was "
                f"trained through {recorded!r}: use a fresh model_dir or that adapter"
            )
    return record


def bundle_ranker(
    config: AppConfig,
    layout: BundleLayout,
    vocab: FeatureVocab,
    samples: Mapping[str, RankerInputs],
    items: pd.DataFrame | None = None,
    train_if_missing: bool = True,
) -> tuple[RankerAdapter, str]:
    """(frozen ranker, how it was obtained: "reused" | "trained" | "plugin")."""
    if config.ranker.adapter is None:
        if (layout.ranker / ADAPTER_RECORD).is_file():
            recorded = json.loads((layout.ranker / ADAPTER_RECORD).read_text())["adapter"]
            raise RankerPluginError(
                f"ranker.adapter is unset, but the bundle in {layout.root} was trained through "
                f"{recorded!r}: set ranker.adapter to it, or use a fresh model_dir"
            )
        if (layout.ranker / MANIFEST_FILE).is_file() or not train_if_missing:
            return freeze(load_ranker(layout.ranker)), "reused"
        ranker, _ = train_ranker(samples["warm_train"], samples["warm_valid"], config.ranker, vocab)
        save_ranker(ranker, layout.ranker)
        return freeze(ranker), "trained"
    record = _check_record(layout, config)
    adapter = build_adapter(config.ranker, adapter_context(config, vocab, samples, items))
    layout.ranker.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "adapter": config.ranker.adapter,
                "adapter_settings": config.ranker.adapter_settings,
                "checkpoint": str(config.ranker.checkpoint) if config.ranker.checkpoint else None,
                "id_embedding_dim": adapter.id_embedding_dim,
            },
            indent=1,
            default=str,
        )
    )
    return freeze(adapter), "plugin"


def ranker_id_space(
    ranker: RankerAdapter, vocab: FeatureVocab, item_ids: np.ndarray, counts: np.ndarray
) -> IdSpace:
    """The ranker's ID embeddings of ``item_ids`` (N,) with their training counts (N,)."""
    rows = torch.from_numpy(vocab.item_rows(item_ids))
    embeddings = ranker.id_embedding_table()[rows].detach().numpy().astype(np.float32)
    return IdSpace.from_arrays(item_ids, embeddings, counts)
