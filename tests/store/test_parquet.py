"""ParquetProxyLog: hive layout, row-group buffering, dedup on read, point-in-time reads."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from idproxy_stream.store.parquet import ParquetProxyLog, proxies_as_of, read_proxy_log

from .conftest import T0, make_record


def parquet_files(path) -> list:
    return sorted(path.rglob("*.parquet"))


def test_files_are_hive_partitioned_by_date_and_version(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=100) as log:
        log.upsert([make_record(1, "m1"), make_record(2, "exp/b=2", computed_s=86_400)])
    relative = [str(p.relative_to(tmp_path).parent) for p in parquet_files(tmp_path)]
    assert relative == [
        "dt=2026-03-01/model_version=m1",
        "dt=2026-03-02/model_version=exp%2Fb%3D2",
    ]
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("model_version").to_pylist()) == ["exp/b=2", "m1"]


def test_rows_are_buffered_to_row_group_size_then_written(tmp_path) -> None:
    log = ParquetProxyLog(tmp_path, row_group_size=5)
    log.upsert([make_record(i) for i in range(4)])
    assert parquet_files(tmp_path) == []
    log.upsert([make_record(4)])
    assert len(parquet_files(tmp_path)) == 1
    log.upsert([make_record(i) for i in range(5, 17)])  # 12 buffered rows -> one file
    files = parquet_files(tmp_path)
    assert len(files) == 2
    row_groups = sorted(
        [
            pq.ParquetFile(f).metadata.row_group(i).num_rows
            for i in range(pq.ParquetFile(f).num_row_groups)
        ]
        for f in files
    )
    assert row_groups == [[5], [5, 5, 2]]
    log.upsert([make_record(17)])
    log.close()  # writes the rest
    assert read_proxy_log(tmp_path).num_rows == 18
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_leftover_temporary_file_is_invisible_to_readers(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=1) as log:
        log.upsert([make_record(1)])
    partition = parquet_files(tmp_path)[0].parent
    (partition / ".part-crashed.parquet.tmp").write_bytes(b"half a file")
    assert read_proxy_log(tmp_path).num_rows == 1


def test_replays_are_logged_but_reads_return_the_newest(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=2) as log:
        log.upsert([make_record(1, offset=5, seed=1)])
        log.upsert([make_record(1, offset=6, seed=2), make_record(1, offset=5, seed=1)])
        log.upsert([make_record(1, offset=4, seed=3, computed_s=60)])
        assert log.get([1])[1] == make_record(1, offset=6, seed=2)
        assert [r.kafka_offset for r in log.scan()] == [6]
    assert read_proxy_log(tmp_path).num_rows == 4


def test_read_proxy_log_prunes_by_partition_filter(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=100) as log:
        log.upsert([make_record(i, "m1") for i in range(3)] + [make_record(9, "m2")])
    table = read_proxy_log(tmp_path, filter=ds.field("model_version") == "m2")
    assert table.column("item_id").to_pylist() == [9]


def test_proxies_as_of_returns_what_the_online_store_held_then(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=100) as log:
        log.upsert(
            [
                make_record(1, "m1", computed_s=0, seed=0),
                make_record(1, "m1", computed_s=100, seed=1, offset=3),
                make_record(1, "m2", computed_s=200, seed=2),
                make_record(2, "m1", computed_s=300, seed=3),
            ]
        )
    early = proxies_as_of(tmp_path, T0 + timedelta(seconds=150))
    assert early.column("item_id").to_pylist() == [1]
    assert early.column("kafka_offset").to_pylist() == [3]
    late = proxies_as_of(tmp_path, T0 + timedelta(seconds=1_000))
    pairs = zip(late["item_id"].to_pylist(), late["model_version"].to_pylist(), strict=True)
    assert sorted(pairs) == [(1, "m2"), (2, "m1")]
    only_m1 = proxies_as_of(tmp_path, T0 + timedelta(seconds=1_000), model_version="m1")
    assert sorted(only_m1["model_version"].to_pylist()) == ["m1", "m1"]


def test_delete_rewrites_files_without_the_items(tmp_path) -> None:
    with ParquetProxyLog(tmp_path, row_group_size=100) as log:
        log.upsert([make_record(i) for i in range(5)] + [make_record(1, offset=2)])
        assert log.delete([1, 3]) == 3
        assert sorted(log.get(range(5))) == [0, 2, 4]
        log.upsert([make_record(7)])
        assert log.delete([7]) == 1
    assert sorted(read_proxy_log(tmp_path)["item_id"].to_pylist()) == [0, 2, 4]
