"""IdSpace: fingerprint, validation, lookups and the safetensors + JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from idproxy_stream.index import IdSpace, IdSpaceError, id_space_fingerprint


def small_space(seed: int = 0) -> IdSpace:
    rng = np.random.default_rng(seed)
    return IdSpace.from_arrays(
        np.array([10, 3, 7, 42], dtype=np.int64),
        rng.normal(size=(4, 5)).astype(np.float32),
        np.array([0, 25, 19, 20]),
    )


def test_fingerprint_ignores_dtype_and_layout_but_not_values() -> None:
    space = small_space()
    same = id_space_fingerprint(
        space.item_ids.astype(np.int32), np.asfortranarray(space.embeddings.astype(np.float64))
    )
    assert same == space.fingerprint
    changed = space.embeddings.copy()
    changed[2, 3] += 1e-3
    assert id_space_fingerprint(space.item_ids, changed) != space.fingerprint
    assert id_space_fingerprint(space.item_ids[::-1], space.embeddings) != space.fingerprint


def test_mature_mask_counts_at_least_tau() -> None:
    assert small_space().mature_mask(20).tolist() == [False, True, False, True]


def test_rows_of_maps_ids_to_rows_and_unknown_to_minus_one() -> None:
    assert small_space().rows_of(np.array([42, 10, 5, 7])).tolist() == [3, 0, -1, 2]


def test_arrays_are_read_only() -> None:
    space = small_space()
    with pytest.raises(ValueError, match="read-only"):
        space.embeddings[0, 0] = 1.0


@pytest.mark.parametrize(
    ("item_ids", "embeddings", "counts", "message"),
    [
        ([1, 1], np.ones((2, 3)), [1, 1], "unique"),
        ([1, 2], np.array([[1.0, np.nan, 0.0], [1, 1, 1]]), [1, 1], "NaN"),
        ([1, 2], np.ones((3, 3)), [1, 1], "disagree"),
        ([1, 2], np.ones((2, 3)), [1, -1], ">= 0"),
    ],
)
def test_malformed_tables_are_refused(item_ids, embeddings, counts, message) -> None:
    with pytest.raises(IdSpaceError, match=message):
        IdSpace.from_arrays(np.array(item_ids), np.array(embeddings), np.array(counts))


def test_a_wrong_fingerprint_is_refused() -> None:
    space = small_space()
    with pytest.raises(IdSpaceError, match="from_arrays"):
        IdSpace(space.item_ids, space.embeddings, space.interaction_counts, "0" * 16)


def test_save_load_round_trip(tmp_path) -> None:
    space = small_space()
    space.save(tmp_path)
    loaded = IdSpace.load(tmp_path)
    assert loaded.fingerprint == space.fingerprint
    np.testing.assert_array_equal(loaded.item_ids, space.item_ids)
    np.testing.assert_array_equal(loaded.embeddings, space.embeddings)
    np.testing.assert_array_equal(loaded.interaction_counts, space.interaction_counts)
    assert json.loads((tmp_path / "id_space.json").read_text())["dim"] == 5


def test_load_refuses_a_table_that_does_not_match_its_manifest(tmp_path) -> None:
    small_space().save(tmp_path)
    tensors = load_file(str(tmp_path / "id_space.safetensors"))
    tensors["embeddings"] = tensors["embeddings"] * 2
    save_file(tensors, str(tmp_path / "id_space.safetensors"))
    with pytest.raises(IdSpaceError, match="does not match the fingerprint"):
        IdSpace.load(tmp_path)


def test_load_of_an_empty_directory_names_the_missing_files(tmp_path) -> None:
    with pytest.raises(IdSpaceError, match=r"id_space\.safetensors"):
        IdSpace.load(tmp_path)
