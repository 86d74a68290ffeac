"""Whether the driver that started a source actor still runs: sources stop on their own.

Ray ends an actor when its owner dies (sources are owned by the driver, workers and sinks by
their source), but it learns of a SIGKILLed driver late: meanwhile the sources poll, dispatch
and commit. A source on the driver's node therefore looks at the driver's process itself
(:class:`DriverWatch`: its pid and the start time the kernel records for it, so a reused pid
is not mistaken for the driver) and stops within ``CHECK_INTERVAL_S`` of the driver's end. On
another node it relies on Ray alone (``docs/stream.md``: when the driver dies).
"""

from __future__ import annotations

import os

from idproxy_stream.config import FrozenModel

CHECK_INTERVAL_S = 0.5


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22),
    or None when it is gone, a zombie, or ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # ended; only its exit status is left
        return None
    return int(fields[19])


class DriverWatch(FrozenModel):
    """The driver's process as its actors find it: the Ray node it runs on, pid, start ticks."""

    node_id: str
    pid: int
    start_ticks: int

    @classmethod
    def of_this_process(cls) -> DriverWatch | None:
        """This process (a connected Ray driver); None where ``/proc`` cannot tell."""
        import ray

        start_ticks = process_start_ticks(os.getpid())
        if start_ticks is None:
            return None
        node_id = ray.get_runtime_context().get_node_id()
        return cls(node_id=node_id, pid=os.getpid(), start_ticks=start_ticks)

    def watchable_from(self, node_id: str) -> bool:
        """Whether an actor on ``node_id`` can see the driver's process (the same node)."""
        return node_id == self.node_id

    def driver_gone(self) -> bool:
        return process_start_ticks(self.pid) != self.start_ticks
