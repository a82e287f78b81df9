"""Structured logs: one JSON object per line (`log_format: json`), with the request and session ids that the
proxy's log calls attach as `extra`. Values are JSON-escaped, so no client value can forge a log line."""

from __future__ import annotations

import logging
import time

import msgspec

_CONTEXT_FIELDS = ("request_id", "session_id", "replica_id", "tenant_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def use_json_logs() -> None:
    """Switches every handler of the root logger (or a new stderr one) to JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
