"""Online store and offline log written together (``StoreConfig.offline_log = true``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from idproxy_stream.events import ProxyRecord
from idproxy_stream.store.base import FeatureStore, checked_records


class CompositeStore(FeatureStore):
    """Writes go to the online store, then to the offline log; reads come from the online store.

    Both sides are idempotent under replay (the online store by order key, the log by
    deduplicating on read), so a crash between the two writes is repaired by replaying the
    source from its last committed offset.
    """

    name = "composite"

    def __init__(self, online: FeatureStore, offline_log: FeatureStore) -> None:
        self.online = online
        self.offline_log = offline_log

    @classmethod
    def from_config(cls, config: Any) -> CompositeStore:
        raise TypeError("build a CompositeStore with store.build_store(StoreConfig(...))")

    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        """Returns the online store's count (records that changed it); the log takes all."""
        listed = checked_records(records)
        changed = self.online.upsert(listed)
        self.offline_log.upsert(listed)
        return changed

    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        return self.online.get(item_ids, model_version)

    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        return self.online.scan(model_version, since, batch_size)

    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        """Deletes from both; returns the online store's count."""
        ids = list(item_ids)
        removed = self.online.delete(ids, model_version)
        self.offline_log.delete(ids, model_version)
        return removed

    def flush(self) -> None:
        self.online.flush()
        self.offline_log.flush()

    def close(self) -> None:
        try:
            self.online.close()
        finally:
            self.offline_log.close()
