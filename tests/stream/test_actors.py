"""``stream/actors.py``: an actor's process is set up by its host, before its constructor."""

from __future__ import annotations

import logging

import torch

from idproxy_stream.process import ProcessSetup
from idproxy_stream.stream.actors import ActorSpec, hosted


class Probe:
    """Records what the process looked like when it was built."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.threads = torch.get_num_threads()
        self.handlers = list(logging.getLogger().handlers)


def test_the_host_applies_the_process_setup_before_the_constructor_runs() -> None:
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    try:
        probe = hosted(Probe)(ProcessSetup("WARNING", "json", torch_threads=1), "lane-0")
        assert probe.label == "lane-0" and probe.threads == 1
        assert len(probe.handlers) == 1 and probe.handlers != handlers
        assert type(probe).__name__ == "Probe" and isinstance(probe, Probe)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        torch.set_num_threads(threads)


def test_the_plain_class_changes_nothing_and_a_spec_carries_its_setup() -> None:
    root = logging.getLogger()
    handlers, threads = list(root.handlers), torch.get_num_threads()
    Probe("plain")
    assert list(root.handlers) == handlers and torch.get_num_threads() == threads
    spec = ActorSpec(Probe, {"num_cpus": 0.1}, ("x",), ProcessSetup(torch_threads=2))
    assert spec.process.torch_threads == 2 and hosted(Probe) is hosted(Probe)
