"""Structured logs for the stream: one JSON object per line, or plain text.

Every process of a job (the driver and each actor) calls :func:`configure_logging` with the
job's settings. Fields passed through ``extra={...}`` land as top-level JSON keys, so a log
pipeline can filter on ``partition``, ``reason`` or ``model_version`` without parsing text::

    logger.info("model swapped", extra={"model_version": "v2", "previous": "v1"})
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "pid", ...extra fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


# Libraries that log routine steps at INFO; an operator wants their warnings only.
QUIET_LOGGERS = ("ray", "faiss", "urllib3", "filelock", "httpx", "matplotlib", "PIL", "asyncio")


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler assigns it; stderr is read live
        pass


def prepare_ray_logging(log_format: str, environ: MutableMapping[str, str] = os.environ) -> None:
    """Before ``ray`` is imported: with JSON logs, forward actors' lines to the driver as they are.

    Ray prefixes each forwarded line with ``(ActorName pid=...)`` and appends ``[repeated Nx]``
    to duplicates, and transformers draws a "Loading weights" bar in each worker: each breaks
    one-JSON-object-per-line. Ray reads its switches at import and local workers inherit the
    driver's environment, so the entry point (``idproxy stream``/``encode``/``backfill``,
    ``jobs/stream.py``) calls this first.
    """
    if log_format == "json":
        environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
        environ.setdefault("RAY_DEDUP_LOGS", "0")
        environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # `idproxy encode`


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Set the root handler of this process to ``log_format`` ("text" or "json") at ``level``."""
    handler = StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every connection step at INFO, and warns about its own event loop
    # whenever the machine is busy; neither helps an operator.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
