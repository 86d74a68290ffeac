"""``idproxy publish``: send catalogue items to the input topic as :class:`NewItemEvent` JSON.

For demos and load tests. Items come from the configured dataset (synthetic, or MovieLens with
posters); by default only items the ranker has no ID for (not in the bundle's ID space) are
sent, as a real stream of new items would be. Images travel as:

- ``inline``: base64 in the event (``image_base64``; posters are read from disk);
- ``uri``: a ``file://`` URI (synthetic images are first written to ``image_dir``); the stream
  must list the folder in ``encoder.images.allowed_roots``;
- ``none``: text only.

Records are keyed by the item id, so all events of one item land in one partition, in order.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, KafkaConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.events import NewItemEvent
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.stream.clients import make_producer
from idproxy_stream.stream.topics import check_kafka_reachable

logger = logging.getLogger(__name__)

ImageMode = Literal["inline", "uri", "none"]


@dataclass
class PublishReport:
    """What was sent: counts, time, and where each record landed.

    positions: ``(partition, offset)`` of every record, in the order sent.
    item_ids: the item ids of the :class:`NewItemEvent` records sent.
    """

    events: int
    seconds: float
    positions: list[tuple[int, int]] = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)

    @property
    def last_offsets(self) -> dict[int, int]:
        """Partition -> offset of the last record this publish wrote there."""
        last: dict[int, int] = {}
        for partition, offset in self.positions:
            last[partition] = max(last.get(partition, -1), offset)
        return last

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def end_offsets(self) -> dict[int, int]:
        """Partition -> offset after the last record this publish wrote."""
        return {partition: offset + 1 for partition, offset in self.last_offsets.items()}


def _file_bytes(uri: str) -> bytes:
    return Path(unquote(urlparse(uri).path)).read_bytes()


def _text_list(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(str(v) for v in value)


def item_event(
    item: Mapping[str, Any],
    created_at: datetime,
    image_mode: ImageMode = "inline",
    image_dir: Path | None = None,
) -> NewItemEvent:
    """One catalogue row (``RecDataset.items`` shape) as a :class:`NewItemEvent`.

    ``created_at`` stamps rows without a ``created_at`` of their own (the table format has one).
    """
    item_id = int(item["item_id"])
    own_time = item.get("created_at")
    if isinstance(own_time, datetime) and own_time.tzinfo is not None:
        created_at = own_time
    image_uri = item.get("image_uri") if isinstance(item.get("image_uri"), str) else None
    image_bytes = item.get("image_bytes")
    has_bytes = isinstance(image_bytes, bytes | bytearray) and len(image_bytes) > 0
    uri, inline = None, None
    if image_mode == "inline":
        if has_bytes:
            inline = base64.b64encode(bytes(image_bytes)).decode("ascii")
        elif image_uri is not None and image_uri.startswith("file://"):
            inline = base64.b64encode(_file_bytes(image_uri)).decode("ascii")
        else:
            uri = image_uri
    elif image_mode == "uri":
        if image_uri is not None:
            uri = image_uri
        elif has_bytes:
            if image_dir is None:
                raise ValueError("image_mode='uri' needs image_dir to write synthetic images to")
            image_dir.mkdir(parents=True, exist_ok=True)
            path = image_dir.resolve() / f"{item_id}.png"
            path.write_bytes(bytes(image_bytes))
            uri = path.as_uri()
    year = item.get("year")
    return NewItemEvent(
        item_id=item_id,
        created_at=created_at,
        title=str(item.get("title") or ""),
        description=str(item.get("description") or ""),
        tags=_text_list(item.get("tags")),
        categories=_text_list(item.get("categories")),
        year=int(year) if isinstance(year, int | np.integer) and year > 0 else 0,
        image_uri=uri,
        image_base64=inline,
    )


def catalogue_events(
    items: pd.DataFrame, image_mode: ImageMode = "inline", image_dir: Path | None = None
) -> Iterator[NewItemEvent]:
    """Events for every row of an items table, stamped with the time each is built."""
    for row in items.to_dict("records"):
        yield item_event(row, datetime.now(UTC), image_mode, image_dir)


def new_items(items: pd.DataFrame, model_dir: Path) -> pd.DataFrame:
    """The rows of ``items`` whose ids are not in the bundle's ID space (cold for the ranker)."""
    known = IdSpace.load(BundleLayout(model_dir).id_space).item_ids
    return items[~items["item_id"].isin(known)]


def publish_events(
    kafka: KafkaConfig,
    events: Iterable[NewItemEvent | bytes],
    rate: float | None = None,
    one_record_per_batch: bool = False,
    topic: str | None = None,
) -> PublishReport:
    """Send events (or raw bytes, for tests) to ``topic`` (default ``kafka.topic``).

    ``rate``: events per second (paced), None = as fast as possible. Waits for every ack.
    """
    topic = topic or kafka.topic
    producer = make_producer(kafka, "publish", one_record_per_batch=one_record_per_batch)
    futures, item_ids = [], []
    started = time.perf_counter()
    try:
        for index, event in enumerate(events):
            if rate is not None:
                due = started + index / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            if isinstance(event, NewItemEvent):
                key, value = str(event.item_id).encode(), event.to_json_bytes()
                item_ids.append(event.item_id)
            else:
                key, value = None, bytes(event)
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush()
        positions = []
        for future in futures:
            metadata = future.get(timeout=kafka.request_timeout_ms / 1000)
            positions.append((metadata.partition, metadata.offset))
    finally:
        producer.close(timeout=10)
    seconds = time.perf_counter() - started
    logger.info("published %d events to %s in %.2f s", len(futures), topic, seconds)
    return PublishReport(len(futures), seconds, positions, item_ids)


def publish_catalogue(
    config: AppConfig,
    limit: int | None = None,
    only_new: bool = True,
    image_mode: ImageMode = "inline",
    image_dir: Path | None = None,
    rate: float | None = None,
    one_record_per_batch: bool = False,
) -> PublishReport:
    """Publish the configured dataset's items (only those new to the ranker by default)."""
    check_kafka_reachable(config.kafka)
    items = load_dataset(config.data).items
    if only_new:
        items = new_items(items, config.stream.model_dir)
    if limit is not None:
        items = items.head(limit)
    return publish_events(
        config.kafka,
        catalogue_events(items, image_mode, image_dir),
        rate=rate,
        one_record_per_batch=one_record_per_batch,
    )
