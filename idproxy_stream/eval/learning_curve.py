"""Learning curve: IDProxy's margin when 10 %, 30 %, 100 % of mature items supervise the mapping.

Per seed the ranker is trained once; for each fraction, ridge, IDProxy Stage 1 and IDProxy
Stage 1 + 2 are fit on that share of the mature items (the same random subset for every method)
and scored on the cold test set at cold start. Users deciding whether IDProxy pays off at their
scale read the margins from this curve.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from idproxy_stream.config import AppConfig
from idproxy_stream.eval.protocol import ColdStartData, cold_table, method_proxies
from idproxy_stream.ranker.plugins import freeze
from idproxy_stream.ranker.training import evaluate_ranker, table_override

logger = logging.getLogger(__name__)

CURVE_METHODS = ("mean_id", "ridge", "idproxy_stage1", "idproxy")


def run_learning_curve(
    data: ColdStartData,
    config: AppConfig,
    seeds: Sequence[int],
    fractions: Sequence[float],
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Cold AUC per (fraction, method, seed) and IDProxy's margins over ridge and Stage 1."""
    say = progress or (lambda message: logger.info(message))
    values: dict[str, dict[str, list[float]]] = {
        str(f): {m: [] for m in CURVE_METHODS} for f in fractions
    }
    for seed in seeds:
        started = time.perf_counter()
        ranker, _ = data.ranker(config.ranker, seed)
        freeze(ranker)
        id_table = ranker.id_embedding_table().detach().clone()
        for fraction in fractions:
            proxies = method_proxies(
                data, config, ranker, CURVE_METHODS, seed, {}, mature_fraction=fraction
            ).proxies
            for method, cold_proxies in proxies.items():
                table = cold_table(id_table, data.cold_rows, cold_proxies)
                auc = evaluate_ranker(ranker, data.inputs["cold_test"], table_override(table))
                values[str(fraction)][method].append(auc["auc"])
        say(f"learning curve seed {seed}: {time.perf_counter() - started:.0f} s")
    return {
        "fractions": list(fractions),
        "seeds": list(seeds),
        "cold_auc": values,
        "margins": _margins(values),
    }


def _margins(values: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict]]:
    margins = {}
    for fraction, methods in values.items():
        ours = np.asarray(methods["idproxy"])
        margins[fraction] = {}
        for other in ("ridge", "idproxy_stage1", "mean_id"):
            diff = ours - np.asarray(methods[other])
            margins[fraction][other] = {
                "mean": float(diff.mean()),
                "std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                "values": diff.tolist(),
            }
    return margins


def learning_curve_table(curve: dict) -> str:
    """Markdown table: cold AUC per fraction and IDProxy's margins (mean ± std over seeds)."""
    lines = [
        "| mature items supervising | IDProxy cold AUC | ridge | Stage 1 only | "
        "IDProxy - ridge | IDProxy - Stage 1 |",
        "|---|---|---|---|---|---|",
    ]
    for fraction in curve["fractions"]:
        key = str(fraction)
        auc = {m: np.mean(v) for m, v in curve["cold_auc"][key].items()}
        margin = curve["margins"][key]
        lines.append(
            f"| {100 * fraction:.0f} % | {auc['idproxy']:.4f} | {auc['ridge']:.4f} | "
            f"{auc['idproxy_stage1']:.4f} | {margin['ridge']['mean']:+.4f} ± "
            f"{margin['ridge']['std']:.4f} | {margin['idproxy_stage1']['mean']:+.4f} ± "
            f"{margin['idproxy_stage1']['std']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_learning_curve(curve: dict, directory: str | Path) -> list[Path]:
    """``learning_curve.json``, ``learning_curve.md`` and ``learning_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "learning_curve.json").write_text(json.dumps(curve, indent=1))
    (directory / "learning_curve.md").write_text(learning_curve_table(curve))
    figure, axis = plt.subplots(figsize=(6, 4))
    x = [100 * f for f in curve["fractions"]]
    for other, label in (("ridge", "IDProxy - ridge"), ("idproxy_stage1", "IDProxy - Stage 1")):
        means = [curve["margins"][str(f)][other]["mean"] for f in curve["fractions"]]
        stds = [curve["margins"][str(f)][other]["std"] for f in curve["fractions"]]
        axis.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=label)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("% of mature items supervising the mapping")
    axis.set_ylabel("cold-AUC margin")
    axis.legend()
    figure.tight_layout()
    figure.savefig(directory / "learning_curve.png", dpi=120)
    plt.close(figure)
    names = ("learning_curve.json", "learning_curve.md", "learning_curve.png")
    return [directory / name for name in names]
