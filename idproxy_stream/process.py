"""Process-wide settings (log handlers, torch and faiss threads), applied once by whoever starts a
process.

Library constructors never touch them. The entry points do: the CLI and the ``jobs/`` scripts
for their own process, :class:`~idproxy_stream.stream.actors.ActorSpec` for each stream and
backfill actor (before the actor's constructor runs), and the Ray Data actors of extraction
when they start. This module is the one place the package sets torch's and faiss' thread
counts.

Example::

    ProcessSetup(log_level="INFO", log_format="json", torch_threads=1).apply()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


def set_torch_threads(count: int | None) -> None:
    """Give torch ``count`` CPU threads in this process (None leaves torch's default)."""
    if count is None:
        return
    import torch

    torch.set_num_threads(count)


def set_faiss_threads(count: int | None) -> None:
    """Give faiss ``count`` OpenMP threads in this process (None leaves faiss' default)."""
    if count is None:
        return
    import faiss

    faiss.omp_set_num_threads(count)


@dataclass(frozen=True)
class ProcessSetup:
    """What a process of a job sets for itself when it starts.

    log_level / log_format: the root log handler (``stream/logs.py``); None leaves logging as
        it is. At WARNING and above, weight-loading progress bars are turned off too.
    torch_threads: torch CPU threads; None leaves torch's default (one per core).
    faiss_threads: faiss OpenMP threads (``index.num_threads``); None leaves faiss' default.
    """

    log_level: str | None = None
    log_format: str = "text"
    torch_threads: int | None = None
    faiss_threads: int | None = None

    def apply(self) -> None:
        if self.log_level is not None:
            from idproxy_stream.stream.logs import configure_logging

            configure_logging(self.log_level, self.log_format)
            if logging.getLogger().level >= logging.WARNING:
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
        set_torch_threads(self.torch_threads)
        set_faiss_threads(self.faiss_threads)
