"""Backfill a catalogue: every item of the configured dataset, as the stream would see it.

Each row of ``RecDataset.items`` becomes the :class:`NewItemEvent` ``idproxy publish`` would
send (``stream/publish.py``): images held as bytes travel inline, images named by URI stay
URIs (``file://`` ones must be under ``encoder.images.allowed_roots`` on the workers' nodes).
Rows carry ``kafka_topic = "catalogue:<data.name>"``, partition 0 and the item's position as
offset, and the run's start time as their event time: a later event of the item on the topic
replaces the row, an earlier one replayed does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd

from idproxy_stream.backfill.runner import BackfillReport, run_backfill
from idproxy_stream.config import AppConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.publish import item_event


def catalogue_label(config: AppConfig) -> str:
    """The ``kafka_topic`` value of catalogue rows, e.g. ``catalogue:synthetic``."""
    return f"catalogue:{config.data.name}"


def catalogue_work(items: pd.DataFrame, label: str, created_at: datetime) -> Iterator[WorkItem]:
    """One work item per row of an items table (``RecDataset.items`` shape)."""
    for position, row in enumerate(items.to_dict("records")):
        image_bytes = row.get("image_bytes")
        inline = isinstance(image_bytes, bytes | bytearray) and len(image_bytes) > 0
        event = item_event(row, created_at, "inline" if inline else "uri")
        yield WorkItem(topic=label, partition=0, offset=position, event=event)


def backfill_catalogue(config: AppConfig, limit: int | None = None) -> BackfillReport:
    """Compute proxies for the configured dataset's items (the first ``limit`` when given)."""
    items = load_dataset(config.data).items
    if limit is not None:
        items = items.head(limit)
    label = catalogue_label(config)
    work = catalogue_work(items, label, datetime.now(UTC))
    return run_backfill(config, work, label, total=len(items))
