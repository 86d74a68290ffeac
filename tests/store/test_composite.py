"""CompositeStore: online store and offline log written together, reads from the online store."""

from __future__ import annotations

from idproxy_stream.store.composite import CompositeStore
from idproxy_stream.store.parquet import ParquetProxyLog, read_proxy_log
from idproxy_stream.store.sqlite import SqliteStore

from .conftest import make_record


def test_log_keeps_every_write_while_online_keeps_the_newest(tmp_path) -> None:
    online = SqliteStore(tmp_path / "online.sqlite")
    log = ParquetProxyLog(tmp_path / "log", row_group_size=1_000)
    with CompositeStore(online, log) as store:
        assert store.upsert([make_record(1, offset=1), make_record(2, offset=1)]) == 2
        assert store.upsert([make_record(1, offset=1)]) == 0  # a replay changes nothing online
        assert store.upsert([make_record(1, offset=2, seed=5)]) == 1
        assert store.get([1])[1] == make_record(1, offset=2, seed=5)
        store.flush()
        assert read_proxy_log(tmp_path / "log").num_rows == 4
        assert [r.item_id for r in store.scan()] == [1, 2]


def test_delete_reaches_both_sides(tmp_path) -> None:
    online = SqliteStore(tmp_path / "online.sqlite")
    log = ParquetProxyLog(tmp_path / "log", row_group_size=1_000)
    with CompositeStore(online, log) as store:
        store.upsert([make_record(1), make_record(2)])
        assert store.delete([1]) == 1
        assert set(store.get([1, 2])) == {2}
        assert read_proxy_log(tmp_path / "log").column("item_id").to_pylist() == [2]
