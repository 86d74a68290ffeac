"""The dead-letter outbox: send dead letters, learn which the broker acknowledged, re-send the
rest after a back-off, or give up on those the broker will never take.

A record that gets no proxy row is handled once its :class:`~idproxy_stream.events.DeadLetter`
is on the dead-letter topic; only then may its offset be committed. :meth:`DeadLetterOutbox.send`
hands letters to the producer (never blocking on the broker), :meth:`DeadLetterOutbox.acknowledged`
returns those the broker has — the source then completes their records in the ledger — and
sends again those that failed, as long as their records are still current (the ledger's rule,
passed in as ``is_current``). A letter that failed once goes out again at once; after that it
waits a jittered, capped back-off (:class:`~idproxy_stream.stream.backoff.Backoff`, 0.2 s
doubling to 5 s) before each re-send, so a refusing broker never turns the source into a busy
loop. An error that no re-send can fix (``fatal_errors``, e.g. ``MessageSizeTooLargeError``)
gives the letter up: it is logged and counted (:attr:`DeadLetterOutbox.gave_up`) and returned
by :meth:`DeadLetterOutbox.acknowledged` with ``delivered=False``, so its record completes and
the partition still commits. Dead letters are at-least-once like everything else: after a
crash a record's dead letter may appear twice; readers deduplicate on
``(topic, partition, offset)``.

No Kafka here beyond the producer's ``send`` and its futures (``is_done``, ``succeeded()``,
``exception``): ``tests/stream/test_outbox.py`` uses a fake producer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from idproxy_stream.events import DEAD_LETTER_VALUE_BYTES, DeadLetter
from idproxy_stream.stream.backoff import Backoff
from idproxy_stream.stream.ledger import HeldRecord
from idproxy_stream.stream.messages import Rejection
from idproxy_stream.stream.offsets import Ticket

logger = logging.getLogger(__name__)


SEND_BACKOFF = Backoff(base_s=0.2, max_s=5.0, jitter=0.5)


def dead_letter_for(
    held: HeldRecord,
    rejection: Rejection,
    topic: str,
    model_version: str | None,
    prefix_bytes: int = DEAD_LETTER_VALUE_BYTES,
) -> DeadLetter:
    """The dead letter of a held record: the refusal, its coordinates, a bounded prefix of its
    bytes and their digest (``DeadLetter.for_record``)."""
    return DeadLetter.for_record(
        reason=rejection.reason,
        message=rejection.message,
        stage=rejection.stage,
        topic=topic,
        partition=held.ticket.partition,
        offset=held.ticket.offset,
        value=held.value,
        key=held.key,
        timestamp_ms=held.timestamp_ms,
        item_id=rejection.item_id if rejection.item_id is not None else held.item_id,
        model_version=model_version,
        prefix_bytes=prefix_bytes,
    )


def dead_letter_key(key: bytes | None, prefix_bytes: int = DEAD_LETTER_VALUE_BYTES) -> bytes | None:
    """The Kafka key of a record's dead letter: the record's key, cut to the letter's prefix
    like ``key_base64``, so that every letter fits the dead-letter producer's request size
    (``clients.dead_letter_request_bytes``) whatever the record's key."""
    return None if key is None else key[:prefix_bytes]


@dataclass
class PendingLetter:
    """A dead letter on its way to the broker; ``sends`` counts the tries so far.

    delivered: False once the outbox gave the letter up (a fatal error): its record is then
        complete without a letter on the topic.
    not_before: the monotonic time before which a failed letter is not sent again.
    """

    ticket: Ticket
    letter: DeadLetter
    key: bytes | None
    future: Any = None
    error: Exception | None = None
    sends: int = 0
    delivered: bool = True
    not_before: float = 0.0


class DeadLetterOutbox:
    """Dead letters sent and not yet acknowledged, for one source.

    Example::

        outbox = DeadLetterOutbox(producer, "new-items.dlq", ledger.is_current)
        outbox.send([PendingLetter(ticket, letter, key)])
        for pending in outbox.acknowledged():      # on the broker: complete the records
            ledger.complete(pending.ticket)
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        is_current: Callable[[Ticket], bool],
        send_errors: tuple[type[Exception], ...] = (Exception,),
        fatal_errors: tuple[type[Exception], ...] = (),
        backoff: Backoff = SEND_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.is_current = is_current
        self.send_errors = send_errors
        self.fatal_errors = fatal_errors
        self.backoff = backoff
        self.clock = clock
        self.rng = rng or random.Random()
        self.pending: list[PendingLetter] = []  # handed to the producer
        self.waiting: list[PendingLetter] = []  # failed, to be sent again after not_before
        self.given_up: list[PendingLetter] = []  # fatal errors, not yet reported
        self.resends = 0
        self.gave_up = 0  # letters given up on fatal errors, in all

    def __len__(self) -> int:
        return len(self.pending) + len(self.waiting) + len(self.given_up)

    def send(self, letters: Iterable[PendingLetter]) -> None:
        """Hand ``letters`` to the producer (a failure to hand over is retried later)."""
        for pending in letters:
            pending.sends += 1
            try:
                pending.future = self.producer.send(
                    self.topic, key=pending.key, value=pending.letter.to_json_bytes()
                )
                pending.error = None
            except self.fatal_errors as error:
                pending.future, pending.error = None, error
                self._give_up(pending)
                continue
            except self.send_errors as error:  # e.g. no metadata while the broker is away
                pending.future, pending.error = None, error
            self.pending.append(pending)
            if pending.sends == 1:
                letter = pending.letter
                logger.info(
                    "dead letter: %s at %s/%d@%d",
                    letter.reason,
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    extra={"reason": str(letter.reason), "item_id": letter.item_id},
                )

    def acknowledged(self) -> list[PendingLetter]:
        """Dead letters the broker now has, and those given up (``delivered=False``); failed
        sends of current records wait their back-off, then go out again."""
        now = self.clock()
        done = [p for p in self.pending if p.future is None or p.future.is_done]
        finished = {id(p) for p in done}
        self.pending = [p for p in self.pending if id(p) not in finished]
        acknowledged, self.given_up = self.given_up, []
        for pending in done:
            if pending.future is not None and pending.future.succeeded():
                acknowledged.append(pending)
                continue
            error = pending.error if pending.future is None else pending.future.exception
            if not self.is_current(pending.ticket):
                continue
            if isinstance(error, self.fatal_errors):
                pending.error = error
                self._give_up(pending)
                continue
            delay = self.backoff.delay(pending.sends - 1, self.rng)  # the first re-send at once
            pending.not_before = now + delay
            logger.warning(
                "re-sending a dead letter (%s) in %.1f s: %s", pending.letter.reason, delay, error
            )
            self.waiting.append(pending)
        due = [p for p in self.waiting if p.not_before <= now and self.is_current(p.ticket)]
        self.waiting = [p for p in self.waiting if p.not_before > now and self.is_current(p.ticket)]
        self.resends += len(due)
        self.send(due)
        acknowledged += self.given_up
        self.given_up = []
        return acknowledged

    def _give_up(self, pending: PendingLetter) -> None:
        """No re-send can deliver this letter: report it as done without a letter."""
        pending.delivered = False
        self.gave_up += 1
        self.given_up.append(pending)
        letter = pending.letter
        logger.error(
            "dead letter for %s/%d@%d (%s) given up, %d so far: the broker refuses it (%s)",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.reason,
            self.gave_up,
            pending.error,
            extra={"reason": str(letter.reason), "item_id": letter.item_id},
        )
