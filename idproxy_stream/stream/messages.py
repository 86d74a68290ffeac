"""What the stream's actors hand each other: source -> worker -> sink -> source.

- :class:`WorkItem`: one valid event with its Kafka coordinates (source -> worker).
- :class:`EncodedBatch`: proxies for a batch, plus the events the worker refused (worker -> sink).
- :class:`BatchOutcome`: what the sink durably wrote, plus every refusal (sink -> source), so the
  source can complete offsets, dead-letter refusals and account metrics in one place.

Only small things travel: proxies are ``(B, D_id)`` float32, events stay with the worker that
encoded them, and original record bytes never leave the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from idproxy_stream.events import NewItemEvent


@dataclass(frozen=True)
class WorkItem:
    """A valid event and where it came from."""

    topic: str
    partition: int
    offset: int
    event: NewItemEvent

    @property
    def key(self) -> tuple[int, int]:
        return (self.partition, self.offset)


@dataclass(frozen=True)
class ProxyRow:
    """Coordinates of one computed proxy (the vector is a row of ``EncodedBatch.proxies``)."""

    topic: str
    partition: int
    offset: int
    item_id: int
    created_at: datetime


@dataclass(frozen=True)
class Rejection:
    """An event that gets no proxy; ``reason`` is a stable code for the dead letter."""

    partition: int
    offset: int
    item_id: int | None
    reason: str
    message: str
    stage: str


@dataclass(frozen=True)
class EncodedBatch:
    """A worker's output for one batch.

    rows: one per computed proxy, in the order of ``proxies`` (B, D_id) float32.
    rejected: events refused before or during encoding (mature item, bad image ...).
    refused_versions: model versions this worker refused to load while running (metrics).
    """

    rows: tuple[ProxyRow, ...]
    proxies: np.ndarray
    rejected: tuple[Rejection, ...]
    model_version: str
    encoder_fingerprint: str
    id_space_fingerprint: str
    batch_size: int
    encode_seconds: float
    refused_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class WrittenRow:
    """One proxy row the sink durably wrote; ``status`` is the ProxyRecord status."""

    partition: int
    offset: int
    item_id: int
    status: str


@dataclass(frozen=True)
class BatchOutcome:
    """The sink's acknowledgement of one batch: rows written and durable, and refusals;
    ``refused_versions`` passes on the worker's (metrics)."""

    written: tuple[WrittenRow, ...]
    rejected: tuple[Rejection, ...]
    model_version: str
    batch_size: int
    encode_seconds: float
    write_seconds: float
    status_counts: dict[str, int] = field(default_factory=dict)
    refused_versions: tuple[str, ...] = ()
