"""ProxyReader: the switch-over policy from fallback to proxy to learned ID embedding."""

from __future__ import annotations

import numpy as np
import pytest

from idproxy_stream.config import ReaderConfig
from idproxy_stream.index import IdSpace
from idproxy_stream.store.reader import ProxyReader
from idproxy_stream.store.sqlite import SqliteStore

from .conftest import DIM, make_record

THRESHOLD = 20


@pytest.fixture
def id_space() -> IdSpace:
    rng = np.random.default_rng(0)
    # items 100..104 with 0, 5, 19, 20, 50 training interactions
    return IdSpace.from_arrays(
        np.arange(100, 105), rng.normal(size=(5, DIM)), np.array([0, 5, 19, 20, 50])
    )


@pytest.fixture
def store(tmp_path, id_space):
    with SqliteStore(tmp_path / "proxies.sqlite") as opened:
        opened.upsert(
            [
                make_record(i, "m1", id_space_fingerprint=id_space.fingerprint)
                for i in (101, 103, 200)
            ]
        )
        yield opened


def test_each_item_gets_id_proxy_or_fallback_by_maturity(store, id_space) -> None:
    reader = ProxyReader(store, id_space, ReaderConfig(maturity_threshold=THRESHOLD))
    result = reader.get([103, 104, 101, 200, 102, 300])
    assert result.source.tolist() == ["id", "id", "proxy", "proxy", "fallback", "fallback"]
    np.testing.assert_array_equal(result.embeddings[0], id_space.embeddings[3])
    np.testing.assert_array_equal(result.embeddings[2], store.get([101])[101].proxy)
    mean_of_mature = id_space.embeddings[[3, 4]].mean(axis=0)
    np.testing.assert_allclose(result.embeddings[4], mean_of_mature, rtol=1e-6)
    assert result.model_version.tolist() == [None, None, "m1", "m1", None, None]
    assert result.embeddings.shape == (6, DIM) and result.embeddings.dtype == np.float32


def test_zeros_fallback(store, id_space) -> None:
    reader = ProxyReader(store, id_space, ReaderConfig(fallback="zeros"))
    assert not reader.get([300]).embeddings.any()


def test_live_counts_switch_an_item_to_its_id_once_it_matures(store, id_space) -> None:
    live = {101: 25, 104: 3, 999: 100}
    result = ProxyReader(store, id_space, ReaderConfig(), live_counts=live).get([101, 104, 999])
    # 101 matured live; 104 counted down live to 3 uses its proxy (none) -> fallback;
    # 999 has no ID row to use whatever its count.
    assert result.source.tolist() == ["id", "fallback", "fallback"]


def test_serving_model_version_picks_that_version_only(store, id_space) -> None:
    store.upsert(
        [make_record(101, "m2", computed_s=60, seed=9, id_space_fingerprint=id_space.fingerprint)]
    )
    newest = ProxyReader(store, id_space, ReaderConfig()).get([101, 200])
    assert newest.model_version.tolist() == ["m2", "m1"]
    pinned = ProxyReader(store, id_space, ReaderConfig(serving_model_version="m1")).get([101])
    np.testing.assert_array_equal(pinned.embeddings[0], store.get([101], "m1")[101].proxy)
    only_m2 = ProxyReader(store, id_space, ReaderConfig(serving_model_version="m2")).get([200])
    assert only_m2.source.tolist() == ["fallback"]


def test_proxies_of_another_id_space_are_not_served(store, id_space, caplog) -> None:
    store.upsert([make_record(102, id_space_fingerprint="someothertable")])
    result = ProxyReader(store, id_space, ReaderConfig()).get([102])
    assert result.source.tolist() == ["fallback"]
    assert "another ID space" in caplog.text


def test_duplicate_ids_get_one_row_each(store, id_space) -> None:
    result = ProxyReader(store, id_space, ReaderConfig()).get([101, 101])
    assert result.source.tolist() == ["proxy", "proxy"]
