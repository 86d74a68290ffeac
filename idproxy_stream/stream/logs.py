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


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Set the root handler of this process to ``log_format`` ("text" or "json") at ``level``."""
    handler = logging.StreamHandler()
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
