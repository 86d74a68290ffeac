"""Training learns, and a saved ranker loads back to identical predictions (no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idproxy_stream.ranker.training import (
    RankerLoadError,
    evaluate_ranker,
    load_ranker,
    predict_logits,
    save_ranker,
)


def test_trained_ranker_beats_chance_on_held_out_warm_samples(tiny_ranker, encoded_parts):
    _, parts = encoded_parts
    metrics = evaluate_ranker(tiny_ranker, parts["warm_test"])
    assert metrics["auc"] > 0.6
    assert metrics["logloss"] < 0.69


def test_save_and_load_round_trip_gives_identical_predictions(tiny_ranker, encoded_parts, tmp_path):
    _, parts = encoded_parts
    save_ranker(tiny_ranker, tmp_path / "ranker")
    assert sorted(p.name for p in (tmp_path / "ranker").iterdir()) == [
        "ranker.json",
        "ranker.safetensors",
    ]
    loaded = load_ranker(tmp_path / "ranker")
    before = predict_logits(tiny_ranker, parts["cold_test"])
    after = predict_logits(loaded, parts["cold_test"])
    assert np.array_equal(before, after)
    assert loaded.vocab == tiny_ranker.vocab


def test_loading_from_an_empty_folder_says_how_to_get_a_ranker(tmp_path):
    with pytest.raises(RankerLoadError, match="idproxy ranker train"):
        load_ranker(tmp_path)


def test_loading_weights_that_do_not_match_the_manifest_is_refused(tiny_ranker, tmp_path):
    save_ranker(tiny_ranker, tmp_path / "ranker")
    manifest_path = tmp_path / "ranker" / "ranker.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["cross_layers"] = manifest["config"]["cross_layers"] + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RankerLoadError, match="does not match"):
        load_ranker(tmp_path / "ranker")
