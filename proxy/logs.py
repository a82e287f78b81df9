"""Structured logs: one JSON object per line (`log_format: json`), with the request and session ids that the
proxy's log calls attach as `extra`. Values are JSON-escaped, so no client value can forge a log line.
`saga serve` writes the access log in batches (`BatchedLines`), a few times a second."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

import msgspec
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

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

    def info_line(
        self, created: float, name: str, message: str, context: dict[str, str] | None = None
    ) -> str:
        """What `format` makes of an INFO record with these context fields, without the record."""
        msecs = int((created - int(created)) * 1000)
        entry = {"ts": f"{self._seconds.text(created)}.{msecs:03d}Z", "level": "INFO", "logger": name}
        entry["message"] = message
        if context:
            entry.update(context)
        return msgspec.json.encode(entry).decode()


def answer_ids(headers: Mapping[str, str]) -> dict[str, str]:
    """The context fields of a call's access line: the session and replica its answer named
    (`X-Session-ID`, `X-Saga-Replica`; an answer the proxy refused names neither, or only the session)."""
    ids = {}
    session = headers.get("X-Session-ID")
    if session:
        ids["session_id"] = session
    replica = headers.get("X-Saga-Replica")
    if replica:
        ids["replica_id"] = replica
    return ids


class IdentifiedAccessLogger(AccessLogger):
    """`server: aiohttp`'s access line (aiohttp's, in `ACCESS_LOG_FORMAT`) with the call's `answer_ids` as
    the record's fields, which JSON logs show."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            values = tuple(value for _, value in self._format_line(request, response, time))
            self.logger.info(self._log_format % values, extra=answer_ids(response.headers))
        except Exception:
            self.logger.exception("Error in logging")


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

    def add_info(self, name: str, message: str, context: dict[str, str] | None = None) -> None:
        """The line `emit` writes for an INFO record of logger `name` with this (already formatted) message
        and these context fields (`request_id`, `session_id`, ...), without making the record: about a third
        of an access-log line's cost. Formatters other than this module's get a real record."""
        formatter = self.formatter
        if isinstance(formatter, JsonFormatter):
            self.lines.append(formatter.info_line(time.time(), name, message, context))
        elif isinstance(formatter, TimeNameMessage):  # (the text line has no fields)
            self.lines.append(formatter.info_line(time.time(), name, message))
        else:
            self.handle(info_record(name, message, context))
            return
        if len(self.lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        lines = self.lines
        if lines:
            text = "\n".join(lines) + "\n"
            lines.clear()
            self.stream.write(text)
            self.stream.flush()


def info_record(name: str, message: str, context: dict[str, str] | None) -> logging.LogRecord:
    """An INFO record of logger `name`, its context fields set as `extra` would set them."""
    record = logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)
    if context:
        record.__dict__.update(context)
    return record


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
