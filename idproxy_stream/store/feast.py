"""Proxies written in Feast's own online-store layout, so ``FeatureStore.get_online_features``
of the real ``feast`` package (0.67, ``entity_key_serialization_version: 3``) reads them.

Set ``store.feast`` (:class:`~idproxy_stream.config.FeastConfig`): every upsert to the online
store is mirrored, one Feast row per item (the last write wins, like Feast's own writes), with
the features of feature view ``feature_view`` (default ``item_proxy``)::

    proxy               Array(Float32)  (D,) the proxy in the ranker's ID space
    model_version       String
    void                Bool
    neighbour_distance  Float32         the neighbour check's void_score (k-th neighbour distance)

and the record's ``source_event_ts`` (else ``computed_at``) as Feast's event timestamp. The
entity is ``join_key`` (default ``item_id``) of type ``entity_key_dtype``: ``int64`` or
``string`` (Feast's key bytes include the type tag, so it must match the Entity you apply).

Layouts written (both taken from ``feast/infra/online_stores/{redis,sqlite}.py``):

- Redis: key ``serialize_entity_key(key) + project``; a hash with field
  ``murmur3_32("<view>:<feature>")`` (4 bytes, little endian) -> serialized ``feast.types.Value``
  and ``_ts:<view>`` -> serialized ``google.protobuf.Timestamp``.
- sqlite: table ``<project>_<view>``, one row per (entity_key, feature_name) with the value
  bytes and ``event_ts`` / ``created_ts`` as Feast's adapter stores them (epoch seconds).

The protobufs are encoded by hand (a few wire-format fields), so this module needs neither
``feast`` nor ``mmh3``; the Feast read-back test (``tests/store/test_feast.py``) runs the real
package against what it writes.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from idproxy_stream.config import FeastConfig
from idproxy_stream.events import ProxyRecord
from idproxy_stream.store.base import FeatureStore, StoreError, checked_records

VALUE_TYPE_STRING, VALUE_TYPE_INT64 = 2, 4  # feast.types.ValueType


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def value_bytes(value: Any) -> bytes:
    """A serialized ``feast.types.Value``: str -> string_val, bool -> bool_val, float ->
    float_val, a float sequence -> float_list_val (a packed ``FloatList``)."""
    if isinstance(value, str):
        return _length_delimited(2, value.encode("utf-8"))
    if isinstance(value, bool):
        return _field(7, 0) + _varint(int(value))
    if isinstance(value, float):
        return _field(6, 5) + struct.pack("<f", value)
    floats = [float(v) for v in value]
    packed = _length_delimited(1, struct.pack(f"<{len(floats)}f", *floats))
    return _length_delimited(16, packed)


def timestamp_bytes(moment: datetime) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` of an aware datetime."""
    micros = round(moment.timestamp() * 1_000_000)
    seconds, nanos = divmod(micros, 1_000_000)
    out = _field(1, 0) + _varint(seconds)
    return out + (_field(2, 0) + _varint(nanos * 1000) if nanos else b"")


def entity_key_bytes(item_id: int, join_key: str, dtype: str) -> bytes:
    """``feast.infra.key_encoding_utils.serialize_entity_key`` (version 3) of one join key."""
    name = join_key.encode("utf-8")
    if dtype == "int64":
        value, value_type = struct.pack("<q", item_id), VALUE_TYPE_INT64
    else:
        value, value_type = str(item_id).encode("utf-8"), VALUE_TYPE_STRING
    header = struct.pack("<III", 1, VALUE_TYPE_STRING, len(name)) + name
    return header + struct.pack("<II", value_type, len(value)) + value


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (``mmh3.hash(key, signed=False)``)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    rounded = len(data) - len(data) % 4
    for start in range(0, rounded, 4):
        k = int.from_bytes(data[start : start + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[rounded:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def feature_values(record: ProxyRecord) -> dict[str, Any]:
    """The Feast features of one record (module docstring)."""
    return {
        "proxy": record.proxy.tolist(),
        "model_version": record.model_version,
        "void": bool(record.void),
        "neighbour_distance": float(record.void_score),
    }


def event_time(record: ProxyRecord) -> datetime:
    return record.source_event_ts or record.computed_at


def feast_sqlite_time(moment: datetime) -> int:
    """The integer Feast's sqlite store keeps for a timestamp: its adapter's
    ``int(naive_utc.timestamp())`` (the naive value read as local time, as Feast does)."""
    return int(moment.astimezone(UTC).replace(tzinfo=None).timestamp())


class FeastOnlineWrite(FeatureStore):
    """Write-only mirror of the proxies in Feast's Redis or sqlite online layout.

    Reads go to the store it mirrors (``build_store`` wraps both); ``get`` and ``scan`` here
    answer nothing, ``delete`` removes the items' Feast rows.
    """

    name = "feast"

    def __init__(self, config: FeastConfig, window_s: int | None = None) -> None:
        self.config = config
        self.window_s = window_s  # store.ttl_s: the cold-start window after an item's creation
        self.redis = None
        self.sqlite: sqlite3.Connection | None = None
        if config.online == "redis":
            import redis

            self.redis = redis.Redis.from_url(config.redis_url)
        else:
            try:
                self.sqlite = sqlite3.connect(config.sqlite_path)
            except sqlite3.Error as error:
                raise StoreError(
                    f"store.feast.sqlite_path = {config.sqlite_path}: cannot open ({error})"
                ) from error
            self._create_table()

    @classmethod
    def from_config(cls, config: Any) -> FeastOnlineWrite:
        return cls(config if isinstance(config, FeastConfig) else FeastConfig(**config))

    @property
    def table(self) -> str:
        return f"{self.config.project}_{self.config.feature_view}"

    def _create_table(self) -> None:
        """Feast's own schema (``SqliteOnlineStore.update``), when ``feast apply`` has not run."""
        assert self.sqlite is not None
        with self.sqlite:
            self.sqlite.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.table}" (entity_key BLOB, feature_name TEXT, '
                "value BLOB, value_text TEXT, vector_value BLOB, event_ts timestamp, "
                "created_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
            )

    def _key(self, item_id: int) -> bytes:
        return entity_key_bytes(item_id, self.config.join_key, self.config.entity_key_dtype)

    def expire_at(self, record: ProxyRecord) -> int:
        """Unix seconds at which the record's Feast row expires (0 = never): its item's
        creation plus the cold-start window, as the store it mirrors (``store.ttl_s``)."""
        if self.window_s is None:
            return 0
        created = record.source_event_ts or record.computed_at
        return int(created.timestamp()) + self.window_s

    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        listed = checked_records(records)
        now_s = int(time.time())
        listed = [r for r in listed if (e := self.expire_at(r)) == 0 or e > now_s]
        if self.redis is not None:
            self._write_redis(listed)
        else:
            self._write_sqlite(listed)
        return len(listed)

    def _write_redis(self, records: list[ProxyRecord]) -> None:
        view = self.config.feature_view
        project = self.config.project.encode("utf-8")
        with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                fields: dict[bytes | str, bytes] = {
                    f"_ts:{view}": timestamp_bytes(event_time(record))
                }
                for name, value in feature_values(record).items():
                    hashed = murmur3_32(f"{view}:{name}".encode())
                    fields[struct.pack("<I", hashed)] = value_bytes(value)
                key = self._key(record.item_id) + project
                pipe.hset(key, mapping=fields)
                if expire_at := self.expire_at(record):
                    pipe.expireat(key, expire_at)
            pipe.execute()

    def _write_sqlite(self, records: list[ProxyRecord]) -> None:
        assert self.sqlite is not None
        rows = []
        for record in records:
            event, created = (
                feast_sqlite_time(event_time(record)),
                feast_sqlite_time(record.computed_at),
            )
            for name, value in feature_values(record).items():
                text = value if isinstance(value, str) else None
                rows.append(
                    (self._key(record.item_id), name, value_bytes(value), text, event, created)
                )
        with self.sqlite:
            self.sqlite.executemany(
                f'INSERT INTO "{self.table}" (entity_key, feature_name, value, value_text, '
                "event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, "
                "feature_name) DO UPDATE SET value = excluded.value, value_text = "
                "excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts",
                rows,
            )

    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        return {}

    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        return iter(())

    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        keys = [self._key(int(item_id)) for item_id in item_ids]
        if self.redis is not None:
            project = self.config.project.encode("utf-8")
            return int(self.redis.delete(*[key + project for key in keys])) if keys else 0
        assert self.sqlite is not None
        with self.sqlite:
            cursor = self.sqlite.executemany(
                f'DELETE FROM "{self.table}" WHERE entity_key = ?', [(key,) for key in keys]
            )
        return cursor.rowcount

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        if self.sqlite is not None:
            self.sqlite.close()
