"""What the scheduler learns from an answer, read without re-encoding it: usage, finish reason, tool names.

Contract: `parse_answer(body)` reads a whole JSON answer (chat, completion, Responses API or Anthropic
Messages) and returns its
`Usage` (token counts, the first choice's `finish_reason`, the names of the tools it called, in order) or None
when the body is not a JSON object. `StreamScanner` does the same for an SSE stream fed chunk by chunk at any
boundaries: it only searches each complete `data:` line for a few byte markers and decodes just the lines
that carry usage, so the relayed bytes are never parsed whole or re-encoded. (A Responses API stream's usage
is in its last event's `response`, the whole answer: read as one.) A Responses API answer's `status` is given
as chat's finish reason (`RESPONSES_FINISH`), an Anthropic one's `stop_reason` likewise (`ANTHROPIC_FINISH`).
"""

from __future__ import annotations

import re

import msgspec

from proxy.data_structs import (
    MAX_ALTERNATIVES,
    Answer,
    AnswerChoice,
    AnswerFields,
    AnswerMessage,
    BlockDelta,
    NumberedEvent,
    OutputItem,
    UsageFields,
)
from proxy.scheduler.types import Usage

_FINISH = re.compile(rb'"finish_reason":\s*"([A-Za-z_]{1,40})"')
# /v1/messages (Anthropic) says why it stopped in its own words (only these: vLLM's chat choices carry a
# `stop_reason` too, the matched stop string, which must not be read as one)
_STOP_REASON = re.compile(
    rb'"stop_reason":\s*"(end_turn|tool_use|max_tokens|stop_sequence|pause_turn|refusal)"'
)
ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "refusal": "stop",
}
# The Responses API says how an answer ended in its `status`; in chat's words (other statuses kept as sent)
RESPONSES_FINISH = {"completed": "stop", "incomplete": "length"}
_TOOL_NAME = re.compile(rb'"name":\s*"([^"\\]{1,200})"')
_RESPONSE_ID = re.compile(rb'"id":\s*"(resp_[A-Za-z0-9_-]{1,200})"')


def complete_events_length(data: bytes) -> int:
    """How much of `data` ends at an SSE event's end (a blank line, LF or CRLF): 0 when no event in it is
    complete. A relay holds the rest back until its event is whole, so that a replica cut in the middle of an
    event leaves no half event before the proxy's error event (a client would read the two as one malformed
    line)."""
    if data.endswith(b"\n\n"):  # the usual chunk: whole events (vLLM separates them with LF LF)
        return len(data)
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


# The most of one unfinished event a relay holds back: past it the event goes out as it comes (a backend that
# never ends its events, or one event of megabytes, still streams, in bounded memory; vLLM's are under a KB,
# a Responses API `response.completed` event carries the whole answer)
MAX_HELD_EVENT = 256 * 1024


RESPONSES_PREFIX = "/v1/responses"  # the Responses API's routes (a stream's events numbered)
SEQUENCE_NUMBER = b'"sequence_number"'


_numbered_decoder = msgspec.json.Decoder(NumberedEvent)


def sequence_number_after(events: bytes) -> int | None:
    """The `sequence_number` of the Responses API event after the last in `events` (whole events, as a relay
    sent them): what the error event ending a cut stream carries. The data of the last event naming the key
    is decoded (its `data:` lines joined, as SSE joins them), so a key of that name nested in it (a tool's
    schema) is not read for the event's; None when no event has a number at its top level (or a plausible
    one: 0 to 2^53)."""
    if events.find(b"\r") >= 0:  # CRLF or CR line ends, which SSE allows beside LF: read as LF
        events = events.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    at = events.rfind(SEQUENCE_NUMBER)
    while at >= 0:
        start = events.rfind(b"\n\n", 0, at)
        start = 0 if start < 0 else start + 2
        end = events.find(b"\n\n", at)
        lines = events[start : end if end >= 0 else len(events)].split(b"\n")
        data = b"\n".join([line[5:] for line in lines if line.startswith(b"data:")])
        try:
            number = _numbered_decoder.decode(data).sequence_number
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            number = None
        if number is not None and 0 <= number < 1 << 53:
            return number + 1
        at = events.rfind(SEQUENCE_NUMBER, 0, start)
    return None


class SentNumbers:
    """What a relay needs to number the error event ending a Responses API stream it cuts: the last events it
    sent that named a `sequence_number` (`sent`, with each whole-events chunk written), read back only when
    the stream is cut (`next`). One per Responses stream; the other routes have none."""

    def __init__(self) -> None:
        self._last = b""

    def sent(self, chunk: bytes) -> None:
        if chunk.find(SEQUENCE_NUMBER) >= 0:
            self._last = chunk

    def next(self) -> int | None:
        return sequence_number_after(self._last) if self._last else None


def numbers_for(path: str) -> SentNumbers | None:
    """A stream to `path`'s `SentNumbers`: on the Responses API routes only."""
    return SentNumbers() if path.startswith(RESPONSES_PREFIX) else None


def whole_events(held: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """What a relay sends of `held + chunk` now, and what it holds until the rest of its event arrives: the
    bytes up to the last complete event, unless the unfinished rest is over `MAX_HELD_EVENT`."""
    if held:
        chunk = held + chunk
    whole = complete_events_length(chunk)
    if whole == len(chunk) or len(chunk) - whole > MAX_HELD_EVENT:
        return chunk, b""
    return chunk[:whole], chunk[whole:]


def response_id_of(data: bytes) -> str | None:
    """The first Responses API id (`resp_...`) in `data`, if any."""
    found = _RESPONSE_ID.search(data)
    return found.group(1).decode() if found else None


def whole_response_id(body: bytes, path: str) -> str | None:
    """A whole answer's Responses API id, looked for in its head (and not on `NO_RESPONSE_ID_ROUTES`)."""
    if path in NO_RESPONSE_ID_ROUTES or body.find(b'"resp_', 0, 4096) < 0:  # searched in place: no copy
        return None
    return response_id_of(body[:4096])


_answer_decoder = msgspec.json.Decoder(AnswerFields)
_answers_decoder = msgspec.json.Decoder(list[AnswerFields])
# An SSE data line's payload (a trailing CR is JSON whitespace).
_DATA_LINE = re.compile(rb"^data:(.*)$", re.MULTILINE)
_FINISH_MARK, _STOP_MARK = b'"finish_reason"', b'"stop_reason"'
_NAME_MARK, _USAGE_MARK = b'"name"', b'"usage"'
_NAME_MARKS, _USAGE_MARKS = (_NAME_MARK,), (_USAGE_MARK,)
_USAGE_FINISH_OR_NAME = (_USAGE_MARK, _FINISH_MARK, _NAME_MARK, _STOP_MARK)
# The call routes whose answers carry no Responses API id (`StreamScanner`'s `path`)
NO_RESPONSE_ID_ROUTES = frozenset(("/v1/chat/completions", "/v1/completions", "/v1/messages"))
_JSON_DATA_LINE = re.compile(rb"^data:[ \t]*(\{.*)$", re.MULTILINE)  # a data line holding a JSON object


_OBJECT_STARTS = (b"{", b" {")
# a usage object or a Responses API event's response, with any JSON spacing (with only `:{` and `: {` known,
# a replica writing `"usage" : {` had neither its usage read nor its forced usage told: the forty-fourth
# session's review)
_USAGE_OR_RESPONSE = re.compile(rb'"(?:usage|response)"[ \t\r]*:[ \t\r]*\{')
_USAGE_OBJECT = re.compile(rb'"usage"[ \t\r]*:[ \t\r]*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"[ \t\r]*:[ \t\r]*\[[ \t\r]*\]')


# Byte searches here use `find`, not `in`: on CPython 3.11 `marker in data` first tries `marker` as an int
# (raising and clearing a TypeError inside), ~110 ns more per test, and a stream tests each chunk many times.
def _has_any(data: bytes, markers: tuple[bytes, ...]) -> bool:
    return any(data.find(marker) >= 0 for marker in markers)  # mypyc makes this a loop, no generator


def _data_payloads_with(block: bytes, markers: tuple[bytes, ...]) -> list[bytes]:
    """The payloads (after `data:`) of `block`'s data lines that hold any of `markers`, in stream order: what
    `_DATA_LINE.findall` filtered by the markers gives, found by byte search from the markers instead of a
    Python loop over every line (a stream's chunk has many lines, few of them marked)."""
    starts: set[int] = set()
    for marker in markers:
        at = block.find(marker)
        while at >= 0:
            start = block.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = block.find(b"\n", at)
            if end < 0:
                break
            at = block.find(marker, end)
    payloads = []
    for start in sorted(starts):
        if block.startswith(b"data:", start):
            end = block.find(b"\n", start)
            payloads.append(block[start + 5 : end if end >= 0 else len(block)])
    return payloads


def _event_start(events: bytes, at: int) -> int:
    """Where the event holding `at` starts: just past the blank line before it (LF or CRLF lines), else 0."""
    lf = events.rfind(b"\n\n", 0, at)
    crlf = events.rfind(b"\n\r\n", max(lf, 0), at)  # only past the LF one: no second scan of a long stream
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _event_end(events: bytes, at: int) -> int:
    """Just past the blank line ending the event holding `at` (LF or CRLF lines), else `len(events)`."""
    lf = events.find(b"\n\n", at)
    crlf = events.find(b"\n\r\n", at, lf + 2 if lf >= 0 else len(events))  # only before the LF one
    if crlf >= 0:
        return crlf + 3
    return lf + 2 if lf >= 0 else len(events)


def _blank_line_end(tail: bytes, data: bytes) -> int:
    """How many leading bytes of `data` end the first blank line (LF or CRLF lines) of `tail + data`, where
    `tail` (a few bytes) holds no whole one: 0 when there is none."""
    joined = tail + data  # (once a stream, at the end of an event that flowed)
    ends = [at + n for at, n in ((joined.find(b"\n\n"), 2), (joined.find(b"\n\r\n"), 3)) if at >= 0]
    return max(0, min(ends) - len(tail)) if ends else 0


def _without_usage_events(events: bytes) -> bytes:
    """`events` (whole events, each ending in a blank line) less the usage-only ones (empty choices and a
    usage object, with any JSON spacing), found from their `"usage"`: one `find` over a chunk that has none
    (nearly every chunk of a stream), the event's bounds and two short searches for one that has."""
    at = events.find(_USAGE_MARK)
    if at < 0:
        return events
    kept: list[bytes] = []
    copied = 0
    # some line ends in CRLF (legal SSE; vLLM's all end in LF): a search for CR alone is a memchr
    crlf = events.find(b"\r") >= 0 and events.find(b"\n\r\n") >= 0
    while at >= 0:
        if crlf:
            start, end = _event_start(events, at), _event_end(events, at)
        else:
            start = events.rfind(b"\n\n", 0, at)
            start = 0 if start < 0 else start + 2
            end = events.find(b"\n\n", at)
            end = len(events) if end < 0 else end + 2
        if (
            _EMPTY_CHOICES.search(events, start, end) is not None
            and _USAGE_OBJECT.search(events, start, end) is not None
        ):
            kept.append(events[copied:start])
            copied = end
        at = events.find(_USAGE_MARK, end)
    if not copied:
        return events
    kept.append(events[copied:])
    return b"".join(kept)


# No model's context comes near it: a replica's count past it is nonsense, and taken as it came it sized the
# workflow's KV reservation (`/saga/v1/state` showed 4.9e29 tokens reserved after one such answer).
MAX_USAGE_TOKENS = 1 << 31


def _usage(u: UsageFields | None, finish_reason: str, tool_names: tuple[str, ...]) -> Usage:
    if u is None:
        return Usage(finish_reason=finish_reason, tool_names=tool_names)
    details = u.prompt_tokens_details or u.input_tokens_details
    # a replica's counts as the scheduler may use them: none negative or past MAX_USAGE_TOKENS, no more
    # cached than prompted
    prompt = min(max(0, u.prompt_tokens or u.input_tokens or 0), MAX_USAGE_TOKENS)
    cached = ((details.cached_tokens or 0) if details else 0) or u.cache_read_input_tokens or 0
    return Usage(
        prompt,
        min(max(0, u.completion_tokens or u.output_tokens or 0), MAX_USAGE_TOKENS),
        min(max(0, cached), prompt),
        finish_reason,
        tool_names,
    )


def read_answer(body: bytes) -> tuple[Usage | None, Answer | None]:
    """A whole JSON answer's usage and its assistant message (for chat answers)."""
    try:
        answer = _answer_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None
    finish, tools = "", []
    said: Answer | None = None
    choices = answer.choices
    if choices:
        first = choices[0]
        finish = first.finish_reason or ""
        message = first.message
        if message is not None and not message.tool_calls:  # the usual answer: text only
            said = Answer(message.content or "")
        elif message is not None:
            calls = [c.function for c in message.tool_calls or () if c.function and c.function.name]
            tools = [f.name or "" for f in calls]
            said = Answer(message.content or "", tuple((f.name or "", f.arguments or "") for f in calls))
        if len(choices) > 1 and said is not None:  # `n` choices: vLLM lists them in index order
            said = Answer(said.text, said.tool_calls, _alternatives(choices))
    if answer.output:
        finish, tools = _response_end(answer)
        said = output_answer(answer.output)
    content = answer.content
    if isinstance(content, list):  # /v1/messages (Anthropic)
        tools = [b.name for b in content if b.type == "tool_use" and b.name]
        # the message as a client sends it back, read as session_chain reads it: its text blocks' text
        said = Answer("".join(b.text for b in content if b.type == "text" and b.text))
        stop = answer.stop_reason
        finish = ANTHROPIC_FINISH.get(stop, "") if isinstance(stop, str) else ""
    if answer.usage is None and not finish:
        return None, said
    return _usage(answer.usage, finish, tuple(tools)), said


def _alternatives(choices: list[AnswerChoice]) -> tuple[Answer, ...]:
    """The messages of a whole answer's choices past the first (up to MAX_ALTERNATIVES)."""
    said = []
    for choice in choices[1 : 1 + MAX_ALTERNATIVES]:
        message = choice.message
        if message is None:
            continue
        calls = [c.function for c in message.tool_calls or () if c.function and c.function.name]
        said.append(Answer(message.content or "", tuple((f.name or "", f.arguments or "") for f in calls)))
    return tuple(said)


def output_answer(output: list[OutputItem]) -> Answer:
    """A Responses API answer's assistant message, as proxy/session_chain.py `response_conversation` reads it
    when a client sends it back: its message items' text, its function calls (name, arguments) in order."""
    text = "".join(
        part.text
        for item in output
        if item.type == "message"
        for part in item.content or ()
        if part.type == "output_text" and part.text
    )
    calls = tuple((item.name or "", item.arguments or "") for item in output if item.type == "function_call")
    return Answer(text, calls)


def _response_end(answer: AnswerFields) -> tuple[str, list[str]]:
    """A Responses API answer's finish reason, in chat's words, and the tools it called."""
    tools = [o.name for o in answer.output or () if o.type == "function_call" and o.name]
    if tools:
        return "tool_calls", tools
    status = answer.status or ""
    return RESPONSES_FINISH.get(status, status), tools


def parse_answer(body: bytes) -> Usage | None:
    return read_answer(body)[0]


def parse_usage(payload: bytes) -> Usage | None:
    """Usage from a whole answer or a whole SSE stream; None when there is none."""
    if payload.lstrip().startswith(b"{"):
        return parse_answer(payload)
    scanner = StreamScanner()
    scanner.feed(payload)
    scanner.feed(b"\n")
    return scanner.usage()


# Tool names read out of one stream (the predictor's graph needs the first few; a stream naming more is odd).
MAX_STREAM_TOOL_NAMES = 64
# The rebuilt message's bound when the caller gives none (`max_answer_bytes`' default).
DEFAULT_COLLECT_LIMIT = 64 * 1024 * 1024


def _message(text: list[str], calls: dict[int, list[str]]) -> Answer:
    """A streamed choice's message from its collected deltas (`StreamScanner`)."""
    if not calls:
        return Answer("".join(text))
    return Answer("".join(text), tuple((parts[0], "".join(parts[1:])) for _, parts in sorted(calls.items())))


class StreamScanner:
    """Feeds on a chat/completions SSE stream (or a Responses API or /v1/messages one). With `collect_answer`,
    it also decodes each chunk's delta to rebuild the assistant message (text and tool calls), which session
    inference by prefix chaining needs;
    on a /v1/messages stream, the text of its text blocks (what a client's next call carries of it for
    session_chain: text blocks' text). A call asking for `n` choices streams each choice's deltas under its
    index: each is collected on its own (choices 1 to MAX_ALTERNATIVES as the answer's `alternatives`, the
    rest not), so the client's next call chains from whichever it went on with, and the finish reason and
    tool names are choice 0's, as a whole answer's (not collecting, they are those any choice gave).

    What it keeps is bounded whatever the replica sends: the rebuilt message by `collect_limit` characters
    (past it the scanner stops collecting and `answer()` is None: the call's session is not chained from this
    answer, and the next call of the conversation is matched from its start instead), tool names by
    MAX_STREAM_TOOL_NAMES, a held partial line by `collect_limit` bytes or MAX_HELD_EVENT, whichever is more
    (a longer line is skipped to its end: its usage or finish reason, if any, is not read), and what
    `feed_stripping_usage` holds of an unfinished event by `MAX_HELD_EVENT` (past it the event flows
    unstripped: a usage-only event is small). The held line grows in place, so a stream of one long line
    costs time linear in its length (a copy per chunk made it quadratic: one line of 128 MB stalled the
    proxy's loop ~1 s)."""

    def __init__(
        self, collect_answer: bool = False, collect_limit: int = DEFAULT_COLLECT_LIMIT, path: str = ""
    ) -> None:
        """`path`: the call's route. Only a Responses API answer's id is looked for (`response_id`): on the
        other call routes (`NO_RESPONSE_ID_ROUTES`) that search, a pass over every chunk, is skipped."""
        self._partial = bytearray()  # the stream's last line so far, no newline in it yet
        self._line_limit = max(collect_limit, MAX_HELD_EVENT)
        self._skipping = False  # in a line past `_line_limit`: dropped up to its newline
        self._usage: UsageFields | None = None
        self._started_usage: UsageFields | None = None  # a /v1/messages stream's `message_start` usage
        self._seen_usage = False
        self._finish = ""
        self._tools: list[str] = []
        self._collect = collect_answer
        self._collect_left = collect_limit  # characters the rebuilt message may still grow by
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [name, arguments...]
        # choices past the first (a call asking for `n`): index -> (its text, its calls), as the two above
        self._others: dict[int, tuple[list[str], dict[int, list[str]]]] = {}
        self._first_finish = ""  # choice 0's finish reason, read where choices are told apart
        self._response_answer: Answer | None = None  # a Responses API stream's, from its final event
        self._pending_events = b""
        self._flowing = False  # inside an event too long to hold (`feed_stripping_usage`)
        self._flowed_tail = b""  # the last bytes of that event that flowed (part of its blank line, maybe)
        self._usage_checked = False  # whether the stream's first events were looked at for forced usage
        self._usage_forced = False  # the replica sends usage unasked: nothing is stripped
        self._usage_with_choices = False  # an event read so far carried usage beside its choices
        self.response_id: str | None = None
        # a Responses API route (or any, unnamed): its answer's id and its events' `response` are read
        self._responses = path not in NO_RESPONSE_ID_ROUTES

    def feed_stripping_usage(self, chunk: bytes) -> bytes:
        """Scans `chunk` like `feed` and returns what to forward: the complete events in it, less the
        usage-only event (`"choices":[]` with a usage) that the proxy asked for and the client did not,
        unless the replica sends usage unasked (vLLM's `--enable-force-include-usage`: its first events
        carry usage with their choices)."""
        data = self._pending_events + chunk
        lf = data.rfind(b"\n\n")
        if lf >= 0 and lf + 2 == len(data):  # the chunk ends with its last event (as vLLM sends each token)
            complete, self._pending_events = data, b""
        else:
            # SSE lines may end in CRLF too: an event's blank line is then "\r\n" after the last line's "\n"
            crlf = data.rfind(b"\n\r\n")
            end = max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)  # past the last whole event
            if not end:
                # An event over MAX_HELD_EVENT is not a usage-only one (those are small): it flows as it
                # comes, up to its end, instead of being held and copied again with every chunk.
                if self._flowing or len(data) > MAX_HELD_EVENT:
                    self._flowing = True
                    self._flowed_tail = (self._flowed_tail + data)[-3:]
                    self._pending_events = b""
                    self.feed(data)
                    return data
                self._pending_events = data
                return b""
            complete, self._pending_events = data[:end], data[end:]
        self.feed(complete)
        # Decided on the first block holding a data line (a keep-alive comment first: not yet). vLLM's
        # `--enable-force-include-usage` sends usage in every chunk and ends every stream with a usage event,
        # asked for or not: a client reading it directly gets that event, so it is kept. Usage beside
        # choices, which the proxy never asks for, says the replica forces it, as `feed` has just decoded
        # (vLLM 0.32 forces continuous usage with it; a replica forcing the final event alone is not told
        # apart, and that event is stripped).
        if not self._usage_checked and complete.find(b"data:") >= 0:
            self._usage_checked = True
            self._usage_forced = self._usage_with_choices
        if self._usage_forced:
            self._flowing = False
            return complete
        if self._flowing:
            self._flowing = False
            # the blank line ending the event that flowed may have begun in what flowed: the bytes here
            # that finish it are that event's, not the start of the next one (a usage-only event after
            # it, stripped from the start of `complete`, took them: the client read two events as one)
            head = _blank_line_end(self._flowed_tail, complete)
            self._flowed_tail = b""
            if head:
                return complete[:head] + _without_usage_events(complete[head:])
        return _without_usage_events(complete)

    def flush(self) -> bytes:
        """What `feed_stripping_usage` still holds at the end of the stream."""
        rest, self._pending_events = self._pending_events, b""
        if rest or self._partial:  # a newline ends the last line; with nothing held it would read nothing
            self.feed(rest + b"\n")
        return rest

    def feed(self, chunk: bytes) -> None:
        # Whole-block checks (C speed) decide what per-line work a chunk needs at all.
        line_end = chunk.find(b"\n")  # becomes the first newline of `data` (`_partial` holds none)
        if self._skipping:
            if line_end < 0:
                return
            self._skipping = False
            chunk = chunk[line_end + 1 :]
            line_end = chunk.find(b"\n")
        partial = self._partial
        if line_end < 0:
            if len(partial) + len(chunk) > self._line_limit:
                partial.clear()
                self._skipping = True
                self._collect_left = -1  # the answer would miss this line's part of it: not collected
                self._stop_collecting_past_limit()
            else:
                partial += chunk
            return
        if partial:
            data = b"".join((partial, chunk))
            line_end += len(partial)
            partial.clear()
        else:
            data = chunk
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            block = data
        else:
            block = data[:cut]
            partial += data[cut:]
        if self._responses and self.response_id is None and block.find(b'"resp_') >= 0:
            self.response_id = response_id_of(b"\n".join(_DATA_LINE.findall(block)))
        if line_end >= cut - 2 and block.startswith(b"data:"):  # one data line, maybe a blank one after it
            self._one_data_line(block[5:line_end])
            return
        if self._collect and block.find(b'"delta"') >= 0:
            self._scan_block_finish_and_tools(block)  # what the other branch's scans conclude
            # Every JSON event is decoded anyway to rebuild the answer: read the rest from the same objects
            # (after the scan: a Responses API answer's last event replaces the tool names scanned before)
            self._read_events(_JSON_DATA_LINE.findall(block))
        elif block.find(b'"response"') >= 0:  # a Responses API stream: its last answer and the scans in order
            for payload in _data_payloads_with(block, _USAGE_FINISH_OR_NAME):
                self._scan(payload)
        else:  # usage is read apart from the rest: only a Responses API answer's sets a finish reason too
            self._scan_block_finish_and_tools(block)
            if block.find(_USAGE_MARK) >= 0:
                for payload in _data_payloads_with(block, _USAGE_MARKS):
                    self._scan_usage(payload)

    def _one_data_line(self, payload: bytes) -> None:
        """What `feed` concludes from a block that is one data line (`payload`, after `data:`), the shape of
        every chunk of a token-by-token stream, without the searches for the lines of a longer block."""
        if self._collect and payload.find(b'"delta"') >= 0:
            # first, as in `feed`'s collecting branch (no search for the markers before: these searches are
            # the same three when none is there, and vLLM's chunks all carry `"finish_reason"`)
            self._scan_finish_and_tools(payload)
            # what _JSON_DATA_LINE finds; the usual "data: {" without copying the payload to strip it
            if payload.startswith(_OBJECT_STARTS) or payload.lstrip(b" \t").startswith(b"{"):
                try:
                    answer = _answer_decoder.decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                    self._scan_usage(payload)
                else:
                    self._read_event(answer)
        elif _has_any(payload, _USAGE_FINISH_OR_NAME):
            self._scan(payload)

    def _read_events(self, payloads: list[bytes]) -> None:
        """Decodes a chunk's JSON events in one go (one JSON array); each alone if that fails, and an event
        that does not decode is scanned like any other."""
        if len(payloads) > 1:
            try:
                decoded = _answers_decoder.decode(b"[" + b",".join(payloads) + b"]")
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                pass
            else:
                if len(decoded) == len(payloads):  # else some line held more than one object: read each alone
                    for answer in decoded:
                        self._read_event(answer)
                    return
        for payload in payloads:
            try:
                answer = _answer_decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                self._scan_usage(payload)
                continue
            self._read_event(answer)

    def _read_event(self, event: AnswerFields) -> None:
        """An event's usage (as `_scan` reads it) and its delta."""
        self._take_usage(event)
        self._collect_delta(event)

    def _take_usage(self, event: AnswerFields) -> None:
        """An event's usage: a chat chunk's own, or a Responses API event's whole answer; on /v1/messages
        the input's counts from `message_start` where the final usage has none."""
        usage = event.usage
        if usage is not None:
            started = self._started_usage
            if started is not None and not (usage.input_tokens or usage.prompt_tokens):
                usage = msgspec.structs.replace(
                    usage,
                    input_tokens=started.input_tokens,
                    cache_read_input_tokens=usage.cache_read_input_tokens or started.cache_read_input_tokens,
                )
            self._usage, self._seen_usage = usage, True
            if event.choices:  # beside choices: the replica forces usage (`feed_stripping_usage`)
                self._usage_with_choices = True
        elif self._responses:
            response = event.response
            if response is not None:
                self._read_response(response)
        elif event.message is not None and event.message.usage is not None:
            self._started_usage = event.message.usage

    def _read_response(self, response: AnswerFields) -> None:
        """A Responses API event's response. The final one (the only one with usage) is the whole answer:
        its usage, status and function calls are read as a whole answer's, and its tool names replace those
        the earlier events named (each function call is named in several: added, done, completed)."""
        if response.usage is None:  # created, in progress: nothing final yet
            return
        self._usage, self._seen_usage = response.usage, True
        finish, tools = _response_end(response)
        self._finish = finish
        self._tools = tools[:MAX_STREAM_TOOL_NAMES]
        if self._collect and response.output is not None:  # the whole answer: its message, as resent
            self._response_answer = output_answer(response.output)

    def _collect_delta(self, chunk: AnswerFields) -> None:
        choices = chunk.choices  # each field read once: a Struct's attribute is a lookup from compiled code
        if not choices:
            block = chunk.delta  # /v1/messages: a text block's delta
            if isinstance(block, BlockDelta) and block.text:
                self._text.append(block.text)
                self._collect_left -= len(block.text)
                self._stop_collecting_past_limit()
            return
        choice = choices[0]  # (vLLM sends one choice an event, `index` naming which)
        delta = choice.delta
        if delta is None:
            return
        index = choice.index
        if index == 0:
            if choice.finish_reason:
                self._first_finish = choice.finish_reason
            self._collect_message(delta, self._text, self._calls)
            return
        other = self._others.get(index)
        if other is None:
            if not 0 < index <= MAX_ALTERNATIVES:
                return
            other = self._others[index] = ([], {})
        self._collect_message(delta, other[0], other[1])

    def _collect_message(self, delta: AnswerMessage, text: list[str], calls: dict[int, list[str]]) -> None:
        content = delta.content
        if content:
            text.append(content)
            self._collect_left -= len(content)
        tool_calls = delta.tool_calls
        if tool_calls:
            for call in tool_calls:
                parts = calls.setdefault(call.index, [""])
                if call.function is not None:
                    if call.function.name:
                        parts[0] = call.function.name
                    if call.function.arguments:
                        parts.append(call.function.arguments)
                        self._collect_left -= len(call.function.arguments)
        self._stop_collecting_past_limit()

    def _stop_collecting_past_limit(self) -> None:
        if self._collect_left < 0:  # too long to keep: stop collecting (see the class docstring)
            self._collect = False
            self._text, self._calls, self._others = [], {}, {}

    def answer(self) -> Answer | None:
        """The rebuilt assistant message; None unless collecting, or when it grew past `collect_limit`."""
        if not self._collect:
            return None
        if self._response_answer is not None:
            return self._response_answer
        if self._others:
            others = tuple(_message(*self._others[index]) for index in sorted(self._others))
            first = _message(self._text, self._calls)
            return Answer(first.text, first.tool_calls, others)
        return _message(self._text, self._calls)

    def _scan(self, line: bytes) -> None:
        """`line`: one event's data (after `data:`)."""
        self._scan_finish_and_tools(line)
        self._scan_usage(line)

    def _scan_usage(self, line: bytes) -> None:
        if _USAGE_OR_RESPONSE.search(line) is not None:
            try:
                answer = _answer_decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                return
            self._take_usage(answer)

    def _scan_finish_and_tools(self, line: bytes) -> None:
        self._scan_finish(line)
        self._scan_tools(line)

    def _scan_block_finish_and_tools(self, block: bytes) -> None:
        """What `_scan_finish_and_tools` on each of `block`'s data lines in turn concludes, with fewer passes
        over the block: the finish reason is the last line's that gives one, so lines are tried from the
        block's end (a stream names its reason in its last events, and every vLLM chunk says
        `"finish_reason":null`: a search forward would try every line); tool names come only from lines
        that name something, in order."""
        end = len(block)
        finish = block.rfind(_FINISH_MARK)
        while True:
            # The last line (before `end`) with either marker: the last finish marker's, or one after it
            # with a stop reason (searched for only from that line on: the rest is searched if need be).
            line = block.rfind(b"\n", 0, finish) + 1 if finish >= 0 else 0
            stop = block.rfind(_STOP_MARK, line, end)
            at = max(finish, stop)
            if at < 0:
                break
            start = block.rfind(b"\n", 0, at) + 1
            if block.startswith(b"data:", start):
                line_end = block.find(b"\n", at)
                if self._scan_finish(block[start + 5 : line_end if line_end >= 0 else len(block)]):
                    break
            end = start
            if finish >= start:
                finish = block.rfind(_FINISH_MARK, 0, start)
        if block.find(_NAME_MARK) >= 0:
            for payload in _data_payloads_with(block, _NAME_MARKS):
                self._scan_tools(payload)

    def _scan_finish(self, line: bytes) -> bool:
        """Takes `line`'s finish reason (chat's, else /v1/messages' stop reason): True if it gives one."""
        # the regex engine's search from the start is a pass slower than `find`, and no match starts before
        # the first marker
        at = line.find(_FINISH_MARK)
        finish = _FINISH.search(line, at) if at >= 0 else None
        if finish is not None:
            self._finish = finish.group(1).decode()
            return True
        if line.find(_STOP_MARK) >= 0:
            stop = _STOP_REASON.search(line)
            if stop is not None:
                self._finish = ANTHROPIC_FINISH[stop.group(1).decode()]
                return True
        return False

    def _scan_tools(self, line: bytes) -> None:
        # the name first: nearly every chunk names nothing, but each of vLLM's carries `"finish_reason"`
        if line.find(_NAME_MARK) < 0:
            return
        if (
            line.find(b'"tool_calls"') >= 0
            or line.find(b'"function_call"') >= 0
            or line.find(b'"tool_use"') >= 0
        ):
            for m in _TOOL_NAME.finditer(line):
                if len(self._tools) >= MAX_STREAM_TOOL_NAMES:
                    break
                try:
                    self._tools.append(m.group(1).decode())
                except UnicodeDecodeError:
                    continue  # not UTF-8, so not JSON: left unread, as a whole answer's would be

    def usage(self) -> Usage | None:
        if not self._seen_usage and not self._finish and not self._tools:
            return None
        if self._others:  # several choices, told apart: choice 0's, as a whole answer's are read
            tools = [parts[0] for _, parts in sorted(self._calls.items()) if parts[0]]
            return _usage(
                self._usage, self._first_finish or self._finish, tuple(tools[:MAX_STREAM_TOOL_NAMES])
            )
        return _usage(self._usage, self._finish, tuple(self._tools))
