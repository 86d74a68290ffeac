"""The wire schemas of the stream: what a proxy looks like once computed and checked.

:class:`NewItemEvent` is what producers publish to the input topic (JSON, checked with pydantic by
:func:`decode_new_item_event`); :class:`ProxyRecord` is the row every feature store writes and
every reader returns; :class:`NeighbourCheck` is the result of checking one proxy against the
ranker's ID space (``index/void.py``); :class:`DeadLetter` is what the stream writes to the
dead-letter topic for a record it cannot turn into a proxy. ``ProxyRecord`` and
``NeighbourCheck`` are frozen dataclasses holding read-only numpy arrays and turn into plain JSON
with ``to_dict`` / ``from_dict``.

Item ids are int64 because the ranker's ID table is keyed by int64 (``data/schema.py``).
Catalogues with string ids map them to int64 before the stream (a dictionary or a 63-bit
hash); the stores key rows by that integer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, get_args

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from idproxy_stream.errors import IdProxyError

ProxyStatus = Literal["ok", "void_flagged", "knn_fallback"]
PROXY_STATUSES: tuple[str, ...] = ("ok", "void_flagged", "knn_fallback")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Order-key stand-ins for missing values: below any real timestamp (even pre-1970) or offset,
# and within a double's exact-integer range so Redis' Lua compares them exactly.
NO_EVENT_TS = -(2**53)
NO_OFFSET = -1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProxyRecordError(IdProxyError, ValueError):
    """A proxy record is malformed; the message names the item, the field and what to fix."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def as_item_id(value: Any) -> int:
    """``value`` as a Python int in the int64 range, or :class:`ProxyRecordError`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProxyRecordError(
            f"item_id must be an int64 integer, got {type(value).__name__} {value!r}: "
            "map string ids to int64 before writing"
        )
    item_id = int(value)
    if not INT64_MIN <= item_id <= INT64_MAX:
        raise ProxyRecordError(f"item_id {item_id} does not fit in int64")
    return item_id


def as_utc(value: datetime, name: str, item_id: int) -> datetime:
    """A timezone-aware datetime converted to UTC; naive datetimes are refused."""
    if not isinstance(value, datetime):
        raise ProxyRecordError(
            f"item {item_id}: {name} must be a datetime, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ProxyRecordError(
            f"item {item_id}: {name} is a naive datetime; pass a timezone-aware one "
            "(e.g. datetime.now(UTC))"
        )
    return value.astimezone(UTC)


def finite_vector(value: Any, name: str, item_id: int, dtype: type = np.float32) -> np.ndarray:
    """``value`` as a read-only 1-D ``dtype`` array; NaN or inf is a :class:`ProxyRecordError`."""
    array = np.array(value, dtype=dtype, copy=True)
    if array.ndim != 1:
        raise ProxyRecordError(
            f"item {item_id}: {name} must be a 1-D vector, got shape {array.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ProxyRecordError(
            f"item {item_id}: {name} holds NaN or inf at positions {bad[:8].tolist()}"
            f"{' ...' if bad.size > 8 else ''}: the encoder or proxy head produced non-finite "
            "values; check the model inputs and weights before writing"
        )
    return _read_only(array)


@dataclass(frozen=True, eq=False)
class NeighbourCheck:
    """One proxy checked against the mature ID space.

    neighbour_ids: (k,) int64 item ids of the nearest mature IDs, best first (-1 pads a
        neighbour the index could not return).
    similarities: (k,) float32 cosine similarities to them (-1.0 for padding).
    void_score: Euclidean distance between unit vectors to the k-th neighbour, in [0, 2].
    void: ``void_score > threshold``: the proxy lies in a region with no mature ID nearby.
    """

    neighbour_ids: np.ndarray
    similarities: np.ndarray
    void_score: float
    void: bool

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NeighbourCheck):
            return NotImplemented
        return (
            np.array_equal(self.neighbour_ids, other.neighbour_ids)
            and np.array_equal(self.similarities, other.similarities)
            and self.void_score == other.void_score
            and self.void == other.void
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False, kw_only=True)
class ProxyRecord:
    """A proxy embedding for one item as written to the feature store.

    Keyed by ``(item_id, model_version)``. Which of two records with the same key is newer is
    decided by :meth:`order_key`: ``(source_event_ts, kafka_offset, computed_at)``, missing
    values sorting lowest. Stores never replace a row by one whose order key is not greater.

    proxy: (D,) float32 vector in the ranker's raw ID-embedding space (finite).
    neighbours / neighbour_similarities: (k,) int64 / float32 from the neighbour check
        (empty when no check ran).
    void / void_score / status: the check's verdict; ``status`` is "ok" for an in-space proxy,
        "void_flagged" for a void proxy written as is, "knn_fallback" for a void proxy replaced
        by the average of its neighbours' ID embeddings.
    """

    item_id: int
    proxy: np.ndarray
    model_version: str
    encoder_fingerprint: str
    id_space_fingerprint: str
    computed_at: datetime
    source_event_ts: datetime | None = None
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    neighbours: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    neighbour_similarities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    void: bool = False
    void_score: float | None = None
    status: ProxyStatus = "ok"

    def __post_init__(self) -> None:
        item_id = as_item_id(self.item_id)
        set_field = object.__setattr__
        set_field(self, "item_id", item_id)
        set_field(self, "proxy", finite_vector(self.proxy, "proxy", item_id))
        if self.proxy.size == 0:
            raise ProxyRecordError(f"item {item_id}: proxy is empty")
        for name in ("model_version", "encoder_fingerprint", "id_space_fingerprint"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ProxyRecordError(f"item {item_id}: {name} must be a str, got {value!r}")
        if not self.model_version:
            raise ProxyRecordError(f"item {item_id}: model_version must not be empty")
        set_field(self, "computed_at", as_utc(self.computed_at, "computed_at", item_id))
        if self.source_event_ts is not None:
            set_field(
                self, "source_event_ts", as_utc(self.source_event_ts, "source_event_ts", item_id)
            )
        for name in ("kafka_partition", "kafka_offset"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | np.integer):
                    raise ProxyRecordError(f"item {item_id}: {name} must be an int or None")
                if value < 0:
                    raise ProxyRecordError(f"item {item_id}: {name} must be >= 0, got {value}")
                set_field(self, name, int(value))
        neighbours = np.array(self.neighbours, dtype=np.int64, copy=True).reshape(-1)
        set_field(self, "neighbours", _read_only(neighbours))
        similarities = finite_vector(
            np.reshape(self.neighbour_similarities, -1), "neighbour_similarities", item_id
        )
        set_field(self, "neighbour_similarities", similarities)
        if neighbours.shape != similarities.shape:
            raise ProxyRecordError(
                f"item {item_id}: {neighbours.size} neighbours but {similarities.size} "
                "similarities; pass one similarity per neighbour"
            )
        if self.status not in PROXY_STATUSES:
            raise ProxyRecordError(
                f"item {item_id}: status {self.status!r} is not one of {PROXY_STATUSES}"
            )
        set_field(self, "void", bool(self.void))
        if self.void != (self.status != "ok"):
            raise ProxyRecordError(
                f"item {item_id}: void={self.void} contradicts status {self.status!r} "
                "(status is 'ok' exactly when the proxy is not void)"
            )
        if self.void_score is not None:
            score = float(self.void_score)
            if not np.isfinite(score):
                raise ProxyRecordError(f"item {item_id}: void_score must be finite, got {score}")
            set_field(self, "void_score", score)

    @property
    def dim(self) -> int:
        return int(self.proxy.shape[0])

    def order_key(self) -> tuple[int, int, int]:
        """``(source_event_us, kafka_offset, computed_at_us)``; missing values sort lowest.

        A record replaces a stored one with the same ``(item_id, model_version)`` only when
        this key is strictly greater, so replays and out-of-order events never move a row back.
        """
        return (
            NO_EVENT_TS if self.source_event_ts is None else datetime_to_us(self.source_event_ts),
            NO_OFFSET if self.kafka_offset is None else self.kafka_offset,
            datetime_to_us(self.computed_at),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict: arrays as lists, datetimes as ISO-8601 UTC strings."""
        return {
            "item_id": self.item_id,
            "proxy": self.proxy.tolist(),
            "model_version": self.model_version,
            "encoder_fingerprint": self.encoder_fingerprint,
            "id_space_fingerprint": self.id_space_fingerprint,
            "computed_at": self.computed_at.isoformat(),
            "source_event_ts": None
            if self.source_event_ts is None
            else self.source_event_ts.isoformat(),
            "kafka_topic": self.kafka_topic,
            "kafka_partition": self.kafka_partition,
            "kafka_offset": self.kafka_offset,
            "neighbours": self.neighbours.tolist(),
            "neighbour_similarities": self.neighbour_similarities.tolist(),
            "void": self.void,
            "void_score": self.void_score,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyRecord:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ProxyRecordError`."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ProxyRecordError(f"unknown ProxyRecord fields {sorted(unknown)}")
        values = dict(data)
        for name in ("computed_at", "source_event_ts"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        try:
            return cls(**values)
        except TypeError as error:
            raise ProxyRecordError(f"cannot build a ProxyRecord: {error}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ProxyRecord:
        return cls.from_dict(json.loads(text))


def datetime_to_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(value: int) -> datetime:
    """Inverse of :func:`datetime_to_us` (UTC)."""
    return _EPOCH + timedelta(microseconds=int(value))


# ------------------------------------------------------------------ stream input and errors

NEW_ITEM_SCHEMA_VERSION = 1


class DeadLetterReason(StrEnum):
    """Why a record got no proxy row: the stable ``reason`` code of its :class:`DeadLetter`.

    Members are strings (``DeadLetterReason.NOT_JSON == "not_json"``), so the JSON on the
    dead-letter topic and the metrics' ``reason`` label are the plain codes.
    """

    # decode (stream/source.py, backfill/kafka_range.py): the record is not a NewItemEvent
    NOT_JSON = "not_json"  # not UTF-8 JSON, or a tombstone
    WRONG_SHAPE = "wrong_shape"  # not an object, wrong type, two images ...
    UNKNOWN_FIELD = (
        "unknown_field"  # a field NewItemEvent lacks, with unknown_event_fields: dead_letter
    )
    MISSING_ITEM_ID = "missing_item_id"
    MISSING_FIELD = "missing_field"
    NON_FINITE_NUMBER = "non_finite_number"  # NaN / Infinity anywhere in the JSON
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    EVENT_TOO_LARGE = "event_too_large"  # over kafka.max_event_bytes
    TEXT_TOO_LONG = "text_too_long"  # over stream.max_text_chars
    CREATED_AT_OUT_OF_RANGE = "created_at_out_of_range"  # before 1900, or too far in the future
    DECODE_FAILED = "decode_failed"  # any other failure to decode or check the record
    # the image check (encoders/images.py); with stream.image_errors=text_only: text alone
    IMAGE_INVALID = "image_invalid"
    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_OUTSIDE_ALLOWED_ROOTS = "image_outside_allowed_roots"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_DECOMPRESSION_BOMB = "image_decompression_bomb"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_FETCH_FAILED = "image_fetch_failed"
    IMAGE_SOURCE_UNSUPPORTED = "image_source_unsupported"
    # the worker (stream/worker.py) and the source's retry policy (stream/dispatch.py)
    ITEM_ALREADY_MATURE = "item_already_mature"  # served by its own ID embedding
    ENCODE_FAILED = "encode_failed"  # the encoder raised for this item alone
    PROXY_NOT_FINITE = "proxy_not_finite"  # the model produced NaN / inf
    PROCESSING_FAILED = "processing_failed"  # the worker raised max_attempts times for it alone
    WORKER_DIED = "worker_died"  # its worker died max_worker_deaths times with it alone
    # the sink (stream/sink.py)
    PROXY_VOID = "proxy_void"  # void proxy under index.void_policy: dead_letter


# created_at must lie in this range (and not beyond kafka.max_future_skew_s from now): the
# order key holds it in microseconds, exactly, inside a double's integer range.
MIN_CREATED_AT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_CREATED_AT = datetime(2200, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE_SKEW_S = 86_400.0
MAX_MESSAGE_CHARS = 300


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (error messages never echo a whole input)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class InvalidEventError(IdProxyError, ValueError):
    """A Kafka record is not a valid :class:`NewItemEvent`; ``reason`` is a stable code.

    The stream turns it into a :class:`DeadLetter` carrying the reason and the message.
    """

    def __init__(self, reason: DeadLetterReason, message: str, item_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = DeadLetterReason(reason)
        self.item_id = item_id


class NewItemEvent(BaseModel):
    """A new item, as published to the input topic (JSON, UTF-8).

    Text fields match the catalogue's item columns (``data/schema.py``), so the stream builds
    the same encoder text as training (``item_content_text``). At most one image: ``image_uri``
    (``file://``, ``http(s)://``, ``s3://`` or ``data:``) or ``image_base64`` (inline bytes).
    ``created_at`` (ISO-8601 with a time zone, or Unix seconds) becomes the stored row's
    ``source_event_ts``, the first part of its order key.

    Fields this model does not define are ignored (producers add fields before consumers learn
    them); ``kafka.unknown_event_fields: dead_letter`` refuses them instead. The JSON Schema is
    ``NewItemEvent.model_json_schema()`` (``idproxy schema``, ``docs/new_item_event.schema.json``).

    Example::

        {"schema_version": 1, "item_id": 42, "created_at": "2026-03-01T12:00:00Z",
         "title": "Toy Story (1995)", "categories": ["Animation"], "tags": ["pixar"]}
    """

    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    schema_version: Literal[1] = NEW_ITEM_SCHEMA_VERSION
    item_id: StrictInt = Field(ge=INT64_MIN, le=INT64_MAX)
    created_at: AwareDatetime
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    year: int = Field(0, ge=0, le=9999)
    image_uri: str | None = None
    image_base64: str | None = None

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1
            utc = None
        if utc is None or not MIN_CREATED_AT <= utc < MAX_CREATED_AT:
            raise ValueError(
                f"created_at must lie between {MIN_CREATED_AT.year} and {MAX_CREATED_AT.year} "
                "(UTC); send the item's real creation time"
            )
        return utc

    @model_validator(mode="after")
    def _one_image(self) -> NewItemEvent:
        if self.image_uri is not None and self.image_base64 is not None:
            raise ValueError("send either image_uri or image_base64, not both")
        return self

    @property
    def image_reference(self) -> str | None:
        """The image as ``load_image`` reads it (URI or base64), or None."""
        return self.image_uri if self.image_uri is not None else self.image_base64

    def text_chars(self) -> int:
        """Characters of text the encoder would read (title, description, tags, categories)."""
        return (
            len(self.title)
            + len(self.description)
            + sum(len(tag) for tag in self.tags)
            + sum(len(category) for category in self.categories)
        )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def _refuse_non_finite(constant: str) -> float:
    raise InvalidEventError(
        DeadLetterReason.NON_FINITE_NUMBER,
        f"the event holds the JSON constant {constant}: NaN and Infinity are not valid "
        "numbers; send finite values",
    )


def _reason_for(error: ValidationError) -> DeadLetterReason:
    """A stable reason code for the first problem pydantic found."""
    first = error.errors()[0]
    field_name = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "missing":
        if field_name == "item_id":
            return DeadLetterReason.MISSING_ITEM_ID
        return DeadLetterReason.MISSING_FIELD
    if field_name == "schema_version":
        return DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION
    if field_name == "created_at" and first["type"] == "value_error":
        return DeadLetterReason.CREATED_AT_OUT_OF_RANGE
    if first["type"] in ("finite_number",) or "NaN" in str(first.get("msg", "")):
        return DeadLetterReason.NON_FINITE_NUMBER
    return DeadLetterReason.WRONG_SHAPE


def new_item_event_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`NewItemEvent` (what producers publish), from the model."""
    schema = NewItemEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "A new item for the idproxy stream's input topic (one JSON object per Kafka record, "
        "UTF-8). At most one of image_uri (file://, http(s)://, s3://, data:) and image_base64. "
        "Fields not listed here are ignored unless the stream sets "
        "kafka.unknown_event_fields: dead_letter."
    )
    schema["additionalProperties"] = True  # unknown fields are ignored by default
    # pydantic also takes Unix seconds for an aware datetime
    schema["properties"]["created_at"] = {
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
        "description": "ISO-8601 with a time zone, or Unix seconds",
        "title": "Created At",
    }
    return schema


def decode_new_item_event(
    value: bytes | None,
    max_event_bytes: int,
    max_text_chars: int,
    unknown_fields: Literal["ignore", "dead_letter"] = "ignore",
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
    now: datetime | None = None,
) -> NewItemEvent:
    """Bytes of one Kafka record -> a checked :class:`NewItemEvent`.

    ``unknown_fields``: fields the model does not define are ignored, or (``"dead_letter"``,
    strict) refused with reason ``unknown_field``. ``created_at`` later than ``now`` (default:
    the current time) plus ``max_future_skew_s`` seconds is refused: it would pin the item's
    row, since the order key compares it first.

    Raises :class:`InvalidEventError` and nothing else, whatever the bytes: a decode reason of
    :class:`DeadLetterReason` (``event_too_large``, ``not_json``, ``non_finite_number``,
    ``wrong_shape``, ``missing_item_id``, ``missing_field``, ``unsupported_schema_version``,
    ``unknown_field``, ``text_too_long``, ``created_at_out_of_range``), or ``decode_failed``
    for any other exception (named in the message, which is at most a few hundred characters).
    """
    try:
        event = _decode(value, max_event_bytes, max_text_chars, unknown_fields)
        _check_created_at(event, max_future_skew_s, now)
        return event
    except InvalidEventError as error:
        if len(str(error)) <= MAX_MESSAGE_CHARS:
            raise
        raise InvalidEventError(error.reason, bounded(str(error)), error.item_id) from None
    except Exception as error:  # no record may escape the dead-letter path
        raise InvalidEventError(
            DeadLetterReason.DECODE_FAILED,
            bounded(f"the event cannot be decoded ({type(error).__name__}: {error})"),
        ) from None


def _check_created_at(event: NewItemEvent, max_future_skew_s: float, now: datetime | None) -> None:
    latest = (now or datetime.now(UTC)) + timedelta(seconds=max_future_skew_s)
    if event.created_at > latest:
        raise InvalidEventError(
            DeadLetterReason.CREATED_AT_OUT_OF_RANGE,
            f"item {event.item_id}: created_at {event.created_at.isoformat()} is more than "
            f"kafka.max_future_skew_s={max_future_skew_s:g} s in the future; send the real time",
            event.item_id,
        )


def _parse_json(value: bytes) -> Any:
    try:
        return json.loads(value.decode("utf-8"), parse_constant=_refuse_non_finite)
    except InvalidEventError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidEventError(
            DeadLetterReason.NOT_JSON,
            f"the event is not UTF-8 JSON: {error}; publish NewItemEvent JSON",
        ) from None
    except RecursionError:
        raise InvalidEventError(
            DeadLetterReason.NOT_JSON,
            "the event's JSON is nested too deeply to parse: publish flat NewItemEvent JSON",
        ) from None
    except ValueError as error:  # e.g. an integer over Python's int-string digit limit
        raise InvalidEventError(
            DeadLetterReason.WRONG_SHAPE,
            bounded(f"the event holds a value that cannot be read: {error}"),
        ) from None


def _decode(
    value: bytes | None,
    max_event_bytes: int,
    max_text_chars: int,
    unknown_fields: Literal["ignore", "dead_letter"],
) -> NewItemEvent:
    if value is None:
        raise InvalidEventError(DeadLetterReason.NOT_JSON, "the record has no value (a tombstone)")
    if len(value) > max_event_bytes:
        raise InvalidEventError(
            DeadLetterReason.EVENT_TOO_LARGE,
            f"the event has {len(value)} bytes, over max_event_bytes={max_event_bytes}: send "
            "large images by URI instead of inline",
        )
    raw = _parse_json(value)
    if not isinstance(raw, dict):
        raise InvalidEventError(
            DeadLetterReason.WRONG_SHAPE,
            f"the event is a JSON {type(raw).__name__}, not an object: publish NewItemEvent JSON",
        )
    candidate = raw.get("item_id")
    item_id = (
        candidate if isinstance(candidate, int) and INT64_MIN <= candidate <= INT64_MAX else None
    )
    unknown = sorted(set(raw) - set(NewItemEvent.model_fields))
    if unknown and unknown_fields == "dead_letter":
        raise InvalidEventError(
            DeadLetterReason.UNKNOWN_FIELD,
            bounded(
                f"the event has fields NewItemEvent does not define: {unknown}; remove them, or "
                "set kafka.unknown_event_fields: ignore"
            ),
            item_id,
        )
    try:
        event = NewItemEvent.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<event>'}: {item['msg']}"
            for item in error.errors()[:5]
        )
        raise InvalidEventError(
            _reason_for(error), f"the event does not match NewItemEvent: {problems}", item_id
        ) from None
    if event.text_chars() > max_text_chars:
        raise InvalidEventError(
            DeadLetterReason.TEXT_TOO_LONG,
            f"item {event.item_id}: {event.text_chars()} characters of text, over "
            f"max_text_chars={max_text_chars}",
            event.item_id,
        )
    return event


DeadLetterStage = Literal["decode", "worker", "sink"]


DEAD_LETTER_VALUE_BYTES = 4_096
DEAD_LETTER_MESSAGE_CHARS = 1_000
# The longest model version a letter names (proxy/model.py: VERSION_PATTERN, 1 + 127 characters).
DEAD_LETTER_MODEL_VERSION_CHARS = 128


class DeadLetter(BaseModel):
    """A record the stream could not turn into a proxy, as written to the dead-letter topic.

    ``reason`` is a :class:`DeadLetterReason` code and ``message`` (at most
    ``DEAD_LETTER_MESSAGE_CHARS`` characters) says what is wrong; ``topic``/``partition``/
    ``offset`` say where the record is, so it can be read back, fixed and replayed. The letter
    never holds a whole large record: ``value_base64`` / ``key_base64`` are the first
    ``DEAD_LETTER_VALUE_BYTES`` (4 KiB) bytes of the value / key, ``value_bytes`` and
    ``value_sha256`` the whole value's length and SHA-256 (hex), ``value_truncated`` whether
    the prefix is shorter than the value. A 10 MB record thus makes a letter of about 6 KB.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: DeadLetterReason
    message: str = Field(max_length=DEAD_LETTER_MESSAGE_CHARS)
    stage: DeadLetterStage
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int | None = None
    item_id: int | None = None
    model_version: str | None = None
    key_base64: str | None = None
    value_base64: str
    value_bytes: int = Field(0, ge=0)
    value_sha256: str = ""
    value_truncated: bool = False
    failed_at: AwareDatetime

    @classmethod
    def for_record(
        cls,
        *,
        reason: DeadLetterReason,
        message: str,
        stage: DeadLetterStage,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        item_id: int | None = None,
        model_version: str | None = None,
        prefix_bytes: int = DEAD_LETTER_VALUE_BYTES,
    ) -> DeadLetter:
        """A dead letter for one source record: at most ``prefix_bytes`` of its value and key
        (base64), the value's length and SHA-256, and the message cut to its bound."""
        value = value or b""
        return cls(
            reason=reason,
            message=bounded(" ".join(message.split()), DEAD_LETTER_MESSAGE_CHARS),
            stage=stage,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            item_id=item_id,
            model_version=model_version,
            key_base64=None if key is None else base64.b64encode(key[:prefix_bytes]).decode(),
            value_base64=base64.b64encode(value[:prefix_bytes]).decode("ascii"),
            value_bytes=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=len(value) > prefix_bytes,
            failed_at=datetime.now(UTC),
        )

    @classmethod
    def max_json_bytes(cls, topic: str, prefix_bytes: int = DEAD_LETTER_VALUE_BYTES) -> int:
        """The most bytes :meth:`to_json_bytes` can give for a letter about ``topic`` that keeps
        ``prefix_bytes`` of its record: every field at its longest — a message of control
        characters (each escaped to six bytes), int64 extremes, the longest reason and stage,
        the longest model version, a key and a value prefix of ``prefix_bytes`` each."""
        prefix = base64.b64encode(bytes(prefix_bytes)).decode("ascii")
        longest = cls(
            reason=max(DeadLetterReason, key=len),
            message="\x01" * DEAD_LETTER_MESSAGE_CHARS,
            stage=max(get_args(DeadLetterStage), key=len),
            topic=topic,
            partition=INT64_MAX,
            offset=INT64_MAX,
            timestamp_ms=INT64_MIN,
            item_id=INT64_MIN,
            model_version="v" * DEAD_LETTER_MODEL_VERSION_CHARS,
            key_base64=prefix,
            value_base64=prefix,
            value_bytes=INT64_MAX,
            value_sha256="0" * 64,
            value_truncated=False,
            failed_at=datetime.max.replace(tzinfo=UTC),
        )
        return len(longest.to_json_bytes())

    @property
    def original_value(self) -> bytes:
        """The value's prefix held here (the whole value unless ``value_truncated``)."""
        return base64.b64decode(self.value_base64)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DeadLetter:
        return cls.model_validate_json(data)
