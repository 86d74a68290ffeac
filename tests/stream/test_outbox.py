"""DeadLetterOutbox with a fake producer: acknowledged letters complete, failures go out
again while their records are current (at once, then after a jittered, capped back-off),
letters the broker will never take are given up so their records complete, and a letter
carries a bounded prefix of the record's bytes with their digest."""

from __future__ import annotations

import hashlib
import itertools
import random

from idproxy_stream.events import DeadLetter, DeadLetterReason
from idproxy_stream.stream.ledger import InFlightLedger
from idproxy_stream.stream.messages import Rejection
from idproxy_stream.stream.offsets import Ticket
from idproxy_stream.stream.outbox import DeadLetterOutbox, PendingLetter, dead_letter_for

TOPIC = "items.dlq"


class NoMetadata(Exception):
    """Stands in for kafka-python's error when the broker is away."""


class FakeFuture:
    def __init__(self) -> None:
        self.is_done, self._ok, self.exception = False, False, None

    def resolve(self, ok: bool) -> None:
        self.is_done, self._ok = True, ok
        self.exception = None if ok else NoMetadata("broker away")

    def succeeded(self) -> bool:
        return self._ok


class FakeProducer:
    def __init__(self, refuse_first: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[FakeFuture] = []
        self.refuse = refuse_first

    def send(self, topic, key=None, value=None):
        if self.refuse:
            self.refuse -= 1
            raise NoMetadata("no metadata for the topic")
        self.sent.append((topic, key, value))
        self.futures.append(FakeFuture())
        return self.futures[-1]


def letter_for(ledger: InFlightLedger, offset: int) -> PendingLetter:
    ticket = ledger.receive(0, offset, b"k", b"\xff not json", 1_700_000_000_000)
    rejection = Rejection(0, offset, None, DeadLetterReason.NOT_JSON, "not JSON", "decode")
    letter = dead_letter_for(ledger.held(ticket), rejection, "items", None)
    return PendingLetter(ticket, letter, b"k")


def test_a_letter_completes_only_once_the_broker_acknowledges_it() -> None:
    ledger, producer = InFlightLedger(), FakeProducer()
    outbox = DeadLetterOutbox(producer, TOPIC, ledger.is_current, (NoMetadata,))
    outbox.send([letter_for(ledger, 3)])
    assert outbox.acknowledged() == [] and len(outbox) == 1
    producer.futures[0].resolve(ok=True)
    [done] = outbox.acknowledged()
    assert done.ticket == Ticket(0, 3, 0) and len(outbox) == 0
    topic, key, value = producer.sent[0]
    letter = DeadLetter.from_json_bytes(value)
    assert (topic, key) == (TOPIC, b"k")
    assert (letter.reason, letter.offset, letter.original_value) == (
        "not_json",
        3,
        b"\xff not json",
    )
    assert letter.timestamp_ms == 1_700_000_000_000


def test_a_failed_send_goes_out_again_while_its_record_is_current() -> None:
    ledger, producer = InFlightLedger(), FakeProducer()
    outbox = DeadLetterOutbox(producer, TOPIC, ledger.is_current, (NoMetadata,))
    outbox.send([letter_for(ledger, 1), letter_for(ledger, 2)])
    ledger.abandon({0})  # the partition moved away: offsets 1 and 2 are not ours any more
    fresh = letter_for(ledger, 5)
    outbox.send([fresh])
    for future in producer.futures:
        future.resolve(ok=False)
    assert outbox.acknowledged() == []
    assert len(producer.sent) == 4 and outbox.resends == 1  # only the current one again
    producer.futures[-1].resolve(ok=True)
    assert [p.ticket for p in outbox.acknowledged()] == [fresh.ticket]
    assert fresh.sends == 2


def test_a_letter_the_producer_refuses_to_take_is_sent_again_later() -> None:
    ledger, producer = InFlightLedger(), FakeProducer(refuse_first=1)
    outbox = DeadLetterOutbox(producer, TOPIC, ledger.is_current, (NoMetadata,))
    pending = letter_for(ledger, 9)
    outbox.send([pending])  # raises inside: kept, with the error
    assert producer.sent == [] and pending.error is not None
    assert outbox.acknowledged() == [] and len(producer.sent) == 1  # re-sent
    producer.futures[0].resolve(ok=True)
    assert [p.ticket for p in outbox.acknowledged()] == [pending.ticket]


class TooLarge(Exception):
    """Stands in for kafka-python's MessageSizeTooLargeError (no re-send can fix it)."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_huge_record_makes_a_bounded_letter_with_digest_and_coordinates() -> None:
    ledger = InFlightLedger()
    value = b"{" + b"x" * 10_000_000
    ticket = ledger.receive(2, 41, b"key", value, None)
    rejection = Rejection(2, 41, None, DeadLetterReason.EVENT_TOO_LARGE, "too big", "decode")
    letter = dead_letter_for(ledger.held(ticket), rejection, "items", None)
    encoded = letter.to_json_bytes()
    assert len(encoded) < 7_000
    again = DeadLetter.from_json_bytes(encoded)
    assert again.original_value == value[:4_096] and again.value_truncated
    assert again.value_bytes == 10_000_001
    assert again.value_sha256 == hashlib.sha256(value).hexdigest()
    assert (again.topic, again.partition, again.offset) == ("items", 2, 41)
    small = dead_letter_for(ledger.held(ticket), rejection, "items", None, prefix_bytes=16)
    assert small.original_value == value[:16]


def test_repeated_failures_back_off_jittered_and_capped_instead_of_spinning() -> None:
    ledger, producer, clock = InFlightLedger(), FakeProducer(), Clock()
    outbox = DeadLetterOutbox(
        producer, TOPIC, ledger.is_current, (NoMetadata,), clock=clock, rng=random.Random(1)
    )
    pending = letter_for(ledger, 4)
    outbox.send([pending])
    delays = []
    for _ in range(12):
        producer.futures[-1].resolve(ok=False)
        sent = len(producer.sent)
        outbox.acknowledged()
        while len(producer.sent) == sent:  # not sent again until its back-off has passed
            clock.now += 0.05
            outbox.acknowledged()
        delays.append(pending.not_before)
    gaps = [later - earlier for earlier, later in itertools.pairwise(delays)]
    assert all(gap <= 5.0 + 0.05 for gap in gaps) and max(gaps) > 2.0  # capped, growing
    assert len(producer.sent) == 13 and len(outbox) == 1


def test_a_letter_the_broker_will_never_take_is_given_up_and_its_record_completes() -> None:
    ledger, producer = InFlightLedger(), FakeProducer()
    outbox = DeadLetterOutbox(
        producer, TOPIC, ledger.is_current, (NoMetadata,), fatal_errors=(TooLarge,)
    )
    refused, fine = letter_for(ledger, 1), letter_for(ledger, 2)
    outbox.send([refused, fine])
    producer.futures[0].is_done, producer.futures[0].exception = True, TooLarge("too large")
    producer.futures[1].resolve(ok=True)
    done = outbox.acknowledged()
    assert {(p.ticket.offset, p.delivered) for p in done} == {(1, False), (2, True)}
    assert outbox.gave_up == 1 and len(outbox) == 0 and len(producer.sent) == 2
    for pending in done:
        ledger.complete(pending.ticket)
    assert ledger.commit_positions({0}) == {0: 3}


def test_a_letter_refused_synchronously_as_too_large_is_given_up_at_once() -> None:
    class RefusingProducer(FakeProducer):
        def send(self, topic, key=None, value=None):
            raise TooLarge("the message is 20000000 bytes")

    ledger = InFlightLedger()
    outbox = DeadLetterOutbox(
        RefusingProducer(), TOPIC, ledger.is_current, (NoMetadata,), fatal_errors=(TooLarge,)
    )
    outbox.send([letter_for(ledger, 0)])
    [done] = outbox.acknowledged()
    assert not done.delivered and outbox.gave_up == 1 and outbox.acknowledged() == []
