"""ProxyRecord and NeighbourCheck: validation, ordering and the JSON round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idproxy_stream.events import (
    MAX_MESSAGE_CHARS,
    DeadLetter,
    DeadLetterReason,
    InvalidEventError,
    NeighbourCheck,
    NewItemEvent,
    ProxyRecord,
    ProxyRecordError,
    datetime_to_us,
    decode_new_item_event,
    new_item_event_schema,
    us_to_datetime,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DOCS = Path(__file__).parent.parent / "docs"


def record(**overrides) -> ProxyRecord:
    fields = {
        "item_id": 1,
        "proxy": np.ones(4, np.float32),
        "model_version": "m1",
        "encoder_fingerprint": "enc",
        "id_space_fingerprint": "ids",
        "computed_at": T0,
    }
    return ProxyRecord(**{**fields, **overrides})


def test_nan_or_inf_in_the_proxy_is_refused_with_positions() -> None:
    with pytest.raises(
        ProxyRecordError, match=r"item 7: proxy holds NaN or inf at positions \[1, 3\]"
    ):
        record(item_id=7, proxy=[0.0, np.nan, 1.0, np.inf])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"item_id": "42"}, "map string ids to int64"),
        ({"item_id": 2**63}, "does not fit in int64"),
        ({"item_id": True}, "int64 integer"),
        ({"proxy": np.ones((2, 2))}, "1-D vector"),
        ({"proxy": []}, "empty"),
        ({"computed_at": datetime(2026, 1, 1)}, "naive datetime"),
        ({"model_version": ""}, "must not be empty"),
        ({"status": "weird"}, "not one of"),
        ({"void": True}, "contradicts status"),
        ({"neighbours": [1, 2], "neighbour_similarities": [0.5]}, "one similarity per neighbour"),
        ({"kafka_offset": -1}, ">= 0"),
        ({"void_score": float("nan")}, "finite"),
    ],
)
def test_malformed_records_are_refused_with_what_to_fix(overrides, message) -> None:
    with pytest.raises(ProxyRecordError, match=message):
        record(**overrides)


def test_times_are_converted_to_utc_and_arrays_are_read_only() -> None:
    plus_two = timezone(timedelta(hours=2))
    made = record(computed_at=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two))
    assert made.computed_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert made.computed_at.tzinfo == UTC
    with pytest.raises(ValueError, match="read-only"):
        made.proxy[0] = 5.0


def test_order_key_ranks_event_time_then_offset_then_computed_at() -> None:
    no_event = record(computed_at=T0 + timedelta(days=9))
    early = record(source_event_ts=T0, kafka_offset=9)
    later_offset = record(source_event_ts=T0, kafka_offset=10)
    recomputed = record(source_event_ts=T0, kafka_offset=10, computed_at=T0 + timedelta(1))
    later_event = record(source_event_ts=T0 + timedelta(seconds=1))
    ordered = [no_event, early, later_offset, recomputed, later_event]
    keys = [r.order_key() for r in ordered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_microsecond_conversion_is_exact_far_from_the_epoch() -> None:
    moment = datetime(2262, 4, 11, 23, 47, 16, 854_775, tzinfo=UTC)
    assert us_to_datetime(datetime_to_us(moment)) == moment


finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(
    item_id=st.integers(-(2**63), 2**63 - 1),
    proxy=st.lists(finite_floats, min_size=1, max_size=32),
    version=st.text(min_size=1, max_size=20),
    offset=st.none() | st.integers(0, 2**53),
    seconds=st.integers(-(10**9), 10**10),
    neighbours=st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), finite_floats), max_size=8),
)
def test_json_round_trip_is_exact(item_id, proxy, version, offset, seconds, neighbours) -> None:
    made = record(
        item_id=item_id,
        proxy=proxy,
        model_version=version,
        kafka_offset=offset,
        kafka_partition=None if offset is None else 0,
        kafka_topic=None if offset is None else "t",
        source_event_ts=T0 + timedelta(seconds=seconds, microseconds=7),
        neighbours=[n for n, _ in neighbours],
        neighbour_similarities=[s for _, s in neighbours],
        void=True,
        void_score=0.5,
        status="knn_fallback",
    )
    again = ProxyRecord.from_json(made.to_json())
    assert again == made
    np.testing.assert_array_equal(again.proxy, np.asarray(proxy, np.float32))
    assert again.order_key() == made.order_key()


def test_from_dict_refuses_unknown_fields() -> None:
    data = record().to_dict() | {"colour": "red"}
    with pytest.raises(ProxyRecordError, match="colour"):
        ProxyRecord.from_dict(data)


def test_neighbour_checks_compare_by_value() -> None:
    a = NeighbourCheck(np.array([1, 2]), np.array([0.9, 0.8], np.float32), 0.6, False)
    b = NeighbourCheck(np.array([1, 2]), np.array([0.9, 0.8], np.float32), 0.6, False)
    assert a == b and a != NeighbourCheck(a.neighbour_ids, a.similarities, 0.7, False)


# ----------------------------------------------------------- NewItemEvent and DeadLetter


def decode(value: bytes, max_event_bytes: int = 10_000, max_text_chars: int = 100):
    return decode_new_item_event(value, max_event_bytes, max_text_chars)


def test_a_valid_event_round_trips_and_keeps_utc_time() -> None:
    event = NewItemEvent(
        item_id=42,
        created_at=datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        title="Toy Story (1995)",
        tags=("pixar",),
        categories=("Animation",),
    )
    again = decode(event.to_json_bytes())
    assert again == event
    assert again.created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert decode(b'{"item_id": 7, "created_at": 1772366400}').created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (b"\xff not json", "not_json", "not UTF-8 JSON"),
        (b"[1, 2]", "wrong_shape", "JSON list, not an object"),
        (b'{"created_at": "2026-03-01T00:00:00Z"}', "missing_item_id", "item_id"),
        (b'{"item_id": 1}', "missing_field", "created_at"),
        (b'{"item_id": "1", "created_at": 1}', "wrong_shape", "item_id"),
        (b'{"item_id": 1, "created_at": NaN}', "non_finite_number", "NaN"),
        (b'{"item_id": 1, "created_at": 1, "year": Infinity}', "non_finite_number", "Infinity"),
        (b'{"item_id": 1, "created_at": "2026-03-01T00:00:00"}', "wrong_shape", "timezone"),
        (
            b'{"item_id": 1, "created_at": 1, "schema_version": 2}',
            "unsupported_schema_version",
            "schema_version",
        ),
        (b'{"item_id": 1, "created_at": 1, "title": "%s"}' % (b"x" * 101), "text_too_long", "101"),
        (b" " * 10_001, "event_too_large", "max_event_bytes"),
        (
            b'{"item_id": 1, "created_at": 1, "image_uri": "a", "image_base64": "b"}',
            "wrong_shape",
            "not both",
        ),
    ],
)
def test_invalid_records_get_a_stable_reason_and_a_message(value, reason, message) -> None:
    with pytest.raises(InvalidEventError, match=message) as caught:
        decode(value)
    assert caught.value.reason == reason


def test_an_unknown_field_is_ignored_by_default_so_producers_can_add_fields_first() -> None:
    event = decode(b'{"item_id": 1, "created_at": 1, "title": "t", "colour": "red"}')
    assert (event.item_id, event.title) == (1, "t")
    assert "colour" not in event.model_dump()


def test_strict_unknown_fields_refuse_the_event_naming_the_fields() -> None:
    value = b'{"item_id": 5, "created_at": 1, "colour": "red", "size": 2}'
    with pytest.raises(
        InvalidEventError, match=r"\['colour', 'size'\].*unknown_event_fields"
    ) as caught:
        decode_new_item_event(value, 10_000, 100, unknown_fields="dead_letter")
    assert (caught.value.reason, caught.value.item_id) == ("unknown_field", 5)
    assert decode_new_item_event(b'{"item_id": 5, "created_at": 1}', 10_000, 100, "dead_letter")


def test_the_published_json_schema_is_the_one_the_model_gives() -> None:
    published = json.loads((DOCS / "new_item_event.schema.json").read_text())
    assert published == new_item_event_schema()
    assert set(published["required"]) == {"item_id", "created_at"}
    assert published["additionalProperties"] is True


def test_a_dead_letter_keeps_the_original_bytes_and_coordinates() -> None:
    letter = DeadLetter.for_record(
        reason="not_json",
        message="not JSON",
        stage="decode",
        topic="new-items",
        partition=3,
        offset=17,
        value=b"\x00\xffraw",
        key=b"42",
        timestamp_ms=1_700_000_000_000,
    )
    again = DeadLetter.from_json_bytes(letter.to_json_bytes())
    assert again == letter
    assert again.original_value == b"\x00\xffraw"
    assert (again.topic, again.partition, again.offset) == ("new-items", 3, 17)


def test_every_dead_letter_reason_is_documented_and_every_documented_one_exists():
    import re
    from pathlib import Path

    from idproxy_stream.events import DeadLetterReason

    text = (Path(__file__).resolve().parents[1] / "docs" / "stream.md").read_text()
    table = text[text.index("| reason | cause |") :].split("\n\n")[0]
    documented = {
        code for row in table.splitlines()[2:] for code in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    assert documented == {reason.value for reason in DeadLetterReason}


# ------------------------------------------------- hostile records never escape the dead letter

# The three records that killed the source actor (issue 12, item 1), and other hostile ones.
OVERFLOWING_CREATED_AT = b'{"item_id":5,"created_at":"0001-01-01T00:00:00+01:00"}'
HUGE_ITEM_ID = b'{"item_id":' + b"9" * 5_000 + b',"created_at":1}'
DEEP_NESTING = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"item_id":1,"created_at":1,"tags":' + b'{"a":' * 40_000 + b"1" + b"}" * 40_001
FAR_FUTURE = b'{"item_id":6,"created_at":"9999-12-31T23:59:59Z"}'


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (OVERFLOWING_CREATED_AT, "created_at_out_of_range", "between 1900 and 2200"),
        (HUGE_ITEM_ID, "wrong_shape", "cannot be read"),
        (DEEP_NESTING, "not_json", "nested too deeply"),
        (DEEP_OBJECT, "not_json", "nested too deeply"),
        (FAR_FUTURE, "created_at_out_of_range", "between 1900 and 2200"),
        (b'{"item_id":6,"created_at":"1899-12-31T23:59:59Z"}', "created_at_out_of_range", "1900"),
        (b'{"item_id":6,"created_at":1e300}', "wrong_shape", "created_at"),
        (b'{"item_id":' + b"9" * 40 + b',"created_at":1}', "wrong_shape", "item_id"),
    ],
)
def test_records_that_used_to_kill_the_source_are_refused_with_a_reason(
    value, reason, message
) -> None:
    with pytest.raises(InvalidEventError, match=message) as caught:
        decode_new_item_event(value, 300_000, 100)
    assert caught.value.reason == reason
    assert len(str(caught.value)) <= MAX_MESSAGE_CHARS and "\n" not in str(caught.value)


def test_created_at_beyond_the_future_skew_is_refused_and_within_it_accepted() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    soon = b'{"item_id":6,"created_at":"2026-03-01T23:00:00Z"}'
    later = b'{"item_id":6,"created_at":"2026-03-02T01:00:00Z"}'
    assert decode_new_item_event(soon, 1_000, 100, now=now).item_id == 6
    with pytest.raises(InvalidEventError, match="max_future_skew_s=86400") as caught:
        decode_new_item_event(later, 1_000, 100, now=now)
    assert (caught.value.reason, caught.value.item_id) == ("created_at_out_of_range", 6)
    assert decode_new_item_event(later, 1_000, 100, max_future_skew_s=2 * 86_400, now=now)


def test_an_unexpected_exception_while_decoding_becomes_decode_failed(monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(NewItemEvent, "model_validate", explode)
    with pytest.raises(InvalidEventError, match="MemoryError") as caught:
        decode_new_item_event(b'{"item_id":1,"created_at":1}', 1_000, 100)
    assert caught.value.reason == "decode_failed"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**20, max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z", "2026-03-01T00:00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
event_fields = st.sampled_from(sorted(NewItemEvent.model_fields))
hostile_objects = st.dictionaries(event_fields | st.text(max_size=6), json_values, max_size=6)


hostile_records = st.one_of(
    st.binary(max_size=64),
    hostile_objects.map(lambda obj: json.dumps(obj).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 120_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 6_000).map(lambda digits: b'{"item_id":%s,"created_at":1}' % (b"7" * digits)),
    st.sampled_from(
        [OVERFLOWING_CREATED_AT, HUGE_ITEM_ID, DEEP_NESTING, FAR_FUTURE, b"NaN", b"-Infinity"]
    ),
)


def valid_record(item_id: int) -> bytes:
    return NewItemEvent(item_id=item_id, created_at=T0, title=f"film {item_id}").to_json_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), hostile_records), min_size=1, max_size=12))
def test_hostile_records_never_escape_the_dead_letter_path_and_valid_ones_all_pass(
    mixed,
) -> None:
    """Decode a stream of hostile records interleaved with valid events, as the source does:
    every hostile one raises InvalidEventError (one bounded line), every valid one decodes."""
    accepted, refused = [], 0
    expected = []
    for position, (valid, hostile) in enumerate(mixed):
        value = valid_record(position) if valid else hostile
        if valid:
            expected.append(position)
        try:
            event = decode_new_item_event(value, 300_000, 1_000)
        except InvalidEventError as error:
            assert error.reason in DeadLetterReason.__members__.values()
            assert len(str(error)) <= MAX_MESSAGE_CHARS and "\n" not in str(error)
            refused += 1
            continue
        if valid:
            accepted.append(event.item_id)
    assert accepted == expected
