"""The access log's batching handler and its cheaper formatters write the same lines as the standard ones."""

from __future__ import annotations

import io
import json
import logging

from proxy.logs import BatchedLines, JsonFormatter, TimeNameMessage


def _record(message: str, created: float) -> logging.LogRecord:
    record = logging.LogRecord("saga.access", logging.INFO, __file__, 0, message, None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    return record


def test_the_text_formatter_matches_loggings_own() -> None:
    standard = logging.Formatter(TimeNameMessage.FORMAT)
    fast = TimeNameMessage()
    for created in (1_700_000_000.123, 1_700_000_000.999, 1_700_000_001.5, 1_800_000_000.0):
        record = _record('127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 200 321 0.001', created)
        assert fast.format(record) == standard.format(record)


def test_json_lines_keep_their_timestamp_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    first = json.loads(formatter.format(_record("a", 1_700_000_000.25)))
    second = json.loads(formatter.format(_record("b", 1_700_000_001.5)))
    assert (first["ts"], first["message"]) == ("2023-11-14T22:13:20.250Z", "a")
    assert second["ts"] == "2023-11-14T22:13:21.500Z"


def test_batched_lines_are_written_at_flush_or_when_the_batch_is_full() -> None:
    stream = io.StringIO()
    handler = BatchedLines(stream, logging.Formatter("%(message)s"), max_lines=3)
    logger = logging.getLogger("saga.test.batched")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("one")
        logger.info("two")
        assert stream.getvalue() == ""  # held until a flush
        handler.flush()
        assert stream.getvalue() == "one\ntwo\n"
        for word in ("three", "four", "five"):
            logger.info(word)
        assert stream.getvalue() == "one\ntwo\nthree\nfour\nfive\n"  # a full batch goes out by itself
    finally:
        logger.removeHandler(handler)


def test_a_line_added_without_a_record_is_the_line_a_record_makes() -> None:
    message = '127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 200 321 0.001'
    for formatter in (TimeNameMessage(), JsonFormatter()):
        for created in (1_700_000_000.123, 1_700_000_000.999, 1_800_000_000.0):
            expected = formatter.format(_record(message, created))
            assert formatter.info_line(created, "saga.access", message) == expected


def test_batched_lines_add_info_uses_any_formatter() -> None:
    stream = io.StringIO()
    handler = BatchedLines(stream, logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.add_info("saga.access", "hello")
    fast = BatchedLines(stream, TimeNameMessage())
    fast.add_info("saga.access", "there")
    handler.flush()
    fast.flush()
    first, second = stream.getvalue().splitlines()
    assert first == "INFO saga.access hello"
    assert second.endswith(" saga.access there") and second[:4].isdigit()


def test_the_fast_server_hands_lines_to_the_batching_handler_only_when_it_is_the_only_way_out() -> None:
    from proxy.fast_server import _batched_sink

    logger = logging.getLogger("saga.test.sink")
    handler = BatchedLines(io.StringIO(), TimeNameMessage())
    assert _batched_sink(logger) is None  # no handler: records propagate (pytest's caplog sees them)
    logger.addHandler(handler)
    try:
        assert _batched_sink(logger) is None  # still propagates to the root logger
        logger.propagate = False
        assert _batched_sink(logger) is handler
        logger.addHandler(logging.NullHandler())
        assert _batched_sink(logger) is None
    finally:
        logger.handlers.clear()
        logger.propagate = True


def test_the_fast_servers_own_lines_are_the_formatters_and_stop_when_it_is_replaced() -> None:
    """The fast server formats access lines itself for `TimeNameMessage` (compiled, no interpreted call per
    request): the same line the formatter makes, into the handler's batch; with another formatter on the
    handler it steps aside and the handler formats (as `add_info` does)."""
    import time

    from proxy.fast_server import _AccessLines

    stream = io.StringIO()
    formatter = TimeNameMessage()
    handler = BatchedLines(stream, formatter, max_lines=2)
    lines = _AccessLines(handler, formatter)
    message = '127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 200 321 0.001000'
    before = time.time()
    assert lines.add(message)
    after = time.time()
    (line,) = handler.lines
    possible = {
        formatter.info_line((t + 0.5) / 1000, "saga.access", message)  # mid-millisecond
        for t in range(int(before * 1000) - 1, int(after * 1000) + 2)
    }
    assert line in possible
    assert lines.add("second")  # a full batch goes out by itself
    assert handler.lines == [] and stream.getvalue().splitlines()[1].endswith(" saga.access second")
    handler.setFormatter(logging.Formatter("%(message)s"))
    assert not lines.add("third")
    assert handler.lines == []
