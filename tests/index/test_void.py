"""NeighbourChecker: planted voids are caught, in-distribution proxies pass at keep_fraction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from idproxy_stream.config import IndexConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.events import ProxyRecord
from idproxy_stream.index import (
    IdIndex,
    IdSpace,
    IdSpaceMismatchError,
    IndexBuildError,
    NeighbourChecker,
    calibrate_void_threshold,
)
from idproxy_stream.index.void import leave_one_out_kth, void_scores

from .conftest import TAU, ClusteredSpace, make_clustered_space


@pytest.fixture(scope="module")
def checker(clustered: ClusteredSpace) -> NeighbourChecker:
    return NeighbourChecker.build(clustered.id_space, IndexConfig(kind="flat", k=10), tau=TAU)


def test_planted_void_proxies_are_flagged(clustered, checker) -> None:
    voids = clustered.void_vectors(200, np.random.default_rng(4))
    checks = checker.check(voids)
    assert all(check.void for check in checks)
    assert min(check.void_score for check in checks) > checker.threshold


def test_proxies_among_real_ids_are_not_flagged(clustered, checker) -> None:
    # Proxies in the dense part of the ID clusters. (Any single mature ID may itself lie in
    # the 1 - keep_fraction tail, so "near one ID" alone does not guarantee a pass.)
    rng = np.random.default_rng(5)
    centres = clustered.centres[rng.integers(0, len(clustered.centres), 300)]
    proxies = 1.2 * centres + 0.02 * rng.normal(size=centres.shape)
    assert not any(check.void for check in checker.check(proxies))


@pytest.mark.parametrize("keep_fraction", [0.9, 0.95])
def test_kept_fraction_of_held_out_items_matches_keep_fraction(keep_fraction) -> None:
    # Calibrated leave-one-out on indexed items; measured on items the index never saw.
    space = make_clustered_space(num_items=6_000, seed=11)
    config = IndexConfig(kind="flat", k=10, keep_fraction=keep_fraction, calibration_size=4_000)
    checker = NeighbourChecker.build(space.id_space, config, tau=TAU)
    held_out = space.sample(4_000, np.random.default_rng(6))
    _, _, _, _, void = checker.check_arrays(held_out)
    assert abs((1.0 - void.mean()) - keep_fraction) < 0.025


def test_calibration_on_indexed_items_excludes_self_matches(clustered) -> None:
    index = IdIndex.build(clustered.id_space, IndexConfig(kind="flat"), TAU)
    members = clustered.id_space.embeddings[index.member_rows[:500]]
    with_self = calibrate_void_threshold(index, members, k=1, keep_fraction=0.95)
    loo = calibrate_void_threshold(
        index, members, k=1, keep_fraction=0.95, query_item_ids=index.member_ids[:500]
    )
    assert with_self < 1e-3  # every query finds itself at distance 0
    assert loo > 0.01


def test_leave_one_out_drops_the_self_match_wherever_it_ranks() -> None:
    ids = np.array([[7, 1, 2], [1, 7, 2], [1, 2, 3]])
    sims = np.array([[1.0, 0.8, 0.6], [0.9, 0.85, 0.5], [0.9, 0.8, 0.7]])
    kth = leave_one_out_kth(ids, sims, np.array([7, 7, 7]), k=2)
    assert kth.tolist() == [0.6, 0.5, 0.8]


def test_void_score_is_unit_sphere_distance() -> None:
    np.testing.assert_allclose(void_scores(np.array([1.0, 0.0, -1.0])), [0.0, np.sqrt(2), 2.0])


def test_check_returns_neighbours_best_first(clustered, checker) -> None:
    (check,) = checker.check(clustered.id_space.embeddings[:1])
    assert check.neighbour_ids.shape == (10,)
    assert (np.diff(check.similarities) <= 1e-6).all()
    assert check.void_score == pytest.approx(float(void_scores(check.similarities[-1:])[0]))


def test_flag_policy_writes_void_proxies_unchanged(clustered, checker) -> None:
    proxies = np.vstack(
        [clustered.id_space.embeddings[:2], clustered.void_vectors(1, np.random.default_rng(7))]
    )
    decisions = checker.decide(proxies)
    assert [d.status for d in decisions] == ["ok", "ok", "void_flagged"]
    np.testing.assert_array_equal(decisions[2].proxy, proxies[2])
    assert "threshold" in decisions[2].reason


def test_knn_average_policy_replaces_void_proxy_by_weighted_neighbour_mean(
    clustered: ClusteredSpace,
) -> None:
    config = IndexConfig(kind="flat", k=5, void_policy="knn_average")
    checker = NeighbourChecker.build(clustered.id_space, config, tau=TAU)
    void = clustered.void_vectors(3, np.random.default_rng(8))
    decisions = checker.decide(void)
    space = clustered.id_space
    for decision in decisions:
        assert decision.status == "knn_fallback"
        check = decision.check
        neighbours = space.embeddings[space.rows_of(check.neighbour_ids)].astype(np.float64)
        weights = np.clip(check.similarities, 1e-6, None)
        weights = weights / weights.sum()
        direction = weights @ neighbours
        expected = (
            direction / np.linalg.norm(direction) * (weights @ np.linalg.norm(neighbours, axis=1))
        )
        np.testing.assert_allclose(decision.proxy, expected, rtol=1e-4, atol=1e-5)
    # The replacement is pulled towards the mature IDs: checked again, it scores far lower.
    rechecked = checker.check(np.stack([d.proxy for d in decisions]))
    for decision, check in zip(decisions, rechecked, strict=True):
        assert check.void_score < 0.8 * decision.check.void_score


def test_dead_letter_policy_returns_no_proxy_and_a_reason(clustered) -> None:
    config = IndexConfig(kind="flat", k=5, void_policy="dead_letter")
    checker = NeighbourChecker.build(clustered.id_space, config, tau=TAU)
    proxies = np.vstack(
        [clustered.id_space.embeddings[:1], clustered.void_vectors(1, np.random.default_rng(9))]
    )
    ok, dead = checker.decide(proxies)
    assert ok.status == "ok" and not ok.is_dead_letter
    assert dead.is_dead_letter and dead.proxy is None and "5-th nearest" in dead.reason
    with pytest.raises(ValueError, match="dead letter"):
        dead.record_fields()


def test_decision_fields_build_a_valid_proxy_record(clustered, checker) -> None:
    proxies = np.vstack(
        [clustered.id_space.embeddings[:1], clustered.void_vectors(1, np.random.default_rng(10))]
    )
    records = [
        ProxyRecord(
            item_id=i,
            model_version="m1",
            encoder_fingerprint="enc",
            id_space_fingerprint=clustered.id_space.fingerprint,
            computed_at=datetime.now(UTC),
            **decision.record_fields(),
        )
        for i, decision in enumerate(checker.decide(proxies))
    ]
    assert [r.status for r in records] == ["ok", "void_flagged"]
    assert records[1].void and records[1].neighbours.shape == (10,)


def test_checker_save_load_round_trip_keeps_threshold_and_decisions(
    clustered, checker, tmp_path
) -> None:
    checker.save(tmp_path)
    loaded = NeighbourChecker.load(tmp_path, clustered.id_space, IndexConfig(k=10))
    assert loaded.threshold == checker.threshold
    queries = np.vstack(
        [
            clustered.sample(20, np.random.default_rng(12)),
            clustered.void_vectors(5, np.random.default_rng(13)),
        ]
    )
    assert loaded.check(queries) == checker.check(queries)
    assert loaded.calibration["method"].startswith("leave-one-out")


def test_checker_load_refuses_another_id_space(clustered, checker, tmp_path) -> None:
    checker.save(tmp_path)
    other = make_clustered_space(num_items=500, seed=3).id_space
    with pytest.raises(IdSpaceMismatchError, match=other.fingerprint):
        NeighbourChecker.load(tmp_path, other, IndexConfig(k=10))


def test_checker_load_refuses_a_k_it_was_not_calibrated_for(clustered, checker, tmp_path) -> None:
    checker.save(tmp_path)
    with pytest.raises(IndexBuildError, match=r"set index\.k=10"):
        NeighbourChecker.load(tmp_path, clustered.id_space, IndexConfig(k=5))


def test_k_larger_than_the_mature_space_is_refused() -> None:
    space = IdSpace.from_arrays(np.arange(4), np.eye(4), np.array([30, 30, 30, 0]))
    with pytest.raises(IndexBuildError, match=r"lower index\.k"):
        NeighbourChecker.build(space, IndexConfig(k=5), tau=TAU)


def test_an_unknown_policy_is_refused(checker) -> None:
    with pytest.raises(ValueError, match="unknown void policy 'drop'"):
        NeighbourChecker(checker.index, checker.id_space, 0.5, 10, "drop")


@pytest.mark.parametrize(
    ("threshold", "message"),
    [("NaN", "non-finite"), ('"0.5"', "finite number"), ("7.5", r"\[0, 2\]"), ("-1", r"\[0, 2\]")],
)
def test_a_nan_or_out_of_range_threshold_is_refused_naming_the_file(
    clustered, checker, tmp_path, threshold, message
) -> None:
    """A NaN threshold would turn the void check off (every comparison with it is false)."""
    checker.save(tmp_path)
    path = tmp_path / "index.json"
    raw = json.loads(path.read_text())
    text = json.dumps({**raw, "void": {**raw["void"], "threshold": "PLACEHOLDER"}})
    path.write_text(text.replace('"PLACEHOLDER"', threshold))
    with pytest.raises(IdProxyError, match=message) as caught:
        NeighbourChecker.load(tmp_path, clustered.id_space, IndexConfig(k=10))
    assert str(path) in str(caught.value)


def test_an_index_file_changed_after_saving_is_refused_by_its_digest(
    clustered, checker, tmp_path
) -> None:
    checker.save(tmp_path)
    members = tmp_path / "index_members.safetensors"
    members.write_bytes(members.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(IdProxyError, match=r"index_members\.safetensors does not match the SHA"):
        NeighbourChecker.load(tmp_path, clustered.id_space, IndexConfig(k=10))
    (tmp_path / "index.json").write_text("{truncated")
    with pytest.raises(IdProxyError, match=r"index\.json cannot be read as JSON"):
        NeighbourChecker.load(tmp_path, clustered.id_space, IndexConfig(k=10))
