"""The FeatureStore contract, proved on every backend against real storage."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest

from idproxy_stream.config import StoreConfig
from idproxy_stream.store import STORE_BACKENDS, StoreClosedError, StoreError, build_store
from idproxy_stream.store.base import store_class
from idproxy_stream.store.composite import CompositeStore
from idproxy_stream.store.parquet import ParquetProxyLog
from idproxy_stream.store.sqlite import SqliteStore

from .conftest import T0, make_record


def test_upsert_then_get_returns_equal_records(store) -> None:
    records = [make_record(i, offset=i, event_s=-5) for i in (1, 2, 2**62)]
    store.upsert(records)
    got = store.get([2**62, 1, 2, 404])
    assert set(got) == {1, 2, 2**62}
    for record in records:
        assert got[record.item_id] == record


def test_replaying_the_same_event_keeps_one_row(store) -> None:
    record = make_record(7, offset=100, event_s=1)
    store.upsert([record])
    store.upsert([record, record])
    assert [r.item_id for r in store.scan()] == [7]
    assert store.get([7])[7] == record


def test_out_of_order_events_never_move_a_row_back(store) -> None:
    newer = make_record(5, event_s=10, offset=2, seed=1)
    older = make_record(5, event_s=5, offset=9, seed=2, computed_s=99)  # computed later
    store.upsert([newer])
    store.upsert([older])
    assert store.get([5])[5] == newer


def test_order_key_is_event_time_then_offset_then_computed_at(store) -> None:
    # Every permutation of writes ends at the greatest (source_event_ts, offset, computed_at).
    candidates = [
        make_record(9, event_s=None, offset=None, computed_s=50, seed=0),
        make_record(9, event_s=1, offset=None, computed_s=0, seed=1),
        make_record(9, event_s=1, offset=3, computed_s=0, seed=2),
        make_record(9, event_s=1, offset=3, computed_s=7, seed=3),
        make_record(9, event_s=1, offset=2, computed_s=60, seed=4),
    ]
    winner = candidates[3]
    for permutation in itertools.islice(itertools.permutations(candidates), 0, 120, 17):
        for record in permutation:
            store.upsert([record])
        assert store.get([9])[9] == winner, [r.to_dict()["proxy"][0] for r in permutation]
        store.delete([9])


def test_within_one_batch_the_newest_of_duplicates_wins(store) -> None:
    newest = make_record(3, offset=8, seed=1)
    store.upsert([make_record(3, offset=1, seed=0), newest, make_record(3, offset=4, seed=2)])
    assert store.get([3])[3] == newest


def test_get_without_version_returns_the_newest_computed_version(store) -> None:
    store.upsert([make_record(1, "m1", computed_s=10), make_record(1, "m2", computed_s=20)])
    store.upsert([make_record(2, "m1", computed_s=30), make_record(2, "m2", computed_s=20)])
    newest = store.get([1, 2])
    assert (newest[1].model_version, newest[2].model_version) == ("m2", "m1")
    assert store.get([1, 2], model_version="m1")[1].model_version == "m1"
    assert store.get([1], model_version="m3") == {}


def test_scan_filters_by_version_and_since_and_yields_each_key_once(store) -> None:
    store.upsert([make_record(i, "m1", computed_s=i) for i in range(10)])
    store.upsert([make_record(i, "m2", computed_s=100 + i) for i in range(3)])
    store.upsert([make_record(0, "m1", computed_s=0)])  # replay
    everything = sorted((r.item_id, r.model_version) for r in store.scan(batch_size=3))
    assert everything == sorted([(i, "m1") for i in range(10)] + [(i, "m2") for i in range(3)])
    recent = store.scan("m1", since=T0 + timedelta(seconds=6), batch_size=2)
    assert sorted(r.item_id for r in recent) == [6, 7, 8, 9]


def test_delete_removes_one_version_or_all(store) -> None:
    store.upsert([make_record(1, "m1"), make_record(1, "m2"), make_record(2, "m1")])
    store.delete([1], model_version="m1")
    assert store.get([1], "m1") == {} and 1 in store.get([1], "m2")
    store.delete([1, 2])
    assert store.get([1, 2]) == {}


def test_vectors_round_trip_bit_exactly(store) -> None:
    record = make_record(4, dim=64)
    store.upsert([record])
    np.testing.assert_array_equal(store.get([4])[4].proxy, record.proxy)
    assert store.get([4])[4].proxy.dtype == np.float32


def test_non_records_are_refused(store) -> None:
    with pytest.raises(TypeError, match="ProxyRecord"):
        store.upsert([{"item_id": 1}])


def test_a_closed_store_refuses_work(store) -> None:
    store.close()
    with pytest.raises(StoreClosedError):
        store.upsert([make_record(1)])


def test_registry_names_every_backend() -> None:
    assert set(STORE_BACKENDS) == {"sqlite", "redis", "parquet"}
    assert store_class("sqlite") is SqliteStore
    with pytest.raises(StoreError, match="choose one of"):
        store_class("cassandra")


def test_build_store_returns_the_online_store_alone_without_offline_log(tmp_path) -> None:
    config = StoreConfig.model_validate({"sqlite": {"path": tmp_path / "a.sqlite"}})
    with build_store(config) as store:
        assert isinstance(store, SqliteStore)


def test_build_store_with_offline_log_writes_both(tmp_path) -> None:
    config = StoreConfig.model_validate(
        {
            "online": "sqlite",
            "offline_log": True,
            "sqlite": {"path": tmp_path / "a.sqlite"},
            "parquet": {"path": tmp_path / "log", "row_group_size": 100},
        }
    )
    with build_store(config) as store:
        assert isinstance(store, CompositeStore)
        store.upsert([make_record(1), make_record(2)])
    with SqliteStore(tmp_path / "a.sqlite") as online:
        assert set(online.get([1, 2])) == {1, 2}
    with ParquetProxyLog(tmp_path / "log") as log:  # close() flushed the buffer
        assert set(log.get([1, 2])) == {1, 2}
