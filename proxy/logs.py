"""Structured logs: one JSON object per line (`log_format: json`), with the request and session ids that the
proxy's log calls attach as `extra`. Values are JSON-escaped, so no client value can forge a log line.
`saga serve` writes the access log in batches (`BatchedLines`), a few times a second."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

import msgspec

_CONTEXT_FIELDS = ("request_id", "session_id", "replica_id", "tenant_id")


class _Seconds:
    """A timestamp's text to the second, formatted once a second (the access log asks for it per request)."""

    def __init__(self, pattern: str, clock: Callable[[float], time.struct_time]) -> None:
        self.pattern, self.clock = pattern, clock
        self._second, self._text = -1, ""

    def text(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime(self.pattern, self.clock(second))
        return self._text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": f"{self._seconds.text(record.created)}.{int(record.msecs):03d}Z",
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

    def info_line(self, created: float, name: str, message: str) -> str:
        """What `format` makes of an INFO record with no context fields, without the record."""
        msecs = int((created - int(created)) * 1000)
        entry = {"ts": f"{self._seconds.text(created)}.{msecs:03d}Z", "level": "INFO", "logger": name}
        entry["message"] = message
        return msgspec.json.encode(entry).decode()


def announce(line: str, log_format: str, *, warning: bool = False) -> None:
    """A line `saga serve` writes for its user (where it listens, its simulated replicas on stdout; with
    `warning`, on stderr): under `log_format: json` as a JSON log object like every other line, so that a
    log pipeline reading the process's output parses all of it."""
    if log_format == "json":
        level = logging.WARNING if warning else logging.INFO
        record = logging.LogRecord("saga", level, __file__, 0, line, None, None)
        line = JsonFormatter().format(record)
    print(line, file=sys.stderr if warning else sys.stdout, flush=True)


def use_json_logs() -> None:
    """Switches every handler of the root logger (or a new stderr one) to JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())


class BatchedLines(logging.Handler):
    """Formats each record when it is logged and writes the lines out together at each `flush()` (or once
    `max_lines` are waiting): one write a batch instead of one a line. For the access log under load, where
    a write per request costs as much as forwarding the request."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter | None, max_lines: int = 512) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self.max_lines = max_lines
        # The lines not written yet; one list for the handler's life (the fast server appends to it).
        self.lines: list[str] = []
        self.propagated = True  # whether the logger propagated before `batch_access_log` stopped it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self.lines) >= self.max_lines:
            self.flush()

    def add_info(self, name: str, message: str) -> None:
        """The line `emit` writes for an INFO record of logger `name` with this (already formatted) message,
        without making the record: about a third of an access-log line's cost. Formatters other than this
        module's get a real record."""
        formatter = self.formatter
        if isinstance(formatter, _OWN_FORMATTERS):
            self.lines.append(formatter.info_line(time.time(), name, message))
            if len(self.lines) >= self.max_lines:
                self.flush()
        else:
            self.handle(logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None))

    def flush(self) -> None:
        lines = self.lines
        if lines:
            text = "\n".join(lines) + "\n"
            lines.clear()
            self.stream.write(text)
            self.stream.flush()


class TimeNameMessage(logging.Formatter):
    """`%(asctime)s %(name)s %(message)s` (`saga`'s text log format), the date formatted once a second."""

    FORMAT = "%(asctime)s %(name)s %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)
        self._seconds = _Seconds("%Y-%m-%d %H:%M:%S", time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            return super().format(record)
        stamp = self._seconds.text(record.created)
        return f"{stamp},{int(record.msecs):03d} {record.name} {record.getMessage()}"

    def stamp(self, created: float) -> str:
        """The line's time to the second (the milliseconds follow a comma)."""
        return self._seconds.text(created)

    def info_line(self, created: float, name: str, message: str) -> str:
        """What `format` makes of a record with this time, logger name and message, without the record."""
        return f"{self._seconds.text(created)},{int((created - int(created)) * 1000):03d} {name} {message}"


_OWN_FORMATTERS = (TimeNameMessage, JsonFormatter)  # a tuple: `A | B` would build a union per call


def batch_access_log(logger: logging.Logger) -> BatchedLines:
    """Sends `logger`'s records (the access log) through a `BatchedLines` on the root handler's stream and
    format; the caller flushes it periodically and at exit."""
    root_handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    stream = root_handlers[0].stream if root_handlers else sys.stderr
    formatter = root_handlers[0].formatter if root_handlers else None
    if formatter is not None and formatter._fmt == TimeNameMessage.FORMAT and formatter.datefmt is None:
        formatter = TimeNameMessage()  # the same lines, cheaper
    handler = BatchedLines(stream, formatter)
    handler.propagated = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def unbatch_access_log(logger: logging.Logger, handler: BatchedLines) -> None:
    """Undoes `batch_access_log`: writes out what `handler` holds, removes it and lets `logger` propagate as
    it did before, so a proxy started again in one process (tests, a program embedding it) does not write
    each line once more per earlier start, and loggers are left as they were found."""
    handler.flush()
    logger.removeHandler(handler)
    logger.propagate = handler.propagated
