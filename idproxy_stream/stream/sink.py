"""The sink: neighbour check, then a durable, idempotent write of the batch's proxy rows.

One :class:`ProxySink` per source. For each :class:`EncodedBatch` it runs the Faiss neighbour
check (one search for the batch), applies the void policy, builds :class:`ProxyRecord` rows
(keyed by ``(item_id, model_version)``, ordered by ``(created_at, offset, computed_at)``),
upserts them, calls ``store.flush()`` — so the rows are durable when :meth:`write` returns — and
optionally publishes them to ``kafka.output_topic`` (waiting for the broker's acks). Only then
does it acknowledge the batch, and only an acknowledged batch lets the source commit offsets.

A failing store or output topic raises: the source retries the batch (re-delivery and the
idempotent upsert make that safe) instead of dead-lettering valid events.

The sink receives :class:`SinkSettings` (what it reads of the application config).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import (
    AppConfig,
    FrozenModel,
    IndexConfig,
    KafkaConfig,
    StoreConfig,
)
from idproxy_stream.events import DeadLetterReason, ProxyRecord
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.index.void import NeighbourChecker
from idproxy_stream.store.base import FeatureStore, build_store
from idproxy_stream.stream.messages import BatchOutcome, EncodedBatch, Rejection, WrittenRow

logger = logging.getLogger(__name__)


class SinkSettings(FrozenModel):
    """What one sink reads (built from the application config by :meth:`of`).

    kafka: for ``kafka.output_topic`` only; None (or no output topic) publishes nothing.
    """

    model_dir: Path
    index: IndexConfig = IndexConfig()
    store: StoreConfig = StoreConfig()
    kafka: KafkaConfig | None = None

    @classmethod
    def of(cls, config: AppConfig) -> SinkSettings:
        """The sink's part of ``config`` (``stream.model_dir``, ``index``, ``store``, ``kafka``)."""
        kafka = config.kafka if config.kafka.output_topic else None
        return cls(
            model_dir=config.stream.model_dir, index=config.index, store=config.store, kafka=kafka
        )


class ProxySink:
    """Store + neighbour checker (+ optional output-topic producer) for one source.

    Example::

        sink = ProxySink(SinkSettings.of(config))
        outcome = sink.write(encoded_batch)     # rows durable when this returns
        outcome.written[0].status               # "ok" / "void_flagged" / "knn_fallback"
    """

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.layout = BundleLayout(settings.model_dir)
        self.checkers: dict[str, NeighbourChecker] = {}  # by ID-space fingerprint
        self.checker = self.checker_for(None)
        self.store: FeatureStore = build_store(settings.store)
        self.producer = None
        if settings.kafka is not None and settings.kafka.output_topic:
            from idproxy_stream.stream.clients import make_producer

            self.producer = make_producer(settings.kafka, "sink")

    def ping(self) -> bool:
        return True

    def checker_for(self, id_space_fingerprint: str | None) -> NeighbourChecker:
        """The neighbour checker of that ID space (None: the bundle's current one).

        After ``idproxy realign`` swapped the bundle's ID space and index, the first batch of
        the new version loads them; batches of the old version still in flight keep theirs.
        """
        checker = self.checkers.get(id_space_fingerprint) if id_space_fingerprint else None
        if checker is not None:
            return checker
        id_space = IdSpace.load(self.layout.id_space)
        if id_space_fingerprint is not None and id_space.fingerprint != id_space_fingerprint:
            raise ValueError(
                f"{self.layout.id_space} holds ID space {id_space.fingerprint}, not the "
                f"{id_space_fingerprint} the batch was computed for: the bundle changed under "
                "the stream outside `idproxy realign`"
            )
        checker = NeighbourChecker.load(self.layout.index, id_space, self.settings.index)
        self.checkers[id_space.fingerprint] = checker
        return checker

    def write(self, batch: EncodedBatch) -> BatchOutcome:
        """Check, write and flush one batch; returns what was written and every refusal."""
        started = time.perf_counter()
        rejected: list[Rejection] = list(batch.rejected)
        records: list[ProxyRecord] = []
        written: list[WrittenRow] = []
        if batch.rows:
            computed_at = datetime.now(UTC)
            decisions = self.checker_for(batch.id_space_fingerprint).decide(batch.proxies)
            for row, decision in zip(batch.rows, decisions, strict=True):
                if decision.is_dead_letter:
                    rejected.append(
                        Rejection(
                            partition=row.partition,
                            offset=row.offset,
                            item_id=row.item_id,
                            reason=DeadLetterReason.PROXY_VOID,
                            message=decision.reason or "the proxy is void",
                            stage="sink",
                        )
                    )
                    continue
                records.append(
                    ProxyRecord(
                        item_id=row.item_id,
                        model_version=batch.model_version,
                        encoder_fingerprint=batch.encoder_fingerprint,
                        id_space_fingerprint=batch.id_space_fingerprint,
                        computed_at=computed_at,
                        source_event_ts=row.created_at,
                        kafka_topic=row.topic,
                        kafka_partition=row.partition,
                        kafka_offset=row.offset,
                        **decision.record_fields(),
                    )
                )
                written.append(WrittenRow(row.partition, row.offset, row.item_id, decision.status))
        if records:
            self.store.upsert(records)
            self.store.flush()
            self._publish(records)
        counts: dict[str, int] = {}
        for row in written:
            counts[row.status] = counts.get(row.status, 0) + 1
        return BatchOutcome(
            written=tuple(written),
            rejected=tuple(rejected),
            model_version=batch.model_version,
            batch_size=batch.batch_size,
            encode_seconds=batch.encode_seconds,
            write_seconds=time.perf_counter() - started,
            status_counts=counts,
            refused_versions=batch.refused_versions,
        )

    def _publish(self, records: list[ProxyRecord]) -> None:
        """Send the rows to the output topic and wait for the broker to have them all."""
        if self.producer is None or self.settings.kafka is None:
            return
        topic = self.settings.kafka.output_topic
        futures = [
            self.producer.send(
                topic, key=str(record.item_id).encode(), value=record.to_json().encode()
            )
            for record in records
        ]
        self.producer.flush(timeout=self.settings.kafka.request_timeout_ms / 1000)
        for future in futures:
            future.get(timeout=0)  # raises the send's error, if any

    def close(self) -> None:
        self.store.close()
        if self.producer is not None:
            self.producer.close(timeout=5)
