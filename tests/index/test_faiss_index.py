"""IdIndex: exact Flat search, HNSW/IVF agreement with Flat, persistence and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from idproxy_stream.config import IndexConfig
from idproxy_stream.index import IdIndex, IdSpace, IdSpaceMismatchError, IndexBuildError
from idproxy_stream.index.faiss_index import choose_kind

from .conftest import TAU, ClusteredSpace


def brute_force_top_k(space: IdSpace, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    mature = np.flatnonzero(space.mature_mask(TAU))
    table = space.embeddings[mature].astype(np.float64)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    cosine = unit @ table.T
    order = np.argsort(-cosine, axis=1)[:, :k]
    return space.item_ids[mature][order], np.take_along_axis(cosine, order, axis=1)


def test_flat_search_matches_brute_force_cosine_over_mature_ids(clustered: ClusteredSpace) -> None:
    rng = np.random.default_rng(1)
    queries = clustered.sample(50, rng)
    index = IdIndex.build(clustered.id_space, IndexConfig(kind="flat"), tau=TAU)
    item_ids, similarities, rows = index.search(queries, 5)
    expected_ids, expected_sims = brute_force_top_k(clustered.id_space, queries, 5)
    np.testing.assert_array_equal(item_ids, expected_ids)
    np.testing.assert_allclose(similarities, expected_sims, atol=1e-5)
    np.testing.assert_array_equal(clustered.id_space.item_ids[rows], item_ids)


def test_only_mature_items_are_indexed(clustered: ClusteredSpace) -> None:
    space = clustered.id_space
    index = IdIndex.build(space, IndexConfig(kind="flat"), tau=TAU)
    immature = space.embeddings[~space.mature_mask(TAU)][:20]
    item_ids, _, _ = index.search(immature, 3)
    assert index.num_members == int(space.mature_mask(TAU).sum())
    assert set(item_ids.ravel()) <= set(space.item_ids[space.mature_mask(TAU)])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_return_flat_top1_on_clustered_data(
    clustered: ClusteredSpace, kind: str
) -> None:
    rng = np.random.default_rng(2)
    queries = clustered.sample(300, rng)
    config = IndexConfig(kind=kind, ivf_nlist=16, ivf_nprobe=8)
    flat_ids, _, _ = IdIndex.build(clustered.id_space, IndexConfig(kind="flat"), TAU).search(
        queries, 1
    )
    approx = IdIndex.build(clustered.id_space, config, TAU)
    approx_ids, _, _ = approx.search(queries, 1)
    assert approx.kind == kind
    assert (approx_ids[:, 0] == flat_ids[:, 0]).mean() >= 0.98


def test_auto_kind_is_flat_up_to_flat_max_size_then_large_kind() -> None:
    config = IndexConfig(kind="auto", flat_max_size=100, large_kind="ivf")
    assert choose_kind(config, 100) == "flat"
    assert choose_kind(config, 101) == "ivf"
    assert choose_kind(IndexConfig(kind="hnsw"), 5) == "hnsw"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip_gives_identical_results(
    clustered: ClusteredSpace, kind: str, tmp_path
) -> None:
    config = IndexConfig(kind=kind, ivf_nlist=16, ivf_nprobe=3, hnsw_ef_search=20)
    index = IdIndex.build(clustered.id_space, config, TAU)
    queries = clustered.sample(100, np.random.default_rng(3))
    index.save(tmp_path)
    loaded = IdIndex.load(tmp_path, expected_fingerprint=clustered.id_space.fingerprint)
    assert (loaded.kind, loaded.ef_search, loaded.nprobe) == (kind, 20, 3)
    for before, after in zip(index.search(queries, 4), loaded.search(queries, 4), strict=True):
        np.testing.assert_array_equal(before, after)
    assert not list(tmp_path.glob("*.pkl"))


def test_load_with_another_fingerprint_names_both_and_what_to_rebuild(
    clustered: ClusteredSpace, tmp_path
) -> None:
    IdIndex.build(clustered.id_space, IndexConfig(kind="flat"), TAU).save(tmp_path)
    with pytest.raises(IdSpaceMismatchError) as raised:
        IdIndex.load(tmp_path, expected_fingerprint="feedfacefeedface")
    message = str(raised.value)
    assert clustered.id_space.fingerprint in message
    assert "feedfacefeedface" in message
    assert "rebuild" in message


def test_k_above_member_count_pads_with_minus_one() -> None:
    space = IdSpace.from_arrays(np.array([5, 6, 7]), np.eye(3), np.array([30, 30, 0]))
    item_ids, similarities, rows = IdIndex.build(space, IndexConfig(kind="flat"), TAU).search(
        np.array([[1.0, 0.1, 0.0]]), 3
    )
    assert item_ids.tolist() == [[5, 6, -1]]
    assert rows.tolist() == [[0, 1, -1]]
    assert similarities[0, 2] == -1.0


def test_bad_queries_are_refused_with_what_to_fix(clustered: ClusteredSpace) -> None:
    index = IdIndex.build(clustered.id_space, IndexConfig(kind="flat"), TAU)
    bad = np.ones((3, clustered.dim), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[1\] hold NaN"):
        index.search(bad, 2)
    with pytest.raises(ValueError, match="dimension 4"):
        index.search(np.ones((2, 4)), 2)


def test_empty_mature_space_is_refused() -> None:
    space = IdSpace.from_arrays(np.array([1, 2]), np.eye(2), np.array([1, 2]))
    with pytest.raises(IndexBuildError, match="lower the maturity threshold"):
        IdIndex.build(space, IndexConfig(), tau=TAU)
