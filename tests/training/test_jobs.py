"""``training/jobs.py`` and ``jobs/train_stage2.py``: Stage 1 and Stage 2 as separate jobs."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch
from tests_helpers import (
    REPO,
    STAGE1_VERSION,
    STAGE2_VERSION,
    training_config,
    write_config,
)

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.encoders.features import read_feature_table
from idproxy_stream.proxy.registry import latest_version, list_versions, load_version
from idproxy_stream.training.jobs import TrainingJobError, run_stage2


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    theirs = second.state_dict()
    return all(torch.equal(value, theirs[name]) for name, value in first.state_dict().items())


def test_stage2_keeps_the_stage1_projector_and_publishes_an_open_gate(staged_bundle):
    registry = BundleLayout(staged_bundle.model_dir).registry
    coarse, coarse_manifest = load_version(registry, STAGE1_VERSION)
    fine, fine_manifest = load_version(registry, STAGE2_VERSION)
    assert coarse.spec.gate_closed and not fine.spec.gate_closed
    assert same_weights(coarse.projector, fine.projector)  # Stage 2 trains adaptor + gate only
    assert latest_version(registry) == STAGE2_VERSION
    assert fine_manifest.training["stage1_version"] == STAGE1_VERSION
    # Both stages read the features the encode job left in extract.output_path.
    fingerprint = read_feature_table(staged_bundle.features_dir).encoder_fingerprint
    assert coarse_manifest.encoder_fingerprint == fine_manifest.encoder_fingerprint == fingerprint
    metrics = staged_bundle.stage2_report.metrics
    assert metrics["stage2_best_valid_auc"] >= metrics["stage2_stage1_valid_auc"]
    assert metrics["stage1_recall@10"] == coarse_manifest.metrics["stage1_recall@10"]


def test_stage2_refuses_a_bundle_without_stage1_or_a_stage2_version(staged_bundle, tmp_path):
    config = training_config(staged_bundle.features_dir)
    with pytest.raises(TrainingJobError, match="run Stage 1 first"):
        run_stage2(config, tmp_path / "empty")
    with pytest.raises(TrainingJobError, match="already has an open gate"):
        run_stage2(config, staged_bundle.model_dir, STAGE2_VERSION)


def test_train_stage2_job_publishes_a_new_latest_version(staged_bundle, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(staged_bundle.model_dir, model_dir)
    raw = json.loads(training_config(staged_bundle.features_dir).model_dump_json())
    path = write_config(raw, tmp_path / "train.yaml")
    spec = importlib.util.spec_from_file_location("train_stage2", REPO / "jobs/train_stage2.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    argv = ["--config", str(path), "--model-dir", str(model_dir)]
    assert job.main([*argv, "--stage1-version", STAGE1_VERSION, "--version", "v3"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["version"] == "v3" and "stage2_best_valid_auc" in printed["metrics"]
    registry = BundleLayout(model_dir).registry
    assert latest_version(registry) == "v3"
    before = list_versions(BundleLayout(staged_bundle.model_dir).registry)
    assert list_versions(registry) == sorted([*before, "v3"])
    coarse, _ = load_version(registry, STAGE1_VERSION)
    assert same_weights(coarse.projector, load_version(registry, "v3")[0].projector)


def test_stored_features_of_other_text_fields_are_refused_with_the_setting_named(staged_bundle):
    from idproxy_stream.encoders.features import FeatureTableError
    from idproxy_stream.training.jobs import stored_features

    assert stored_features(training_config(staged_bundle.features_dir)) is not None
    other = training_config(staged_bundle.features_dir, encoder={"text_fields": ["title"]})
    with pytest.raises(FeatureTableError, match=r"encoder\.text_fields is \['title', 'categories'"):
        stored_features(other)


def test_the_stage2_job_serves_the_same_ridge_blend_as_idproxy_train(staged_bundle, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(staged_bundle.model_dir, model_dir)
    config = training_config(
        staged_bundle.features_dir, stage2={"ridge_fallback": True, "ridge_weights": [0.5]}
    )
    report = run_stage2(config, model_dir, stage1_version=STAGE1_VERSION, version="blend")
    assert report.metrics["ridge_weight"] == 0.5
    assert report.metrics["served_model"] in ("stage1+ridge", "stage2+ridge")
    model, manifest = load_version(BundleLayout(model_dir).registry, "blend")
    assert model.spec.ridge_weight == 0.5 and model.ridge is not None
    assert manifest.metrics["ridge_weight"] == 0.5
    coarse, _ = load_version(BundleLayout(model_dir).registry, STAGE1_VERSION)
    assert same_weights(coarse.projector, model.projector)
