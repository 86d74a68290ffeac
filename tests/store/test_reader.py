"""ProxyReader: the switch-over policy from fallback to proxy to learned ID embedding."""

from __future__ import annotations

import numpy as np
import pytest

from idproxy_stream.config import ReaderConfig
from idproxy_stream.encoders.contract import ContentContract
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.index import IdSpace
from idproxy_stream.proxy.model import ProxyManifest, ProxyModelSpec
from idproxy_stream.store.reader import ProxyReader, serving_manifests
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


def manifest(version: str, encoder: str, with_contract: bool) -> ProxyManifest:
    spec = ProxyModelSpec(encoder_dim=4, id_dim=DIM, clusters=LayerClusters((0,), 2))
    content = ContentContract({"encoder.kind": "text", "encoder.text_fields": ["title"]})
    return ProxyManifest(
        version, encoder, "idspace0", spec, content=content if with_contract else None
    )


def test_proxies_outside_their_models_content_contract_are_not_served(tmp_path, id_space):
    with SqliteStore(tmp_path / "contract.sqlite") as store:
        fingerprint = id_space.fingerprint
        store.upsert(
            [
                make_record(i, v, id_space_fingerprint=fingerprint)
                for i, v in [(101, "ok"), (102, "old"), (100, "other"), (200, "unknown")]
            ]
        )
        manifests = {
            "ok": manifest("ok", "enc0", with_contract=True),
            "old": manifest("old", "enc0", with_contract=False),  # trained before contracts
            "other": manifest("other", "another-encoder", with_contract=True),
        }
        reader = ProxyReader(store, id_space, ReaderConfig(), manifests=manifests)
        assert reader.get([101, 102, 100, 200]).source.tolist() == [
            "proxy",
            "fallback",
            "fallback",
            "fallback",
        ]
        unchecked = ProxyReader(store, id_space, ReaderConfig()).get([101, 102, 100, 200])
        assert unchecked.source.tolist() == ["proxy"] * 4


def test_serving_manifests_reads_every_version_of_a_registry(tmp_path):
    from idproxy_stream.proxy.model import ProxyModel
    from idproxy_stream.proxy.registry import publish_version

    for version in ("a", "b"):
        published = manifest(version, "enc0", with_contract=True)
        publish_version(ProxyModel(published.spec), published, tmp_path)
    manifests = serving_manifests(tmp_path)
    assert sorted(manifests) == ["a", "b"]
    assert manifests["b"].content == manifest("b", "enc0", True).content
