"""Structured logs: one JSON object per line with the identifiers a record concerns.

Code logs with ``log.info("...", extra=ctx(site_id=..., command_id=...))``; the formatter
lifts the known context keys (``site_id``, ``bid_id``, ``command_id``, ``dispatch_id``,
``interval_start``, ``group_id``) to top-level fields so logs can be filtered by them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_KEYS = (
    "site_id",
    "group_id",
    "bid_id",
    "command_id",
    "dispatch_id",
    "interval_start",
    "event",
    "request_id",
)


def ctx(**fields: Any) -> dict[str, Any]:
    """The ``extra`` mapping for a log call; datetimes become ISO 8601 with offset."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{k}={record.__dict__[k]}" for k in CONTEXT_KEYS if record.__dict__.get(k) is not None
        )
        return f"{base} {extras}" if extras else base


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (rich's live display redirects it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return None


def configure(level: str = "INFO", json_format: bool = True, stream: Any = None) -> None:
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "apscheduler", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
