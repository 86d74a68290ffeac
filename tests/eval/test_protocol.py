"""The cold-start protocol end to end on the tiny synthetic split, and its report."""

from __future__ import annotations

import json

import pytest

from idproxy_stream.config import AppConfig
from idproxy_stream.eval.protocol import ColdStartData, run_seed, summarise
from idproxy_stream.eval.report import build_report, paired_differences, write_report

FAST = AppConfig.model_validate(
    {
        "ranker": {"epochs": 6, "batch_size": 128, "learning_rate": 1e-2, "num_threads": 1},
        "stage1": {
            "epochs": 20,
            "batch_size": 64,
            "learning_rate": 3e-3,
            "hidden_dim": 32,
            "holdout_fraction": 0.2,
        },
        "stage2": {"epochs": 2, "batch_size": 256, "learning_rate": 3e-3, "hidden_dim": 32},
        "eval": {"warmup_learning_rate": 1e-2},
    }
)


@pytest.fixture(scope="module")
def seed_results(tiny_dataset, tiny_split, planted_features):
    data = ColdStartData.prepare(tiny_dataset, tiny_split, planted_features)
    methods = ("mean_id", "ridge", "idproxy_stage1", "idproxy")
    return [run_seed(data, FAST, seed, methods=methods, oracles=("oracle_a",)) for seed in (0, 1)]


def test_every_method_reports_cold_start_and_warm_up_metrics(seed_results):
    methods = seed_results[0]["methods"]
    assert set(methods) == {"mean_id", "ridge", "idproxy_stage1", "idproxy", "oracle_a"}
    for name in ("mean_id", "ridge", "idproxy"):
        keys = set(methods[name])
        assert {"cold_auc", "warmup_a_auc", "warmup_b_auc", "warmup_c_auc", "warm_auc"} <= keys
        assert 0.0 <= methods[name]["cold_auc"] <= 1.0


def test_warm_item_auc_is_unchanged_by_any_method(seed_results):
    for result in seed_results:
        warm = {m: v["warm_auc"] for m, v in result["methods"].items() if m != "oracle_a"}
        assert len(set(warm.values())) == 1, warm
        assert next(iter(warm.values())) == pytest.approx(result["ranker"]["warm_test"]["auc"])


def test_content_methods_beat_mean_id_on_planted_features(seed_results):
    for result in seed_results:
        methods = result["methods"]
        assert methods["ridge"]["cold_auc"] > methods["mean_id"]["cold_auc"]
        assert methods["idproxy"]["cold_auc"] > methods["mean_id"]["cold_auc"]


def test_report_holds_per_seed_values_paired_differences_and_plots(seed_results, tmp_path):
    summary = summarise(seed_results)
    assert summary["idproxy"]["cold_auc"]["values"] == [
        r["methods"]["idproxy"]["cold_auc"] for r in seed_results
    ]
    paired = paired_differences(summary)
    expected = [
        r["methods"]["idproxy"]["cold_auc"] - r["methods"]["ridge"]["cold_auc"]
        for r in seed_results
    ]
    assert paired["ridge"]["values"] == pytest.approx(expected)
    report = build_report("tiny", "idproxy eval ...", summary, seed_results, {"dataset": "tiny"})
    paths = write_report(report, tmp_path)
    assert {p.name for p in paths} == {"report.json", "report.md", "cold_auc.png", "warmup.png"}
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == summary
    assert "| IDProxy Stage 1 + 2 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "cold_auc.png").read_bytes()[:4] == b"\x89PNG"


def test_learning_curve_reports_margins_per_fraction(
    tiny_dataset, tiny_split, planted_features, tmp_path
):
    from idproxy_stream.eval.learning_curve import run_learning_curve, write_learning_curve

    data = ColdStartData.prepare(tiny_dataset, tiny_split, planted_features)
    curve = run_learning_curve(data, FAST, seeds=(0,), fractions=(0.3, 1.0))
    for fraction in ("0.3", "1.0"):
        aucs = curve["cold_auc"][fraction]
        margin = curve["margins"][fraction]["ridge"]["values"][0]
        assert margin == pytest.approx(aucs["idproxy"][0] - aucs["ridge"][0])
    # fewer supervising items must change what the mappings learn
    assert curve["cold_auc"]["0.3"]["ridge"] != curve["cold_auc"]["1.0"]["ridge"]
    paths = write_learning_curve(curve, tmp_path)
    assert "| 30 % |" in paths[1].read_text()


def test_the_field_baselines_run_in_the_protocol_with_their_own_warm_up(
    tiny_dataset, tiny_split, planted_features
):
    data = ColdStartData.prepare(tiny_dataset, tiny_split, planted_features)
    methods = ("mean_id", "meta_embedding", "mwuf", "cvar")
    result = run_seed(data, FAST, 0, methods=methods, oracles=())
    metrics = result["methods"]
    assert set(metrics) == set(methods)
    warm = {m: v["warm_auc"] for m, v in metrics.items()}
    assert len(set(warm.values())) == 1  # no method touches a warm item's row
    for name in ("meta_embedding", "cvar"):
        assert metrics[name]["cold_auc"] > metrics["mean_id"]["cold_auc"]
    # MWUF starts from the (scaled) mean ID and earns its keep while warming up
    assert metrics["mwuf"]["warmup_c_auc"] != metrics["mwuf"]["cold_auc"]


def test_the_void_analysis_reports_void_items_and_every_policy(seed_results):
    void = seed_results[0]["void_analysis"]
    assert 0.0 <= void["void_rate"] <= 1.0
    assert set(void["policy_cold_auc"]) == {"flag", "knn_average", "dead_letter"}
    # flag writes every proxy as computed: the cold AUC is IDProxy's own
    assert void["policy_cold_auc"]["flag"] == pytest.approx(
        seed_results[0]["methods"]["idproxy"]["cold_auc"]
    )


def test_the_protocol_runs_through_a_plugin_ranker_without_its_oracles(
    tiny_dataset, tiny_split, planted_features, tmp_path
):
    """``ranker.adapter`` set: each seed's ranker comes from the factory (trained into the
    checkpoint by the first seed, loaded by the next), every method is scored through it, and
    the oracles (which retrain the reference ranker) are skipped."""
    import torch

    from idproxy_stream.config import with_updates
    from idproxy_stream.ranker.training import load_ranker

    ranker = with_updates(
        FAST.ranker,
        adapter="idproxy_stream.ranker.reference_plugin:reference_ranker",
        adapter_settings={"epochs": 4, "batch_size": 128, "learning_rate": 1e-2},
        checkpoint=tmp_path / "ranker",
    )
    config = with_updates(FAST, ranker=ranker)
    data = ColdStartData.prepare(tiny_dataset, tiny_split, planted_features)
    methods = ("mean_id", "idproxy")
    result = run_seed(data, config, 0, methods=methods, oracles=("oracle_a",))
    assert set(result["methods"]) == set(methods)  # no oracle row
    assert result["methods"]["idproxy"]["cold_auc"] > result["methods"]["mean_id"]["cold_auc"]
    # the checkpoint the first seed trained is the ranker of the next seed
    trained = load_ranker(tmp_path / "ranker")
    next_seed, _ = data.ranker(config.ranker, 1)
    assert torch.equal(next_seed.id_embedding_table(), trained.id_embedding_table())
