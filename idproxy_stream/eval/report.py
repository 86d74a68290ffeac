"""The cold-start report: ``report.json``, ``report.md`` and PNG plots.

``report.json`` holds, per method and metric, the mean, the standard deviation and the per-seed
values, plus IDProxy's paired per-seed differences against every other method, the share of the
mean-ID -> oracle a+b+c gap it closes, and wall times per stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from idproxy_stream.eval.learning_curve import learning_curve_table
from idproxy_stream.eval.plotting import method_colour, method_label
from idproxy_stream.eval.protocol import METHODS, ORACLES, WARMUP_STAGES

TABLE_METRICS = (
    ("cold_auc", "cold AUC"),
    ("warmup_a_auc", "+a AUC"),
    ("warmup_b_auc", "+b AUC"),
    ("warmup_c_auc", "+c AUC"),
    ("cold_logloss", "cold logloss"),
    ("warm_auc", "warm AUC"),
)


def paired_differences(
    summary: dict, method: str = "idproxy", metric: str = "cold_auc"
) -> dict[str, dict]:
    """``method`` minus every other method, per seed: mean, std, values, and mean > 2 std."""
    if method not in summary or metric not in summary[method]:
        return {}
    ours = np.asarray(summary[method][metric]["values"])
    out = {}
    for other, metrics in summary.items():
        if other == method or metric not in metrics:
            continue
        theirs = np.asarray(metrics[metric]["values"])
        if len(theirs) != len(ours):
            continue
        diff = ours - theirs
        std = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        out[other] = {
            "mean": float(diff.mean()),
            "std": std,
            "values": diff.tolist(),
            "exceeds_two_std": bool(diff.mean() > 2 * std),
        }
    return out


def gap_closed(summary: dict, method: str = "idproxy") -> float | None:
    """Share of the cold-AUC gap between mean ID and the a+b+c oracle that ``method`` closes."""
    try:
        low = summary["mean_id"]["cold_auc"]["mean"]
        high = summary["oracle_abc"]["cold_auc"]["mean"]
        value = summary[method]["cold_auc"]["mean"]
    except KeyError:
        return None
    return float((value - low) / (high - low)) if high != low else None


def build_report(
    title: str,
    command: str,
    summary: dict,
    seed_results: Sequence[dict],
    context: dict,
) -> dict:
    """Everything ``report.json`` holds."""
    timings: dict[str, list[float]] = {}
    for result in seed_results:
        for stage, seconds in result["timings"].items():
            timings.setdefault(stage, []).append(seconds)
    return {
        "title": title,
        "command": command,
        "context": context,
        "summary": summary,
        "paired_vs_idproxy": paired_differences(summary),
        "gap_closed_by_idproxy": gap_closed(summary),
        "timings_mean_seconds": {k: float(np.mean(v)) for k, v in timings.items()},
        "ranker_warm_test": [r["ranker"]["warm_test"] for r in seed_results],
        "idproxy_training": [r["idproxy_training"] for r in seed_results],
        "seeds": [r["seed"] for r in seed_results],
    }


def _cell(summary: dict, method: str, metric: str) -> str:
    entry = summary.get(method, {}).get(metric)
    if entry is None:
        return "–"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def render_markdown(report: dict) -> str:
    """The Markdown report: table, paired differences, gap closure, timings."""
    summary = report["summary"]
    lines = [f"# {report['title']}", "", "Reproduce with:", "", "```", report["command"], "```", ""]
    context = report["context"]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += [
        "",
        f"Mean ± std over {len(report['seeds'])} seeds (seeds {report['seeds']}): cold-test "
        "metrics at cold start and after warm-up a, b, c (proxy-initialised ID embeddings "
        "updated on the warm-up rows only, ranker frozen), and warm-test AUC.",
        "",
        "| method | " + " | ".join(label for _, label in TABLE_METRICS) + " |",
        "|---|" + "---|" * len(TABLE_METRICS),
    ]
    for method in [*METHODS, *ORACLES]:
        if method not in summary:
            continue
        cells = [_cell(summary, method, metric) for metric, _ in TABLE_METRICS]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    paired = report["paired_vs_idproxy"]
    if paired:
        lines += [
            "",
            "Paired per-seed differences in cold AUC (IDProxy minus method):",
            "",
            "| method | mean | std | mean > 2 std | per seed |",
            "|---|---|---|---|---|",
        ]
        for other, entry in paired.items():
            values = ", ".join(f"{v:+.4f}" for v in entry["values"])
            lines.append(
                f"| {method_label(other)} | {entry['mean']:+.4f} | {entry['std']:.4f}"
                f" | {'yes' if entry['exceeds_two_std'] else 'no'} | {values} |"
            )
    gap = report["gap_closed_by_idproxy"]
    if gap is not None:
        lines += [
            "",
            f"IDProxy closes {100 * gap:.1f} % of the cold-AUC gap between mean ID and "
            "the a+b+c oracle.",
        ]
    lines += ["", "Mean wall time per stage and seed (s, 2 CPU cores):", ""]
    lines += [
        f"- {stage}: {seconds:.1f}" for stage, seconds in report["timings_mean_seconds"].items()
    ]
    if "learning_curve" in report:
        lines += [
            "",
            "Learning curve: IDProxy's cold-AUC margin when only a share of the mature items "
            "supervises the mapping (same ranker per seed):",
            "",
            learning_curve_table(report["learning_curve"]),
            "![learning curve](learning_curve.png)",
        ]
    lines += ["", "![cold-start AUC](cold_auc.png)", "", "![warm-up curves](warmup.png)", ""]
    return "\n".join(lines)


def plot_report(report: dict, directory: Path) -> list[Path]:
    """``cold_auc.png`` (bars from chance, ±1 std) and ``warmup.png`` (AUC by warm-up stage).

    Every method keeps its colour from ``eval/plotting.py`` in both charts (and in the suite
    summary); the oracles are in the legend of the warm-up chart as stars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    seeds = len(report["seeds"])
    methods = [m for m in [*METHODS, *ORACLES] if m in summary]
    means = [summary[m]["cold_auc"]["mean"] for m in methods]
    stds = [summary[m]["cold_auc"]["std"] for m in methods]
    figure, axis = plt.subplots(figsize=(10, 5))
    chance = 0.5
    axis.bar(
        range(len(methods)),
        [mean - chance for mean in means],
        bottom=chance,
        yerr=stds,
        color=[method_colour(m) for m in methods],
        capsize=3,
        error_kw={"elinewidth": 1},
    )
    axis.set_xticks(
        range(len(methods)),
        [method_label(m) for m in methods],
        rotation=35,
        ha="right",
        fontsize=8,
    )
    axis.set_ylim(chance, max(m + s for m, s in zip(means, stds, strict=True)) + 0.02)
    axis.set_ylabel("cold-test AUC (axis starts at 0.5 = chance)")
    axis.set_title(
        f"{report['title']}\ncold start: mean over {seeds} seeds, error bars ±1 std across seeds",
        fontsize=9,
    )
    figure.tight_layout()
    paths = [directory / "cold_auc.png"]
    figure.savefig(paths[0], dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 5))
    stages = ["cold", *WARMUP_STAGES]
    for method in METHODS:
        if method not in summary:
            continue
        keys = ["cold_auc"] + [f"warmup_{s}_auc" for s in WARMUP_STAGES]
        values = [summary[method][k]["mean"] for k in keys]
        axis.plot(
            stages,
            values,
            marker="o",
            color=method_colour(method),
            label=method_label(method),
            linewidth=2.5 if method == "idproxy" else 1.2,
        )
    for oracle, stage in zip(ORACLES, WARMUP_STAGES, strict=True):
        if oracle in summary:
            axis.scatter(
                [stage],
                [summary[oracle]["cold_auc"]["mean"]],
                marker="*",
                s=160,
                color=method_colour(oracle),
                edgecolors="black",
                zorder=5,
                label=method_label(oracle),
            )
    axis.set_xlabel("warm-up rows seen per cold item (a, b, c: 5 more each)")
    axis.set_ylabel("cold-test AUC")
    axis.set_title(
        f"{report['title']}\nwarm-up: mean over {seeds} seeds; stars: the ranker retrained "
        "with the same rows",
        fontsize=9,
    )
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    paths.append(directory / "warmup.png")
    figure.savefig(paths[1], dpi=120)
    plt.close(figure)
    return paths


def write_report(report: dict, directory: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=1))
    (directory / "report.md").write_text(render_markdown(report))
    return [directory / "report.json", directory / "report.md", *plot_report(report, directory)]
