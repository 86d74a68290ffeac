"""The dead-letter outbox: send dead letters, learn which the broker acknowledged, re-send the
rest.

A record that gets no proxy row is handled once its :class:`~idproxy_stream.events.DeadLetter`
is on the dead-letter topic; only then may its offset be committed. :meth:`DeadLetterOutbox.send`
hands letters to the producer (never blocking on the broker), :meth:`DeadLetterOutbox.acknowledged`
returns those the broker has — the source then completes their records in the ledger — and
sends again those that failed, as long as their records are still current (the ledger's rule,
passed in as ``is_current``). Dead letters are at-least-once like everything else: after a
crash a record's dead letter may appear twice; readers deduplicate on
``(topic, partition, offset)``.

No Kafka here beyond the producer's ``send`` and its futures (``is_done``, ``succeeded()``,
``exception``): ``tests/stream/test_outbox.py`` uses a fake producer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from idproxy_stream.events import DeadLetter
from idproxy_stream.stream.ledger import HeldRecord
from idproxy_stream.stream.messages import Rejection
from idproxy_stream.stream.offsets import Ticket

logger = logging.getLogger(__name__)


def dead_letter_for(
    held: HeldRecord, rejection: Rejection, topic: str, model_version: str | None
) -> DeadLetter:
    """The dead letter of a held record: the refusal, its coordinates and original bytes."""
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
    )


@dataclass
class PendingLetter:
    """A dead letter on its way to the broker; ``sends`` counts the tries so far."""

    ticket: Ticket
    letter: DeadLetter
    key: bytes | None
    future: Any = None
    error: Exception | None = None
    sends: int = 0


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
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.is_current = is_current
        self.send_errors = send_errors
        self.pending: list[PendingLetter] = []
        self.resends = 0

    def __len__(self) -> int:
        return len(self.pending)

    def send(self, letters: Iterable[PendingLetter]) -> None:
        """Hand ``letters`` to the producer (a failure to hand over is retried later)."""
        for pending in letters:
            pending.sends += 1
            try:
                pending.future = self.producer.send(
                    self.topic, key=pending.key, value=pending.letter.to_json_bytes()
                )
                pending.error = None
            except self.send_errors as error:  # e.g. no metadata while the broker is away
                pending.future, pending.error = None, error
            self.pending.append(pending)
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
        """Dead letters the broker now has; failed sends of current records go out again."""
        done = [p for p in self.pending if p.future is None or p.future.is_done]
        if not done:
            return []
        finished = {id(p) for p in done}
        self.pending = [p for p in self.pending if id(p) not in finished]
        acknowledged, again = [], []
        for pending in done:
            if pending.future is not None and pending.future.succeeded():
                acknowledged.append(pending)
            elif self.is_current(pending.ticket):
                again.append(pending)
        for pending in again:
            error = pending.error if pending.future is None else pending.future.exception
            logger.warning("re-sending a dead letter (%s): %s", pending.letter.reason, error)
        self.resends += len(again)
        self.send(again)
        return acknowledged
