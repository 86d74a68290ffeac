"""``idproxy eval``: the whole cold-start protocol over several seeds, written as a report.

Content features are extracted once per (encoder, text fields) and cached beside the report
(``features-<hash>.parquet``), so re-running the table does not re-encode the catalogue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from idproxy_stream.config import AppConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.data.split import build_cold_start_split
from idproxy_stream.encoders.features import FeatureTable, read_feature_table
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.eval.learning_curve import run_learning_curve, write_learning_curve
from idproxy_stream.eval.protocol import METHODS, ORACLES, ColdStartData, run_seed, summarise
from idproxy_stream.eval.report import build_report, write_report
from idproxy_stream.training.bundle import encode_catalogue

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def feature_cache_path(config: AppConfig, directory: Path) -> Path:
    """Cache file named by the encoder fingerprint, text fields, layer and dataset settings."""
    key = json.dumps(
        {
            "encoder": encoder_fingerprint(config.encoder),
            "fields": list(config.encoder.text_fields),
            "layers": config.encoder.layers.model_dump(mode="json"),
            "data": config.data.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return directory / f"features-{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


def cached_features(config: AppConfig, items, directory: Path, say: Progress) -> FeatureTable:
    """The catalogue's features, read from the cache or extracted (and cached) now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = feature_cache_path(config, directory)
    if path.is_file():
        say(f"features: reusing {path}")
        return read_feature_table(path)
    started = time.perf_counter()
    table = encode_catalogue(config, items)
    table.write_parquet(path)
    seconds = time.perf_counter() - started
    say(f"features: {len(table)} items in {seconds:.1f} s ({len(table) / seconds:.1f} items/s)")
    return table


def _mean_std(values: Sequence[float]) -> dict:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(array):
        return {"mean": None, "std": None, "values": []}
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": array.tolist()}


def summarise_void_analysis(seed_results: Sequence[dict]) -> dict | None:
    """Mean, std and per-seed values of every figure of the per-seed void analyses."""
    analyses = [r["void_analysis"] for r in seed_results if r.get("void_analysis")]
    if not analyses:
        return None
    keys = ("void_rate", "auc_void_items", "auc_other_items", "threshold")
    summary = {key: _mean_std([a[key] for a in analyses]) for key in keys}
    summary["policy_cold_auc"] = {
        policy: _mean_std([a["policy_cold_auc"][policy] for a in analyses])
        for policy in analyses[0]["policy_cold_auc"]
    }
    return summary


def run_evaluation(
    config: AppConfig,
    output_dir: str | Path,
    command: str,
    title: str,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    oracles: Sequence[str] = ORACLES,
    progress: Progress | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Run every seed, write ``report.json``/``report.md``/plots to ``output_dir``; return it.

    Content features are cached in ``cache_dir`` (default: ``output_dir``).
    """
    say = progress or (lambda message: logger.info(message))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds if seeds is not None else config.eval.seeds)
    dataset = load_dataset(config.data)
    split = build_cold_start_split(dataset, config.split)
    say(f"data: {dataset.summary()}")
    say(f"split: {split.counts()}")
    cache = Path(cache_dir) if cache_dir is not None else output_dir
    features = cached_features(config, dataset.items, cache, say)
    data = ColdStartData.prepare(dataset, split, features)
    results = []
    for seed in seeds:
        started = time.perf_counter()
        say(f"seed {seed}: {len(methods)} methods, {len(oracles)} oracles")
        result = run_seed(data, config, seed, methods, oracles, progress=say)
        results.append(result)
        cold = {m: round(v["cold_auc"], 4) for m, v in result["methods"].items()}
        say(f"seed {seed} ({time.perf_counter() - started:.0f} s): cold AUC {cold}")
    summary = summarise(results)
    context = {
        "dataset": dataset.summary(),
        "split": split.counts(),
        "encoder": features.encoder_fingerprint,
        "text_fields": list(config.encoder.text_fields),
        "layer_clusters": features.clusters.to_dict(),
        "ranker": config.ranker.model_dump(mode="json"),
        "stage1": config.stage1.model_dump(mode="json"),
        "stage2": config.stage2.model_dump(mode="json"),
    }
    report = build_report(title, command, summary, results, context)
    report["void_analysis"] = summarise_void_analysis(results)
    if config.eval.learning_curve_fractions:
        curve = run_learning_curve(data, config, seeds, config.eval.learning_curve_fractions, say)
        write_learning_curve(curve, output_dir)
        report["learning_curve"] = curve
    write_report(report, output_dir)
    return report
