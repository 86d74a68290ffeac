"""Embedded feature store on SQLite (stdlib ``sqlite3``): the default online store.

One table ``proxies`` keyed by ``(item_id, model_version)`` (``WITHOUT ROWID``); vectors are
little-endian float32 blobs with their ``dim``. Upserts run as one ``executemany`` in one
``BEGIN IMMEDIATE`` transaction of ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the new
order key ``(order_event_us, order_offset, computed_at_us)`` is greater than the stored one.

Durability and concurrency: WAL journal, so one writer and any number of readers (other
connections, threads or processes: open another :class:`SqliteStore` on the same file) run
side by side and readers see every committed upsert. ``synchronous=FULL`` (default) fsyncs the
WAL at each commit, so a returned ``upsert`` survives a process kill and a power loss;
``NORMAL`` survives a process kill but may lose the last commits on power loss.
One store object may be shared by threads: a lock serialises its connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from idproxy_stream.config import SqliteStoreConfig
from idproxy_stream.events import ProxyRecord, datetime_to_us, us_to_datetime
from idproxy_stream.store.base import (
    FeatureStore,
    StoreClosedError,
    StoreError,
    checked_item_ids,
    checked_records,
    newest_per_item,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# SQLite's default limit on bound parameters is 32766 (3.32+); stay far below it.
IDS_PER_QUERY = 500

COLUMNS = (
    "item_id",
    "model_version",
    "dim",
    "proxy",
    "encoder_fingerprint",
    "id_space_fingerprint",
    "computed_at_us",
    "source_event_us",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "neighbours",
    "neighbour_similarities",
    "void",
    "void_score",
    "status",
    "order_event_us",
    "order_offset",
)
SELECT_COLUMNS = ", ".join(COLUMNS)

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS proxies (
    item_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    proxy BLOB NOT NULL,
    encoder_fingerprint TEXT NOT NULL,
    id_space_fingerprint TEXT NOT NULL,
    computed_at_us INTEGER NOT NULL,
    source_event_us INTEGER,
    kafka_topic TEXT,
    kafka_partition INTEGER,
    kafka_offset INTEGER,
    neighbours BLOB NOT NULL,
    neighbour_similarities BLOB NOT NULL,
    void INTEGER NOT NULL,
    void_score REAL,
    status TEXT NOT NULL,
    order_event_us INTEGER NOT NULL,
    order_offset INTEGER NOT NULL,
    PRIMARY KEY (item_id, model_version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS proxies_by_version ON proxies (model_version, item_id);
"""

UPSERT = f"""
INSERT INTO proxies ({SELECT_COLUMNS}) VALUES ({", ".join("?" for _ in COLUMNS)})
ON CONFLICT (item_id, model_version) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in COLUMNS[2:])}
WHERE (excluded.order_event_us, excluded.order_offset, excluded.computed_at_us)
    > (proxies.order_event_us, proxies.order_offset, proxies.computed_at_us)
"""


def record_to_row(record: ProxyRecord) -> tuple:
    """The ``COLUMNS`` values of ``record`` (vectors as little-endian blobs)."""
    order_event_us, order_offset, computed_at_us = record.order_key()
    return (
        record.item_id,
        record.model_version,
        record.dim,
        record.proxy.astype("<f4", copy=False).tobytes(),
        record.encoder_fingerprint,
        record.id_space_fingerprint,
        computed_at_us,
        None if record.source_event_ts is None else order_event_us,
        record.kafka_topic,
        record.kafka_partition,
        record.kafka_offset,
        record.neighbours.astype("<i8", copy=False).tobytes(),
        record.neighbour_similarities.astype("<f4", copy=False).tobytes(),
        int(record.void),
        record.void_score,
        record.status,
        order_event_us,
        order_offset,
    )


def row_to_record(row: tuple) -> ProxyRecord:
    """Inverse of :func:`record_to_row`."""
    values = dict(zip(COLUMNS, row, strict=True))
    return ProxyRecord(
        item_id=values["item_id"],
        proxy=np.frombuffer(values["proxy"], dtype="<f4"),
        model_version=values["model_version"],
        encoder_fingerprint=values["encoder_fingerprint"],
        id_space_fingerprint=values["id_space_fingerprint"],
        computed_at=us_to_datetime(values["computed_at_us"]),
        source_event_ts=None
        if values["source_event_us"] is None
        else us_to_datetime(values["source_event_us"]),
        kafka_topic=values["kafka_topic"],
        kafka_partition=values["kafka_partition"],
        kafka_offset=values["kafka_offset"],
        neighbours=np.frombuffer(values["neighbours"], dtype="<i8"),
        neighbour_similarities=np.frombuffer(values["neighbour_similarities"], dtype="<f4"),
        void=bool(values["void"]),
        void_score=values["void_score"],
        status=values["status"],
    )


class SqliteStore(FeatureStore):
    """Feature store in one SQLite file (see the module docstring for the guarantees)."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        busy_timeout_ms: int = 5_000,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
                check_same_thread=False,  # guarded by self._lock
            )
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot open SQLite store {self.path}: {error}; check the path and permissions"
            ) from error
        self._connection: sqlite3.Connection | None = connection
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(
                f"SQLite store {self.path} could not switch to WAL (journal_mode={mode}); "
                "use a local file system that supports shared memory"
            )
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        self._create_schema(connection)

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(
                f"SQLite store {self.path} has schema version {version}; this version of "
                f"idproxy_stream reads {SCHEMA_VERSION}: point store.sqlite.path at a new file"
            )
        if version == 0:
            connection.executescript(
                f"BEGIN IMMEDIATE; {CREATE_TABLE} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )

    @classmethod
    def from_config(cls, config: SqliteStoreConfig) -> SqliteStore:
        return cls(config.path, config.busy_timeout_ms, config.synchronous)

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreClosedError(f"SQLite store {self.path} is closed")
        return self._connection

    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        rows = [record_to_row(record) for record in checked_records(records)]
        if not rows:
            return 0
        with self._lock:
            connection = self._open_connection()
            before = connection.total_changes
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(UPSERT, rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return connection.total_changes - before

    def _select(self, sql: str, parameters: Iterable) -> list[tuple]:
        with self._lock:
            return self._open_connection().execute(sql, tuple(parameters)).fetchall()

    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        ids = checked_item_ids(item_ids)
        records: list[ProxyRecord] = []
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            placeholders = ",".join("?" * len(chunk))
            sql = f"SELECT {SELECT_COLUMNS} FROM proxies WHERE item_id IN ({placeholders})"
            parameters: list = list(chunk)
            if model_version is not None:
                sql += " AND model_version = ?"
                parameters.append(model_version)
            records.extend(row_to_record(row) for row in self._select(sql, parameters))
        return newest_per_item(records)

    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        # Keyset pagination: each page is its own short read, so a slow consumer never holds a
        # read transaction open against the writer.
        conditions, parameters = [], []
        if model_version is not None:
            conditions.append("model_version = ?")
            parameters.append(model_version)
        if since is not None:
            conditions.append("computed_at_us >= ?")
            parameters.append(datetime_to_us(since))
        last_key: tuple[int, str] | None = None
        while True:
            page_conditions = list(conditions)
            page_parameters = list(parameters)
            if last_key is not None:
                page_conditions.append("(item_id, model_version) > (?, ?)")
                page_parameters.extend(last_key)
            where = f"WHERE {' AND '.join(page_conditions)}" if page_conditions else ""
            rows = self._select(
                f"SELECT {SELECT_COLUMNS} FROM proxies {where} "
                f"ORDER BY item_id, model_version LIMIT {int(batch_size)}",
                page_parameters,
            )
            for row in rows:
                yield row_to_record(row)
            if len(rows) < batch_size:
                return
            last_key = (rows[-1][0], rows[-1][1])

    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        ids = checked_item_ids(item_ids)
        with self._lock:
            connection = self._open_connection()
            before = connection.total_changes
            connection.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), IDS_PER_QUERY):
                    chunk = ids[start : start + IDS_PER_QUERY]
                    sql = f"DELETE FROM proxies WHERE item_id IN ({','.join('?' * len(chunk))})"
                    parameters: list = list(chunk)
                    if model_version is not None:
                        sql += " AND model_version = ?"
                        parameters.append(model_version)
                    connection.execute(sql, parameters)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return connection.total_changes - before

    def count(self) -> int:
        """Number of stored records (all versions)."""
        return self._select("SELECT COUNT(*) FROM proxies", ())[0][0]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
