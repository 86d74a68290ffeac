"""The combined report of a benchmark suite: ``report.json``, ``report.md``, ``summary.png``.

One row per dataset: IDProxy's cold AUC, the strongest other method, the paired per-seed
differences and the checks of :func:`~idproxy_stream.eval.suite.suite_checks`; then every
method's cold AUC on every dataset, the neighbour check's effect, and a chart of IDProxy's paired
margin over each method per dataset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idproxy_stream.eval.plotting import method_colour, method_label
from idproxy_stream.eval.suite import IDPROXY, Suite, suite_checks


def build_suite_report(
    suite: Suite, reports: Mapping[str, dict], command: str, seconds: float
) -> dict:
    """Everything the combined ``report.json`` holds."""
    datasets = {}
    for name, report in reports.items():
        title = next((d.title for d in suite.datasets if d.name == name), name)
        checks = suite_checks(report)
        strongest = checks["strongest_baseline"]
        paired = report.get("paired_vs_idproxy", {})
        datasets[name] = {
            "title": title,
            "split": report["context"].get("split", {}),
            "cold_auc": {m: v["cold_auc"] for m, v in report["summary"].items()},
            "paired_vs_idproxy": {m: v for m, v in paired.items()},
            "checks": checks,
            "idproxy_minus_strongest": paired.get(strongest) if strongest else None,
            "void_analysis": report.get("void_analysis"),
            "wall_seconds": report.get("wall_seconds"),
        }
    keys = ("beats_every_baseline", "never_below_ridge", "level_with_oracle_a")
    totals = {key: sum(1 for entry in datasets.values() if entry["checks"][key]) for key in keys}
    return {
        "title": suite.title,
        "not_run": [d.name for d in suite.datasets if d.name not in reports],
        "command": command,
        "suite": suite.source,
        "description": suite.description,
        "seeds": list(next(iter(reports.values()))["seeds"]) if reports else [],
        "wall_seconds": seconds,
        "datasets": datasets,
        "checks_held": totals,
        "all_checks_hold": all(entry["checks"][key] for entry in datasets.values() for key in keys),
    }


def _mean_std(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def _paired(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:+.4f} ± {entry['std']:.4f}"


def _mark(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def render_suite_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown summary of a suite run."""
    datasets = report["datasets"]
    lines = [f"# {report['title']}", ""]
    if report.get("description"):
        lines += [report["description"].strip(), ""]
    lines += ["Reproduce with:", "", "```", report["command"], "```", ""]
    if report.get("not_run"):
        lines += [f"Datasets of the suite not in this report: {', '.join(report['not_run'])}.", ""]
    lines += [
        f"Seeds {report['seeds']}; every number is a cold-test AUC (mean ± std over seeds) or "
        "a paired per-seed difference (IDProxy minus the method, mean ± std). Wall time "
        f"{report['wall_seconds'] / 60:.1f} min on this machine (the datasets' runs summed).",
        "",
        "## Summary",
        "",
        "| dataset | IDProxy | strongest other method | its AUC | IDProxy − it | beats every "
        "baseline by > 2 std | never below ridge | level with oracle a |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in datasets.items():
        checks = entry["checks"]
        strongest = checks["strongest_baseline"]
        lines.append(
            f"| {name} | {_mean_std(entry['cold_auc'].get(IDPROXY))} | "
            f"{method_label(strongest) if strongest else '–'} | "
            f"{_mean_std(entry['cold_auc'].get(strongest)) if strongest else '–'} | "
            f"{_paired(entry['idproxy_minus_strongest'])} | "
            f"{_mark(checks['beats_every_baseline'])} | {_mark(checks['never_below_ridge'])} | "
            f"{_mark(checks['level_with_oracle_a'])} |"
        )
    held = report["checks_held"]
    count = len(datasets)
    lines += [
        "",
        f"Checks held on {held['beats_every_baseline']}/{count} datasets (beats every baseline), "
        f"{held['never_below_ridge']}/{count} (never below ridge), "
        f"{held['level_with_oracle_a']}/{count} (level with oracle a).",
    ]
    not_beaten = {
        name: entry["checks"]["not_beaten_clearly"]
        for name, entry in datasets.items()
        if entry["checks"]["not_beaten_clearly"]
    }
    if not_beaten:
        lines += ["", "Where IDProxy does not win clearly (paired mean not above 2 std):", ""]
        for name, methods in not_beaten.items():
            cells = ", ".join(
                f"{method_label(m)} ({_paired(datasets[name]['paired_vs_idproxy'][m])})"
                for m in methods
            )
            lines.append(f"- {name}: {cells}")
    methods = _ordered_methods(datasets)
    lines += [
        "",
        "## Cold AUC of every method",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for method in methods:
        cells = [_mean_std(entry["cold_auc"].get(method)) for entry in datasets.values()]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## IDProxy minus each method, paired per seed",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for method in methods:
        if method == IDPROXY:
            continue
        cells = [_paired(entry["paired_vs_idproxy"].get(method)) for entry in datasets.values()]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    if any(entry.get("void_analysis") for entry in datasets.values()):
        lines += _void_lines(datasets)
    lines += ["", "![IDProxy's paired margin per dataset](summary.png)", ""]
    lines += ["Per-dataset reports (warm-up curves, log loss, timings, plots):", ""]
    lines += [f"- [{entry['title']}]({name}/report.md)" for name, entry in datasets.items()]
    lines.append("")
    return "\n".join(lines)


def _void_lines(datasets: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## The neighbour check",
        "",
        "Share of cold items whose IDProxy proxy is void (k-th neighbour farther than the "
        "threshold calibrated on held-out mature items' proxies), the cold AUC of those items' "
        "samples against the others', and the whole cold set's AUC under each "
        "`index.void_policy` (`dead_letter` = no row, the reader's mean-ID fallback):",
        "",
        "| dataset | void rate | AUC void items | AUC other items | flag | knn_average | "
        "dead_letter |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in datasets.items():
        void = entry.get("void_analysis")
        if not void:
            continue
        policies = void["policy_cold_auc"]
        lines.append(
            f"| {name} | {_mean_std(void['void_rate'])} | {_mean_std(void['auc_void_items'])} | "
            f"{_mean_std(void['auc_other_items'])} | {_mean_std(policies.get('flag'))} | "
            f"{_mean_std(policies.get('knn_average'))} | {_mean_std(policies.get('dead_letter'))} |"
        )
    return lines


def _ordered_methods(datasets: Mapping[str, Any]) -> list[str]:
    from idproxy_stream.eval.protocol import METHODS, ORACLES

    present = {m for entry in datasets.values() for m in entry["cold_auc"]}
    return [m for m in [*METHODS, *ORACLES] if m in present]


def plot_suite(report: Mapping[str, Any], directory: Path) -> Path:
    """``summary.png``: IDProxy minus each method per dataset (paired mean, ±1 std bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = report["datasets"]
    methods = [m for m in _ordered_methods(datasets) if m not in (IDPROXY, "random")]
    names = list(datasets)
    width = 0.8 / max(len(methods), 1)
    figure, axis = plt.subplots(figsize=(max(8, 1.6 * len(names) + 3), 5))
    for position, method in enumerate(methods):
        means, stds = [], []
        for name in names:
            entry = datasets[name]["paired_vs_idproxy"].get(method)
            means.append(entry["mean"] if entry else np.nan)
            stds.append(entry["std"] if entry else 0.0)
        offsets = np.arange(len(names)) + (position - (len(methods) - 1) / 2) * width
        axis.bar(
            offsets,
            means,
            width,
            yerr=stds,
            capsize=2,
            color=method_colour(method),
            label=method_label(method),
        )
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("IDProxy − method, cold-test AUC (paired)")
    axis.set_title(
        f"{report['title']}: IDProxy's margin per dataset\n"
        f"bars: mean over {len(report['seeds'])} seeds; error bars: ±1 std of the paired "
        "per-seed difference; above 0 = IDProxy better",
        fontsize=9,
    )
    axis.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    path = directory / "summary.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_suite_report(report: Mapping[str, Any], directory: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``summary.png`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (directory / "report.md").write_text(render_suite_markdown(report))
    return [directory / "report.json", directory / "report.md", plot_suite(report, directory)]
