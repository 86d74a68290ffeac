"""Append-only offline log of proxies in Parquet, for training and point-in-time backtests.

Layout (hive partitions; values URI-encoded, so any model version name is a safe path)::

    <path>/dt=YYYY-MM-DD/model_version=<v>/part-<utc time>-<uuid>.parquet

``dt`` is the UTC date of ``computed_at``. ``upsert`` buffers records; at ``row_group_size``
buffered rows, on ``flush()`` and on ``close()`` each partition's rows are written as one new
file (row groups of ``row_group_size``), first under a hidden ``.tmp`` name and then renamed, so
a reader or a crash never sees half a file. Rows still in the buffer when the process dies are
lost: call ``flush()`` before committing the source offsets if the log must hold every record.

The log keeps every write, replays included. Reads deduplicate: ``get`` and ``scan`` return per
``(item_id, model_version)`` the row with the greatest order key
``(source_event_ts, kafka_offset, computed_at)``, as the online stores would hold. For point-in-
time questions use :func:`proxies_as_of`; for anything else :func:`read_proxy_log` returns the
raw rows as a ``pyarrow.Table`` (with ``dt`` and ``model_version`` columns).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from idproxy_stream.config import ParquetStoreConfig
from idproxy_stream.events import NO_EVENT_TS, NO_OFFSET, ProxyRecord, datetime_to_us
from idproxy_stream.store.base import (
    FeatureStore,
    StoreClosedError,
    StoreError,
    checked_item_ids,
    checked_records,
    newest_per_item,
)

logger = logging.getLogger(__name__)

TIMESTAMP = pa.timestamp("us", tz="UTC")
FILE_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("proxy", pa.list_(pa.float32())),
        ("encoder_fingerprint", pa.string()),
        ("id_space_fingerprint", pa.string()),
        ("computed_at", TIMESTAMP),
        ("source_event_ts", TIMESTAMP),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("neighbours", pa.list_(pa.int64())),
        ("neighbour_similarities", pa.list_(pa.float32())),
        ("void", pa.bool_()),
        ("void_score", pa.float64()),
        ("status", pa.string()),
    ]
)
PARTITION_SCHEMA = pa.schema([("dt", pa.string()), ("model_version", pa.string())])
LOG_SCHEMA = pa.schema(list(FILE_SCHEMA) + list(PARTITION_SCHEMA))


def _list_array(vectors: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    return pa.array(vectors, type=pa.list_(value_type))


def _timestamps(values: list[int | None]) -> pa.Array:
    return pa.array(values, type=pa.int64()).cast(TIMESTAMP)


def records_to_table(records: list[ProxyRecord]) -> pa.Table:
    """``records`` as a table of :data:`FILE_SCHEMA` (no partition columns)."""
    columns = {
        "item_id": pa.array([r.item_id for r in records], type=pa.int64()),
        "proxy": _list_array([r.proxy for r in records], pa.float32()),
        "encoder_fingerprint": pa.array([r.encoder_fingerprint for r in records], pa.string()),
        "id_space_fingerprint": pa.array([r.id_space_fingerprint for r in records], pa.string()),
        "computed_at": _timestamps([datetime_to_us(r.computed_at) for r in records]),
        "source_event_ts": _timestamps(
            [
                None if r.source_event_ts is None else datetime_to_us(r.source_event_ts)
                for r in records
            ]
        ),
        "kafka_topic": pa.array([r.kafka_topic for r in records], pa.string()),
        "kafka_partition": pa.array([r.kafka_partition for r in records], pa.int32()),
        "kafka_offset": pa.array([r.kafka_offset for r in records], pa.int64()),
        "neighbours": _list_array([r.neighbours for r in records], pa.int64()),
        "neighbour_similarities": _list_array(
            [r.neighbour_similarities for r in records], pa.float32()
        ),
        "void": pa.array([r.void for r in records], pa.bool_()),
        "void_score": pa.array([r.void_score for r in records], pa.float64()),
        "status": pa.array([r.status for r in records], pa.string()),
    }
    return pa.table(columns, schema=FILE_SCHEMA)


def table_to_records(table: pa.Table) -> list[ProxyRecord]:
    """Rows of a log table (:data:`LOG_SCHEMA`) as :class:`ProxyRecord` objects."""
    records = []
    for row in table.select([*FILE_SCHEMA.names, "model_version"]).to_pylist():
        records.append(ProxyRecord(**row))
    return records


def _order_arrays(table: pa.Table) -> tuple[np.ndarray, ...]:
    """(item_id, version code, order_event_us, order_offset, computed_at_us) as numpy arrays."""
    item_ids = table["item_id"].to_numpy()
    versions = np.asarray(table["model_version"].to_pylist(), dtype=object)
    _, version_codes = np.unique(versions.astype(str), return_inverse=True)
    events = pc.fill_null(table["source_event_ts"].cast(pa.int64()), NO_EVENT_TS).to_numpy()
    offsets = pc.fill_null(table["kafka_offset"], NO_OFFSET).to_numpy()
    computed = table["computed_at"].cast(pa.int64()).to_numpy()
    return item_ids, version_codes, events, offsets, computed


def _last_of_groups(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """Positions (in sorted order) of the last row of each run of equal ``sorted_keys``."""
    size = sorted_keys[0].shape[0]
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    boundary = np.zeros(size, dtype=bool)
    boundary[-1] = True
    for key in sorted_keys:
        boundary[:-1] |= key[1:] != key[:-1]
    return np.flatnonzero(boundary)


def newest_rows(table: pa.Table, per_item: bool = False) -> pa.Table:
    """Deduplicated log rows: per (item_id, model_version) the greatest order key.

    With ``per_item`` additionally only each item's newest version (greatest computed_at, then
    order key, then version name), as ``FeatureStore.get(..., model_version=None)``.
    """
    if table.num_rows == 0:
        return table
    item_ids, versions, events, offsets, computed = _order_arrays(table)
    order = np.lexsort((computed, offsets, events, versions, item_ids))
    keep = order[_last_of_groups([item_ids[order], versions[order]])]
    if per_item:
        kept = (item_ids[keep], versions[keep], events[keep], offsets[keep], computed[keep])
        by_item = np.lexsort((kept[1], kept[3], kept[2], kept[4], kept[0]))
        keep = keep[by_item[_last_of_groups([kept[0][by_item]])]]
    return table.take(pa.array(np.sort(keep)))


def _open_dataset(path: Path) -> ds.Dataset:
    partitioning = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
    return ds.dataset(path, format="parquet", partitioning=partitioning, schema=LOG_SCHEMA)


def read_proxy_log(
    path: str | Path,
    filter: ds.Expression | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Every logged row (replays included) matching ``filter``, e.g.
    ``ds.field("model_version") == "v3"`` (partition pruning) or
    ``ds.field("computed_at") <= pa.scalar(t, TIMESTAMP)``.
    """
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"no proxy log at {path}: check store.parquet.path")
    return _open_dataset(path).to_table(filter=filter, columns=columns)


def proxies_as_of(path: str | Path, as_of: datetime, model_version: str | None = None) -> pa.Table:
    """Point in time: each item's proxy as the online store held it at ``as_of``.

    Rows computed at or before ``as_of`` (of ``model_version`` when given), deduplicated by
    order key, then the newest version per item.
    """
    condition = ds.field("computed_at") <= pa.scalar(as_of.astimezone(UTC), TIMESTAMP)
    if model_version is not None:
        condition = condition & (ds.field("model_version") == model_version)
    return newest_rows(read_proxy_log(path, filter=condition), per_item=True)


class ParquetProxyLog(FeatureStore):
    """The offline log as a :class:`FeatureStore` (reads scan the files: use it offline)."""

    name = "parquet"

    def __init__(self, path: str | Path, row_group_size: int = 10_000) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.row_group_size = row_group_size
        self._buffer: list[ProxyRecord] = []
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: ParquetStoreConfig) -> ParquetProxyLog:
        return cls(config.path, config.row_group_size)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"Parquet proxy log at {self.path} is closed")

    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        """Append ``records`` (all of them: the log keeps replays); returns how many."""
        listed = checked_records(records)
        with self._lock:
            self._check_open()
            self._buffer.extend(listed)
            if len(self._buffer) >= self.row_group_size:
                self._write_buffer()
        return len(listed)

    def flush(self) -> None:
        with self._lock:
            self._check_open()
            self._write_buffer()

    def _partition_dir(self, day: str, model_version: str) -> Path:
        return self.path / f"dt={day}" / f"model_version={quote(model_version, safe='')}"

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        partitions: dict[tuple[date, str], list[ProxyRecord]] = defaultdict(list)
        for record in self._buffer:
            partitions[(record.computed_at.date(), record.model_version)].append(record)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        for (day, version), records in partitions.items():
            directory = self._partition_dir(day.isoformat(), version)
            directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
            self._write_file(records_to_table(records), directory / name)
        logger.debug("wrote %d records to %d log partitions", len(self._buffer), len(partitions))
        self._buffer = []

    def _write_file(self, table: pa.Table, target: Path) -> None:
        temporary = target.with_name(f".{target.name}.tmp")
        pq.write_table(table, temporary, row_group_size=self.row_group_size)
        os.replace(temporary, target)

    def _read(self, condition: ds.Expression | None) -> pa.Table:
        self.flush()
        return _open_dataset(self.path).to_table(filter=condition)

    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        ids = checked_item_ids(item_ids)
        if not ids:
            return {}
        condition = ds.field("item_id").isin(ids)
        if model_version is not None:
            condition = condition & (ds.field("model_version") == model_version)
        return newest_per_item(table_to_records(newest_rows(self._read(condition))))

    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        """Deduplicated rows; the matching part of the log is read into memory at once."""
        condition = None
        if model_version is not None:
            condition = ds.field("model_version") == model_version
        table = newest_rows(self._read(condition))
        if since is not None:
            # Filter after deduplication: a newer row computed before ``since`` still hides
            # older ones.
            table = table.filter(
                pc.greater_equal(table["computed_at"], pa.scalar(since.astimezone(UTC), TIMESTAMP))
            )
        for start in range(0, table.num_rows, batch_size):
            yield from table_to_records(table.slice(start, batch_size))

    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        """Rewrite the files that hold the items' rows without them; returns rows removed.

        A maintenance operation (e.g. an erasure request): it reads and rewrites every file of
        the affected partitions.
        """
        ids = pa.array(checked_item_ids(item_ids), type=pa.int64())
        self.flush()
        dataset = _open_dataset(self.path)
        condition = None if model_version is None else ds.field("model_version") == model_version
        removed = 0
        with self._lock:
            for fragment in dataset.get_fragments(filter=condition):
                table = pq.read_table(fragment.path)
                keep = pc.invert(pc.is_in(table["item_id"], value_set=ids))
                kept = table.filter(keep)
                if kept.num_rows == table.num_rows:
                    continue
                removed += table.num_rows - kept.num_rows
                if kept.num_rows == 0:
                    os.remove(fragment.path)
                else:
                    self._write_file(kept, Path(fragment.path))
        return removed

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_buffer()
                self._closed = True
