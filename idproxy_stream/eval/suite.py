"""Benchmark suites: the cold-start protocol over several datasets, one combined report.

A suite is a YAML file (the packaged ones live in ``idproxy_stream/configs/suites/``; ``dev``
is the development suite every default of the method is chosen on)::

    title: Development suite
    seeds: [0, 1, 2, 3, 4]
    datasets:
      ml-100k:                      # a folder name under the output directory
        title: ML-100K, MiniLM over title + genres + plot
        requires: [ml-100k/u.data]  # files under --data-root the dataset needs
        config:                     # a config overlay (sections as in config.py)
          data: {name: ml-100k, path: "{data_root}/ml-100k"}

``{data_root}`` in any string of a dataset's ``config`` is replaced by the data folder given
to the run. Each dataset is evaluated by :func:`~idproxy_stream.eval.run.run_evaluation` into
``<output>/<name>/`` (its own ``report.md``/``report.json``/plots); content features are cached
in ``<output>/cache/`` and shared between datasets that encode the same catalogue the same way.
The combined ``<output>/report.md`` / ``report.json`` / ``summary.png`` hold one row per
dataset and the checks the method is held to (:func:`suite_checks`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from idproxy_stream.config import AppConfig, ConfigError, config_from_dict, deep_merge
from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
DATA_ROOT_PLACEHOLDER = "{data_root}"
IDPROXY = "idproxy"
# Methods that are not competitors: IDProxy's own ablation and the uninformed references.
NOT_COMPETITORS = ("idproxy", "idproxy_stage1")


class SuiteError(IdProxyError, ValueError):
    """A suite file is malformed or its data is missing; the message says what to fix."""


@dataclass(frozen=True)
class SuiteDataset:
    """One dataset of a suite: a name, a title, the files it needs and its config overlay."""

    name: str
    title: str
    config: Mapping[str, Any]
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A named list of datasets evaluated with the same seeds."""

    title: str
    seeds: tuple[int, ...]
    datasets: tuple[SuiteDataset, ...]
    source: str = "<dict>"
    description: str = ""
    extra: dict = field(default_factory=dict)


def packaged_suites() -> list[str]:
    """Names of the suites shipped in ``idproxy_stream/configs/suites``."""
    folder = resources.files("idproxy_stream") / "configs" / "suites"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """A packaged suite by name (``dev``) or a suite YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        packaged = resources.files("idproxy_stream") / "configs" / "suites" / f"{name_or_path}.yaml"
        if not packaged.is_file():
            raise SuiteError(
                f"no suite named {name_or_path!r}: use one of {packaged_suites()} or a YAML path"
            )
        text, source = packaged.read_text(encoding="utf-8"), f"suite {name_or_path}"
    elif path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        raise SuiteError(f"suite file {path} does not exist: pass a suite name or a YAML file")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SuiteError(f"{source} is not valid YAML: {error}") from None
    return suite_from_dict(raw, source)


def suite_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Suite:
    """Validate a suite mapping (see the module docstring)."""
    unknown = set(raw) - {"title", "seeds", "datasets", "description"}
    if unknown:
        raise SuiteError(f"{source}: unknown keys {sorted(unknown)}: use title, seeds, datasets")
    datasets_raw = raw.get("datasets")
    if not isinstance(datasets_raw, Mapping) or not datasets_raw:
        raise SuiteError(f"{source}: 'datasets' must map dataset names to their settings")
    datasets = []
    for name, entry in datasets_raw.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("config", {}), Mapping):
            raise SuiteError(f"{source}: datasets.{name} needs a 'config' mapping")
        extra = set(entry) - {"title", "config", "requires"}
        if extra:
            raise SuiteError(f"{source}: datasets.{name}: unknown keys {sorted(extra)}")
        datasets.append(
            SuiteDataset(
                name=str(name),
                title=str(entry.get("title", name)),
                config=dict(entry.get("config", {})),
                requires=tuple(str(r) for r in entry.get("requires", ())),
            )
        )
    seeds = raw.get("seeds", (0, 1, 2, 3, 4))
    if not isinstance(seeds, Sequence) or not all(isinstance(s, int) for s in seeds):
        raise SuiteError(f"{source}: 'seeds' must be a list of integers")
    return Suite(
        title=str(raw.get("title", source)),
        seeds=tuple(seeds),
        datasets=tuple(datasets),
        source=source,
        description=str(raw.get("description", "")),
    )


def _substitute(value: Any, data_root: str) -> Any:
    if isinstance(value, str):
        return value.replace(DATA_ROOT_PLACEHOLDER, data_root)
    if isinstance(value, Mapping):
        return {key: _substitute(item, data_root) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(item, data_root) for item in value]
    return value


def dataset_config(base: AppConfig, dataset: SuiteDataset, data_root: str | Path) -> AppConfig:
    """``base`` with the dataset's overlay (``{data_root}`` substituted), validated."""
    overlay = _substitute(dict(dataset.config), str(data_root))
    try:
        return config_from_dict(
            deep_merge(base.model_dump(mode="json"), overlay), f"suite dataset {dataset.name}"
        )
    except ConfigError as error:
        raise SuiteError(str(error)) from None


def missing_files(suite: Suite, data_root: str | Path) -> dict[str, list[str]]:
    """Per dataset, the required files that ``data_root`` lacks."""
    root = Path(data_root)
    return {
        dataset.name: missing
        for dataset in suite.datasets
        if (missing := [r for r in dataset.requires if not (root / r).exists()])
    }


def run_suite(
    suite: Suite,
    base_config: AppConfig,
    data_root: str | Path,
    output_dir: str | Path,
    command: str,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
    methods: Sequence[str] | None = None,
    oracles: Sequence[str] | None = None,
    resume: bool = False,
) -> dict:
    """Evaluate every dataset of ``suite`` and write the combined report; returns it.

    ``methods`` / ``oracles`` default to all of them (``eval/protocol.py``). With ``resume``,
    a dataset whose folder holds a finished run of the same config, seeds and methods
    (``suite_run.json``, written after its report) is read back instead of run again, so an
    interrupted suite continues where it stopped.

    Raises :class:`SuiteError` naming the files a dataset needs when ``data_root`` lacks them
    (before anything runs).
    """
    from idproxy_stream.eval.protocol import METHODS, ORACLES
    from idproxy_stream.eval.run import run_evaluation
    from idproxy_stream.eval.suite_report import build_suite_report, write_suite_report

    say = progress or (lambda message: logger.info(message))
    output_dir = Path(output_dir)
    chosen = [d for d in suite.datasets if only is None or d.name in only]
    if only is not None and len(chosen) != len(set(only)):
        unknown = sorted(set(only) - {d.name for d in suite.datasets})
        raise SuiteError(
            f"unknown suite datasets {unknown}: choose from {[d.name for d in suite.datasets]}"
        )
    gaps = {
        name: files
        for name, files in missing_files(suite, data_root).items()
        if name in {d.name for d in chosen}
    }
    if gaps:
        described = "; ".join(f"{name}: {', '.join(files)}" for name, files in gaps.items())
        raise SuiteError(f"--data-root {data_root} lacks files the suite needs ({described})")
    seeds = list(seeds if seeds is not None else suite.seeds)
    reports: dict[str, dict] = {}
    methods = list(METHODS if methods is None else methods)
    oracles = list(ORACLES if oracles is None else oracles)
    for position, dataset in enumerate(chosen, 1):
        say(f"[{position}/{len(chosen)}] {dataset.name}: {dataset.title}")
        config = dataset_config(base_config, dataset, data_root)
        folder = output_dir / dataset.name
        run_key = _run_key(config, seeds, methods, oracles)
        if resume and (finished := _finished_run(folder, run_key)) is not None:
            reports[dataset.name] = finished
            say(f"[{position}/{len(chosen)}] {dataset.name}: finished run read back (--resume)")
            continue
        dataset_started = time.perf_counter()
        reports[dataset.name] = run_evaluation(
            config,
            folder,
            command,
            dataset.title,
            seeds,
            methods=methods,
            oracles=oracles,
            progress=say,
            cache_dir=output_dir / "cache",
        )
        seconds = time.perf_counter() - dataset_started
        reports[dataset.name]["wall_seconds"] = seconds
        write_json(folder / RUN_RECORD, {**run_key, "wall_seconds": seconds})
        say(f"[{position}/{len(chosen)}] {dataset.name}: done in {seconds:.0f} s")
    # the suite's time is its datasets' runs, read-back ones (--resume) included
    seconds = sum(report.get("wall_seconds") or 0.0 for report in reports.values())
    report = build_suite_report(suite, reports, command, seconds)
    write_suite_report(report, output_dir)
    return report


RUN_RECORD = "suite_run.json"


def _run_key(config: AppConfig, seeds, methods, oracles) -> dict[str, Any]:
    """What makes two runs of one dataset the same: its config digest, seeds and methods."""
    dumped = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    return {
        "config_sha256": hashlib.sha256(dumped.encode()).hexdigest(),
        "seeds": list(seeds),
        "methods": list(methods),
        "oracles": list(oracles),
    }


def _finished_run(folder: Path, run_key: Mapping[str, Any]) -> dict | None:
    """The report of a finished run in ``folder`` with the same ``run_key``, else None."""
    try:
        record = json.loads((folder / RUN_RECORD).read_text())
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if any(record.get(key) != value for key, value in run_key.items()):
        return None
    report["wall_seconds"] = record.get("wall_seconds")
    return report


def suite_checks(report: Mapping[str, Any]) -> dict[str, Any]:
    """The bar one dataset's report is held to, computed from its ``summary`` and paired diffs.

    - ``beats_every_baseline``: IDProxy minus every non-oracle method (IDProxy's own ablation
      excluded), paired per seed, has a mean above twice its standard deviation;
    - ``never_below_ridge``: on every seed IDProxy's cold AUC >= ridge's;
    - ``level_with_oracle_a``: the paired mean of IDProxy minus oracle a is not below minus
      one standard deviation (IDProxy is not significantly worse than a ranker that has seen
      ``split.warmup_size`` real interactions per item).
    """
    summary, paired = report["summary"], report.get("paired_vs_idproxy", {})
    competitors = [
        m
        for m in summary
        if m not in NOT_COMPETITORS and not m.startswith("oracle") and m in paired
    ]
    failing = [m for m in competitors if not paired[m]["exceeds_two_std"]]
    ridge = paired.get("ridge")
    oracle = paired.get("oracle_a")
    strongest = max(competitors, key=lambda m: summary[m]["cold_auc"]["mean"], default=None)
    return {
        "beats_every_baseline": not failing if competitors else None,
        "not_beaten_clearly": failing,
        "never_below_ridge": None if ridge is None else bool(np.min(ridge["values"]) >= 0.0),
        "level_with_oracle_a": None if oracle is None else bool(oracle["mean"] >= -oracle["std"]),
        "strongest_baseline": strongest,
    }


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, default=float))
