"""Supervised Ray actors: how to start one (:class:`ActorSpec`) and replace it when it dies.

The stream's classes (``ProxyWorker``, ``ProxySink``, ``StreamSource``) are plain Python that
change no process-wide state; an :class:`ActorSpec` names the class, its Ray options, its
constructor arguments and the :class:`~idproxy_stream.process.ProcessSetup` of the actor's
process (log handlers, torch threads), which runs in that process before the constructor. So
whoever owns the actor can start it again, and the same classes run in a test or a benchmark
without touching that process's logging.

An :class:`ActorSlot` holds the current handle and a generation number: several failed calls
may report the same death, and only the first one (whose generation still matches) replaces
the actor.

Supervision is explicit rather than Ray's ``max_restarts``: ``ray.kill`` (an operator, a test)
ends an actor for good, and a dead actor's queued calls must be re-sent anyway; the owner
re-submits the affected batches and commits offsets only for completed writes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from idproxy_stream.process import ProcessSetup

logger = logging.getLogger(__name__)


@functools.cache
def hosted(cls: type) -> type:
    """``cls`` behind a constructor that first applies the process setup it is given.

    ``hosted(cls)(setup, *args)`` runs ``setup.apply()`` then ``cls(*args)``: the actor's
    process is configured by its host, not by ``cls``'s constructor.
    """

    class Hosted(cls):  # type: ignore[misc, valid-type]
        def __init__(self, setup: ProcessSetup, *args: Any) -> None:
            setup.apply()
            super().__init__(*args)

    Hosted.__name__ = Hosted.__qualname__ = cls.__name__
    Hosted.__doc__ = cls.__doc__
    return Hosted


@dataclass(frozen=True)
class ActorSpec:
    """A Ray actor to start: ``cls(*args)`` with Ray ``options`` in a process set up by
    ``process``."""

    cls: type
    options: dict[str, Any] = field(default_factory=dict)
    args: tuple = ()
    process: ProcessSetup = field(default_factory=ProcessSetup)

    def start(self) -> ray.actor.ActorHandle:
        return ray.remote(hosted(self.cls)).options(**self.options).remote(self.process, *self.args)


class ActorSlot:
    """The current actor for one role, replaced when it dies."""

    def __init__(self, spec: ActorSpec, role: str) -> None:
        self.spec = spec
        self.role = role
        self.generation = 0
        self.restarts = 0
        self.handle = spec.start()

    def replace(self, generation: int) -> bool:
        """Start a new actor if ``generation`` is still current; False if already replaced."""
        if generation != self.generation:
            return False
        try:
            ray.kill(self.handle, no_restart=True)
        except Exception as error:  # already gone is fine
            logger.debug("killing the dead %s actor: %s", self.role, error)
        self.handle = self.spec.start()
        self.generation += 1
        self.restarts += 1
        logger.warning(
            "replaced the %s actor (generation %d)",
            self.role,
            self.generation,
            extra={"role": self.role, "generation": self.generation},
        )
        return True

    def stop(self) -> None:
        try:
            ray.kill(self.handle, no_restart=True)
        except Exception as error:
            logger.debug("stopping the %s actor: %s", self.role, error)
