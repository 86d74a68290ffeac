"""The benchmark-suite runner: suite files, data-root checks, per-dataset and combined reports."""

from __future__ import annotations

import json

import pytest

from idproxy_stream.config import AppConfig
from idproxy_stream.eval.suite import (
    RUN_RECORD,
    SuiteError,
    _finished_run,
    dataset_config,
    load_suite,
    packaged_suites,
    run_suite,
    suite_checks,
    suite_from_dict,
)

TINY_SYNTHETIC = {
    "data": {
        "name": "synthetic",
        "synthetic": {
            "num_items": 240,
            "num_users": 160,
            "interactions_per_user": 40,
            "with_images": False,
        },
    },
    "split": {"warm_min_interactions": 30, "cold_min": 16, "cold_max": 30, "warmup_size": 5},
    "encoder": {"text_fields": ["title", "categories"]},
}
FAST = AppConfig.model_validate(
    {
        "ranker": {"epochs": 3, "batch_size": 128, "learning_rate": 1e-2, "num_threads": 1},
        "stage1": {"epochs": 10, "tau": 10},
        "stage2": {"epochs": 1},
        "encoder": {"layers": {"calibration_size": 64}},
        "index": {"k": 5},
    }
)


def test_the_packaged_dev_suite_names_six_datasets_with_their_data_files():
    suite = load_suite("dev")
    assert "dev" in packaged_suites()
    assert len(suite.datasets) == 6
    movielens = [d for d in suite.datasets if d.config["data"]["name"] == "ml-100k"]
    synthetic = [d for d in suite.datasets if d.config["data"]["name"] == "synthetic"]
    assert len(movielens) == 4 and len(synthetic) == 2
    assert all("ml-100k/u.data" in d.requires for d in movielens)
    for dataset in suite.datasets:  # every overlay validates against the defaults
        config = dataset_config(AppConfig(), dataset, "/data")
        if config.data.path is not None:
            assert str(config.data.path).startswith("/data/")


def test_a_missing_data_root_names_the_dataset_and_file_before_anything_runs(tmp_path):
    suite = load_suite("dev")
    with pytest.raises(SuiteError, match=r"ml-100k: ml-100k/u\.data"):
        run_suite(suite, FAST, tmp_path / "nowhere", tmp_path / "out", "test")
    assert not (tmp_path / "out").exists()


def test_unknown_keys_and_datasets_are_refused_with_what_to_use(tmp_path):
    with pytest.raises(SuiteError, match="unknown keys"):
        suite_from_dict({"datasets": {"a": {"config": {}}}, "seed": [0]})
    with pytest.raises(SuiteError, match=r"datasets\.a needs a 'config' mapping"):
        suite_from_dict({"datasets": {"a": {"config": 3}}})
    suite = suite_from_dict({"datasets": {"a": {"config": TINY_SYNTHETIC}}})
    with pytest.raises(SuiteError, match=r"unknown suite datasets \['b'\]"):
        run_suite(suite, FAST, tmp_path, tmp_path / "out", "test", only=["b"])
    with pytest.raises(SuiteError, match="no suite named 'nope'"):
        load_suite("nope")


def test_suite_run_writes_each_dataset_report_and_a_combined_one(tmp_path):
    suite = suite_from_dict(
        {
            "title": "tiny",
            "seeds": [0, 1],
            "datasets": {
                "first": {"title": "first tiny", "config": TINY_SYNTHETIC},
                "second": {
                    "config": {**TINY_SYNTHETIC, "split": {**TINY_SYNTHETIC["split"], "seed": 1}}
                },
            },
        }
    )
    report = run_suite(
        suite,
        FAST,
        tmp_path,
        tmp_path / "out",
        "idproxy eval --suite tiny",
        methods=("mean_id", "ridge", "idproxy_stage1", "idproxy"),
        oracles=("oracle_a",),
    )
    out = tmp_path / "out"
    for name in ("first", "second"):
        per_dataset = json.loads((out / name / "report.json").read_text())
        assert per_dataset["seeds"] == [0, 1]
        assert len(per_dataset["summary"]["idproxy"]["cold_auc"]["values"]) == 2
        assert (
            report["datasets"][name]["cold_auc"]["ridge"]
            == per_dataset["summary"]["ridge"]["cold_auc"]
        )
    # both datasets encode the same catalogue the same way: one cached feature file
    assert len(list((out / "cache").glob("features-*.parquet"))) == 1
    combined = json.loads((out / "report.json").read_text())
    assert set(combined["datasets"]) == {"first", "second"}
    markdown = (out / "report.md").read_text()
    assert "| first |" in markdown and "first tiny" in markdown
    assert (out / "summary.png").stat().st_size > 10_000

    # --resume reads finished datasets back instead of running them again ...
    said: list[str] = []
    resumed = run_suite(
        suite,
        FAST,
        tmp_path,
        out,
        "idproxy eval --suite tiny --resume",
        methods=("mean_id", "ridge", "idproxy_stage1", "idproxy"),
        oracles=("oracle_a",),
        progress=said.append,
        resume=True,
    )
    assert sum("read back (--resume)" in line for line in said) == 2
    assert not any(line.startswith("seed ") for line in said)
    assert resumed["datasets"]["first"]["cold_auc"] == report["datasets"]["first"]["cold_auc"]
    # ... but not a run of other seeds, methods or config
    record = json.loads((out / "first" / RUN_RECORD).read_text())
    key = {k: record[k] for k in ("config_sha256", "seeds", "methods", "oracles")}
    assert _finished_run(out / "first", key) is not None
    assert _finished_run(out / "first", {**key, "seeds": [0]}) is None
    assert _finished_run(out / "first", {**key, "config_sha256": "0" * 64}) is None


def _report(idproxy, others):
    summary = {"idproxy": {"cold_auc": {"mean": sum(idproxy) / len(idproxy), "values": idproxy}}}
    paired = {}
    for name, values in others.items():
        summary[name] = {"cold_auc": {"mean": sum(values) / len(values), "values": values}}
        diff = [a - b for a, b in zip(idproxy, values, strict=True)]
        mean = sum(diff) / len(diff)
        std = (sum((d - mean) ** 2 for d in diff) / (len(diff) - 1)) ** 0.5
        paired[name] = {"mean": mean, "std": std, "values": diff, "exceeds_two_std": mean > 2 * std}
    return {"summary": summary, "paired_vs_idproxy": paired}


def test_suite_checks_fail_on_one_bad_seed_and_name_the_strongest_baseline():
    good = _report(
        [0.71, 0.72, 0.73], {"ridge": [0.70, 0.705, 0.71], "oracle_a": [0.70, 0.73, 0.72]}
    )
    checks = suite_checks(good)
    assert checks == {
        "beats_every_baseline": True,
        "not_beaten_clearly": [],
        "never_below_ridge": True,
        "level_with_oracle_a": True,
        "strongest_baseline": "ridge",
    }
    one_bad_seed = _report([0.71, 0.72, 0.70], {"ridge": [0.70, 0.705, 0.705]})
    checks = suite_checks(one_bad_seed)
    assert checks["never_below_ridge"] is False
    assert checks["beats_every_baseline"] is False and checks["not_beaten_clearly"] == ["ridge"]
