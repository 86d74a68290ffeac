"""The feature-store contract every backend implements, and the registry that picks one.

A store holds at most one :class:`~idproxy_stream.events.ProxyRecord` per
``(item_id, model_version)``:

- ``upsert`` is idempotent: a record replaces the stored one only when its
  :meth:`~idproxy_stream.events.ProxyRecord.order_key` —
  ``(source_event_ts, kafka_offset, computed_at)``, missing values lowest — is strictly
  greater. Replaying an event, or an older event arriving late, changes nothing.
- ``get(item_ids, model_version)`` returns the record of that version; with
  ``model_version=None`` the newest version of each item, i.e. the greatest
  ``(computed_at, order_key, model_version)``.
- ``scan`` yields one record per ``(item_id, model_version)``, optionally of one version and
  computed at or after ``since``.

Backends are chosen by name (``StoreConfig.online``) from :data:`STORE_BACKENDS`, loaded
lazily so that e.g. the sqlite store never imports redis.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar

from idproxy_stream.config import StoreConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.events import ProxyRecord, as_item_id, datetime_to_us

STORE_BACKENDS: dict[str, str] = {
    "sqlite": "idproxy_stream.store.sqlite:SqliteStore",
    "redis": "idproxy_stream.store.redis:RedisStore",
    "parquet": "idproxy_stream.store.parquet:ParquetProxyLog",
}


class StoreError(IdProxyError, RuntimeError):
    """A feature-store operation failed; the message says what to check."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached; the message names where (without secrets) and what to check."""


class StoreClosedError(StoreError):
    """An operation on a store that was closed."""


def version_preference(record: ProxyRecord) -> tuple[Any, ...]:
    """Sort key choosing among versions of one item: newest computed_at wins (``get(None)``)."""
    return (datetime_to_us(record.computed_at), record.order_key(), record.model_version)


def newest_per_item(records: Iterable[ProxyRecord]) -> dict[int, ProxyRecord]:
    """Item id -> its record with the greatest :func:`version_preference`."""
    newest: dict[int, ProxyRecord] = {}
    for record in records:
        current = newest.get(record.item_id)
        if current is None or version_preference(record) > version_preference(current):
            newest[record.item_id] = record
    return newest


def checked_records(records: Iterable[ProxyRecord]) -> list[ProxyRecord]:
    """``records`` as a list, refusing anything that is not a :class:`ProxyRecord`."""
    listed = list(records)
    for record in listed:
        if not isinstance(record, ProxyRecord):
            raise TypeError(
                f"stores write ProxyRecord objects, got {type(record).__name__}: build one with "
                "ProxyRecord(item_id=..., proxy=..., ...)"
            )
    return listed


def checked_item_ids(item_ids: Iterable[int]) -> list[int]:
    """Distinct int64 item ids in first-seen order."""
    return list(dict.fromkeys(as_item_id(item_id) for item_id in item_ids))


class FeatureStore(ABC):
    """Where proxies land. Small surface; every backend keeps the module-level contract.

    Use as a context manager, or call :meth:`close`.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any) -> FeatureStore:
        """Open the store from its own config section (``SqliteStoreConfig`` ...)."""

    @abstractmethod
    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        """Write ``records`` idempotently; returns how many changed the store (see module doc)."""

    @abstractmethod
    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        """Item id -> record for the ids that have one (of ``model_version``, or the newest)."""

    @abstractmethod
    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        """Every record (of ``model_version``; computed at or after ``since``), in batches."""

    @abstractmethod
    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        """Remove the items' records (of one version, or all); returns how many were removed."""

    def flush(self) -> None:  # noqa: B027 - most stores write through; buffered ones override
        """Make every accepted record durable (no-op for stores that write through)."""

    def expire_after_created(self, ttl_s: int) -> None:
        """Let each record expire ``ttl_s`` seconds after its item was created (the event's
        ``source_event_ts``, else ``computed_at``): ``store.ttl_s``. Stores that cannot expire
        rows refuse it."""
        raise StoreError(
            f"store.ttl_s is set, but the {type(self).__name__} store cannot expire rows: unset "
            "it or use the redis store"
        )

    @abstractmethod
    def close(self) -> None:
        """Flush and release connections; further calls raise :class:`StoreClosedError`."""

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def store_class(name: str) -> type[FeatureStore]:
    """The backend registered under ``name`` in :data:`STORE_BACKENDS`, or the
    :class:`FeatureStore` subclass an import path ``"package.module:Class"`` names."""
    if name not in STORE_BACKENDS and ":" not in name:
        raise StoreError(
            f"unknown store.online {name!r}: choose one of {sorted(STORE_BACKENDS)} or "
            "'package.module:Class'"
        )
    module_name, _, class_name = STORE_BACKENDS.get(name, name).partition(":")
    setting = f"store.online = {name!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise StoreError(
            f"{setting}: cannot import module {module_name!r} ({type(error).__name__}: "
            f"{error}); install it or fix the path"
        ) from None
    backend = getattr(module, class_name, None)
    if backend is None:
        raise StoreError(f"{setting}: module {module_name!r} has no {class_name!r}")
    if not (isinstance(backend, type) and issubclass(backend, FeatureStore)):
        raise StoreError(
            f"{setting}: {class_name!r} is not a FeatureStore subclass "
            "(idproxy_stream.store.base.FeatureStore; see docs/store.md)"
        )
    return backend


def build_store(config: StoreConfig) -> FeatureStore:
    """The online store ``config.online`` names; with ``offline_log`` also the Parquet log.

    Built-in backends get their section (``config.redis`` ...), a plugin store
    ``config.settings``. ``config.ttl_s`` is applied with :meth:`FeatureStore.expire_after_created`
    (a store that cannot expire rows refuses it). With ``offline_log=True`` (and an online store
    other than parquet) the result is a :class:`~idproxy_stream.store.composite.CompositeStore`
    writing both; ``config.feast`` adds Feast's online layout the same way (``store/feast.py``).
    """
    backend = store_class(config.online)
    section = getattr(config, config.online) if config.online in STORE_BACKENDS else config.settings
    online = backend.from_config(section)
    if config.ttl_s is not None:
        try:
            online.expire_after_created(config.ttl_s)
        except BaseException:
            online.close()
            raise
    from idproxy_stream.store.composite import CompositeStore

    if config.offline_log and config.online != "parquet":
        try:
            offline = store_class("parquet").from_config(config.parquet)
        except BaseException:
            online.close()
            raise
        online = CompositeStore(online, offline)
    if config.feast is None:
        return online
    from idproxy_stream.store.feast import FeastOnlineWrite

    try:
        return CompositeStore(online, FeastOnlineWrite(config.feast, window_s=config.ttl_s))
    except BaseException:
        online.close()
        raise
