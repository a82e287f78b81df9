"""The stream scanner's fast paths (whole-chunk checks, one decode per chunk, byte-search stripping) conclude
what a plain line-by-line reading of the same stream concludes, however the stream is cut into chunks."""

from __future__ import annotations

import itertools
import json
import re

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.scheduler.types import Usage
from proxy.session_chain import Answer
from proxy.sse_scan import MAX_HELD_EVENT, StreamScanner, read_answer

_FINISH = re.compile(rb'"finish_reason":\s*"([A-Za-z_]{1,40})"')
_NAME = re.compile(rb'"name":\s*"([^"\\]{1,200})"')


def _reference(
    stream: bytes, blank: bytes = b"\n\n", collect: bool = True
) -> tuple[Usage | None, Answer, bytes]:
    """Line by line, every event on its own (events ending in `blank`): usage, the collected answer, and the
    bytes forwarded when the client did not ask for usage. Collecting, the choices are told apart, and with
    several the usage's finish reason and tool names are choice 0's; not, they are any choice's."""
    finish, usage, first_finish = "", None, ""
    tools: list[str] = []
    messages: dict[int, tuple[list[str], dict[int, list[str]]]] = {0: ([], {})}  # choice -> (text, calls)
    for line in stream.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:]
        found = _FINISH.search(payload)
        if found:
            finish = found.group(1).decode()
        if b'"tool_calls"' in payload or b'"function_call"' in payload:
            tools.extend(m.group(1).decode() for m in _NAME.finditer(payload))
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("usage"), dict):
            usage = event["usage"]
        choices = event.get("choices") or []
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        delta = first.get("delta")
        if (
            isinstance(delta, dict)
            and first.get("index", 0) == 0
            and isinstance(first.get("finish_reason"), str)
        ):
            first_finish = first["finish_reason"] or first_finish
        if isinstance(delta, dict):
            text, calls = messages.setdefault(choices[0].get("index", 0), ([], {}))
            if delta.get("content"):
                text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                parts = calls.setdefault(call.get("index", 0), [""])
                function = call.get("function") or {}
                if function.get("name"):
                    parts[0] = function["name"]
                if function.get("arguments"):
                    parts.append(function["arguments"])
    stats = None
    if usage is not None or finish or tools:
        if collect and len(messages) > 1:  # choices told apart: choice 0's finish reason and tool names
            finish = first_finish or finish
            tools = [p[0] for _, p in sorted(messages[0][1].items()) if p[0]]
        u = usage or {}
        stats = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0), 0, finish, tuple(tools))
    said = {
        index: Answer("".join(text), tuple((p[0], "".join(p[1:])) for _, p in sorted(calls.items())))
        for index, (text, calls) in messages.items()
    }
    answer = Answer(said[0].text, said[0].tool_calls, tuple(said[i] for i in sorted(said) if i))
    kept = [e for e in stream.split(blank) if not (b'"choices":[]' in e and b'"usage":{' in e)]
    return stats, answer, blank.join(kept)


def _chunk(delta: dict[str, object], finish: str | None = None, index: int = 0) -> bytes:
    choice = {"index": index, "delta": delta, **({"finish_reason": finish} if finish else {})}
    event = {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + msgspec.json.encode(event)


events = st.lists(
    st.one_of(
        st.text(min_size=1, max_size=8).map(lambda t: _chunk({"content": t})),
        # another of `n` choices (vLLM: one choice an event, `index` naming it)
        st.tuples(st.text(min_size=1, max_size=8), st.integers(1, 2)).map(
            lambda c: _chunk({"content": c[0]}, index=c[1])
        ),
        st.tuples(st.integers(0, 2), st.sampled_from(["search", "edit"]), st.text(max_size=6)).map(
            lambda c: _chunk({"tool_calls": [{"index": c[0], "function": {"name": c[1], "arguments": c[2]}}]})
        ),
        st.tuples(st.sampled_from(["search", "edit"]), st.text(max_size=6)).map(
            lambda c: _chunk({"tool_calls": [{"function": {"name": c[0], "arguments": c[1]}}]}, index=1)
        ),
        st.tuples(st.integers(0, 2), st.text(max_size=6)).map(
            lambda c: _chunk({"tool_calls": [{"index": c[0], "function": {"arguments": c[1]}}]})
        ),
        st.sampled_from(["stop", "length", "tool_calls"]).map(lambda f: _chunk({}, f)),
        st.integers(0, 99).map(
            lambda n: b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":2}}' % n
        ),
        st.just(b"data: [DONE]"),
        st.just(b": keep-alive comment"),
        # Markers outside data lines, and two events' markers on one data line: read as line by line does.
        st.just(b': comment "finish_reason":"length" "name":"x" "usage":{"prompt_tokens":1}'),
        st.just(b'event: chunk "finish_reason":"length"\ndata: {"choices":[{"finish_reason":"stop"}]}'),
        st.just(
            b'data: {"tool_calls":[{"function":{"name":"a"}},{"function":{"name":"b"}}],"finish_reason":"x"}'
        ),
        st.just(b"data: {not json"),
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.lists(st.integers(min_value=0, max_value=600), max_size=6), st.booleans())
def test_the_scanner_reads_a_stream_as_a_line_by_line_reading_does(
    stream_events: list[bytes], cuts: list[int], crlf: bool
) -> None:
    stream = b"\n\n".join(stream_events) + b"\n\n"
    if crlf:  # lines ending in CRLF, as SSE allows
        stream = stream.replace(b"\n", b"\r\n")
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(stream)):
        pieces.append(stream[last:cut])
        last = cut
    pieces.append(stream[last:])
    collecting, stripping = StreamScanner(collect_answer=True), StreamScanner(collect_answer=True)
    forwarded = b""
    for piece in pieces:
        collecting.feed(piece)
        forwarded += stripping.feed_stripping_usage(piece)
    collecting.feed(b"\n")
    forwarded += stripping.flush()
    usage, answer, kept = _reference(stream, b"\r\n\r\n" if crlf else b"\n\n")
    assert collecting.usage() == usage and stripping.usage() == usage
    assert collecting.answer() == answer and stripping.answer() == answer
    assert forwarded == kept


def test_events_with_crlf_lines_are_forwarded_as_each_ends() -> None:
    """Not held until the stream's end (which a search for LF blank lines alone did)."""
    scanner = StreamScanner()
    first, second = _chunk({"content": "a"}) + b"\r\n\r\n", _chunk({"content": "b"}) + b"\r\n"
    assert scanner.feed_stripping_usage(first) == first
    assert scanner.feed_stripping_usage(second) == b""
    assert scanner.feed_stripping_usage(b"\r\n") == second + b"\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.booleans())
def test_a_stream_sent_event_by_event_is_read_as_a_line_by_line_reading_does(
    stream_events: list[bytes], split_blank_lines: bool
) -> None:
    # As vLLM streams: each event its own chunk (its blank line with it, or, cut otherwise, in the next one).
    stream = b"\n\n".join(stream_events) + b"\n\n"
    if split_blank_lines:
        pieces = [e + b"\n" for e in stream_events] + [b"\n"] if stream_events else [b"\n\n"]
        pieces = [pieces[0]] + [b"\n" + p for p in pieces[1:-1]] + [pieces[-1]] if len(pieces) > 1 else pieces
    else:
        pieces = [e + b"\n\n" for e in stream_events] or [b"\n\n"]
    assert b"".join(pieces) == stream
    collecting, stripping = StreamScanner(collect_answer=True), StreamScanner(collect_answer=True)
    plain = StreamScanner()
    forwarded = b""
    for piece in pieces:
        collecting.feed(piece)
        plain.feed(piece)
        forwarded += stripping.feed_stripping_usage(piece)
    collecting.feed(b"\n")
    plain.feed(b"\n")
    forwarded += stripping.flush()
    usage, answer, kept = _reference(stream)
    assert collecting.usage() == usage and stripping.usage() == usage
    assert plain.usage() == _reference(stream, collect=False)[0]
    assert collecting.answer() == answer and stripping.answer() == answer
    assert forwarded == kept


def test_a_line_holding_two_objects_is_not_read_as_two_events() -> None:
    # Joined into one array, `{...}, {...}` on one line would pass for two events; read alone it is no JSON.
    two_on_one_line = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}, {"choices":[],"usage":{"prompt_tokens":5}}'
    )
    stream = _chunk({"content": "x"}) + b"\n\n" + two_on_one_line + b"\n\n"
    scanner = StreamScanner(collect_answer=True)
    scanner.feed(stream)
    usage, answer, _ = _reference(stream)
    assert scanner.answer() == answer == Answer("x")
    assert scanner.usage() == usage


def test_a_whole_answers_message_is_read_with_and_without_tool_calls() -> None:
    """`read_answer` reads a text-only message on a shorter path; both shapes give the same fields."""
    from proxy.data_structs import Answer
    from proxy.sse_scan import read_answer

    def whole(message: dict[str, object], finish: str) -> bytes:
        usage = {"prompt_tokens": 7, "completion_tokens": 2}
        return json.dumps(
            {"choices": [{"message": message, "finish_reason": finish}], "usage": usage}
        ).encode()

    usage, said = read_answer(whole({"role": "assistant", "content": "hi"}, "stop"))
    assert said == Answer("hi", ()) and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason, usage.tool_names) == (
        7,
        2,
        "stop",
        (),
    )
    call = {"function": {"name": "grep", "arguments": "{}"}}
    usage, said = read_answer(
        whole({"content": None, "tool_calls": [call, {"function": None}]}, "tool_calls")
    )
    assert said == Answer("", (("grep", "{}"),)) and usage is not None and usage.tool_names == ("grep",)
    usage, said = read_answer(whole({"content": "x", "tool_calls": []}, "stop"))
    assert said == Answer("x", ()) and usage is not None and usage.tool_names == ()


def test_each_of_n_choices_is_read_as_the_message_a_client_may_go_on_with() -> None:
    """A call asking for `n` choices: a whole answer's are read in their order, a stream's by the index each
    event names (vLLM interleaves them); choice 0 is the answer, the others its alternatives, up to
    MAX_ALTERNATIVES of them, all within the one collect limit."""
    from proxy.data_structs import MAX_ALTERNATIVES

    call = {"function": {"name": "grep", "arguments": "{}"}}
    messages = [{"content": "zero"}, {"content": None, "tool_calls": [call]}, {"content": "two"}]
    body = {"choices": [{"index": i, "message": m} for i, m in enumerate(messages)], "usage": {}}
    _, said = read_answer(json.dumps(body).encode())
    assert said == Answer("zero", (), (Answer("", (("grep", "{}"),)), Answer("two", ())))

    stream = [_chunk({"role": "assistant", "content": ""}, index=i) for i in range(3)] + [
        _chunk({"content": "ze"}),
        _chunk({"content": "t"}, index=2),
        _chunk({"tool_calls": [{"index": 0, "function": call["function"]}]}, index=1),
        _chunk({"content": "ro"}),
        _chunk({"content": "wo"}, index=2),
    ]
    scanner = StreamScanner(collect_answer=True)
    scanner.feed(b"\n\n".join(stream) + b"\n\n")
    assert scanner.answer() == said

    many = StreamScanner(collect_answer=True)
    many.feed(b"".join(_chunk({"content": f"c{i}"}, index=i) + b"\n\n" for i in range(12)))
    answer = many.answer()
    assert answer is not None and answer.text == "c0"
    assert [a.text for a in answer.alternatives] == [f"c{i}" for i in range(1, MAX_ALTERNATIVES + 1)]

    bounded = StreamScanner(collect_answer=True, collect_limit=6)  # 3 choices of 3 characters: 9
    bounded.feed(b"".join(_chunk({"content": "abc"}, index=i) + b"\n\n" for i in range(3)))
    assert bounded.answer() is None


def test_one_event_chunks_are_read_whatever_the_space_after_data() -> None:
    """A chunk that is one event (a token-by-token stream) is decoded without stripping it when it starts
    `data: {` or `data:{`; other spacing (a tab, two spaces) still goes the stripping way, and an event with
    no space is read the same."""
    for spacing in ("", " ", "  ", "\t", " \t"):
        scanner = StreamScanner(collect_answer=True)
        for word in ("Hel", "lo"):
            delta = {"choices": [{"index": 0, "delta": {"content": word}}]}
            scanner.feed(f"data:{spacing}{json.dumps(delta)}\n\n".encode())
        finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        scanner.feed(f"data:{spacing}{json.dumps(finish)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
        scanner.feed(f"data:{spacing}{json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        assert scanner.answer() == Answer("Hello", ()), repr(spacing)
        found = scanner.usage()
        assert found is not None and (found.prompt_tokens, found.finish_reason) == (3, "stop"), repr(spacing)


def _delta_event(content: str = "", tool: tuple[int, str, str] | None = None) -> bytes:
    delta: dict[str, object] = {"content": content} if content else {}
    if tool is not None:
        index, name, arguments = tool
        delta["tool_calls"] = [{"index": index, "function": {"name": name, "arguments": arguments}}]
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()


def test_the_rebuilt_answer_is_bounded_and_dropped_past_its_limit_while_usage_is_still_read() -> None:
    """A replica that streams without end cannot grow the proxy's memory through session inference: past
    `collect_limit` characters (text and tool arguments together) the answer is dropped, not truncated (a
    truncated answer would chain the session to a key no later call can match), and usage still counts."""
    within = StreamScanner(collect_answer=True, collect_limit=10)
    for event in (_delta_event("abcd"), _delta_event(tool=(0, "grep", "{}")), _delta_event("efgh")):
        within.feed(event)
    assert within.answer() == Answer("abcdefgh", (("grep", "{}"),))  # exactly 10 characters

    past = StreamScanner(collect_answer=True, collect_limit=10)
    for event in (_delta_event("abcd"), _delta_event(tool=(0, "grep", "{}")), _delta_event("efghi")):
        past.feed(event)
    usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 11}}
    past.feed(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
    assert past.answer() is None
    found = past.usage()
    assert found is not None and (found.prompt_tokens, found.completion_tokens) == (7, 11)


def test_tool_names_read_from_one_stream_are_bounded() -> None:
    from proxy.sse_scan import MAX_STREAM_TOOL_NAMES

    scanner = StreamScanner()
    for i in range(MAX_STREAM_TOOL_NAMES + 50):
        scanner.feed(_delta_event(tool=(i, f"tool{i}", "")))
    found = scanner.usage()
    assert found is not None and len(found.tool_names) == MAX_STREAM_TOOL_NAMES
    assert found.tool_names[0] == "tool0"


# -- /v1/responses (the Responses API, as vLLM sends it) --------------------------------------------------

_CALL_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "read_file",
    "arguments": "",
}
_RESPONSE = {"id": "resp_1", "object": "response", "model": "m", "status": "in_progress", "output": []}
_RESPONSE_USAGE = {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 16}, "output_tokens": 9}
_RESPONSES_STREAM = b"".join(
    b"event: " + kind.encode() + b"\ndata: " + json.dumps({"type": kind, **data}).encode() + b"\n\n"
    for kind, data in [
        ("response.created", {"response": {**_RESPONSE, "usage": None}}),
        ("response.in_progress", {"response": {**_RESPONSE, "usage": None}}),
        ("response.output_item.added", {"output_index": 0, "item": _CALL_ITEM}),
        ("response.function_call_arguments.delta", {"item_id": "fc_1", "delta": '{"path": "a"}'}),
        ("response.function_call_arguments.done", {"item_id": "fc_1", "arguments": '{"path": "a"}'}),
        ("response.output_item.done", {"output_index": 0, "item": {**_CALL_ITEM, "status": "completed"}}),
        (
            "response.completed",
            {
                "response": {
                    **_RESPONSE,
                    "status": "completed",
                    "output": [{**_CALL_ITEM, "status": "completed"}],
                    "usage": _RESPONSE_USAGE,
                }
            },
        ),
    ]
)


def _fed_in_pieces(stream: bytes, cuts: list[int], collect: bool) -> StreamScanner:
    """A scanner fed `stream` cut at `cuts`, then the line end a stream's last event may lack."""
    scanner = StreamScanner(collect_answer=collect)
    edges = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(edges):
        scanner.feed(stream[start:end])
    scanner.feed(b"\n")
    return scanner


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(_RESPONSES_STREAM) - 1), max_size=8),
    collect=st.booleans(),
)
def test_a_responses_stream_gives_what_its_whole_answer_gives_however_it_is_cut(
    cuts: list[int], collect: bool
) -> None:
    """The usage is in the last event's `response` (read as nothing before: the scheduler learned no output
    and no finish reason of a streamed Responses API call), and its function call is named once, as the whole
    answer names it (each event naming it counted it: four calls of `read_file`)."""
    from proxy.sse_scan import parse_answer

    scanner = _fed_in_pieces(_RESPONSES_STREAM, cuts, collect)
    whole = {**_RESPONSE, "status": "completed", "output": [_CALL_ITEM], "usage": _RESPONSE_USAGE}
    assert (
        scanner.usage()
        == parse_answer(json.dumps(whole).encode())
        == Usage(30, 9, 16, "tool_calls", ("read_file",))
    )


def test_a_responses_answers_status_is_read_as_chats_finish_reason_whole_and_streamed() -> None:
    from proxy.sse_scan import parse_answer

    text = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}
    for status, finish in (("completed", "stop"), ("incomplete", "length"), ("failed", "failed")):
        whole = {**_RESPONSE, "status": status, "output": [text], "usage": _RESPONSE_USAGE}
        scanner = StreamScanner()
        scanner.feed(
            b"event: response.created\ndata: " + json.dumps({"response": _RESPONSE}).encode() + b"\n\n"
        )
        scanner.feed(b"event: response.done\ndata: " + json.dumps({"response": whole}).encode() + b"\n\n")
        assert scanner.usage() == parse_answer(json.dumps(whole).encode()) == Usage(30, 9, 16, finish)


# -- /v1/messages (Anthropic, as vLLM sends it) --------------------------------------------------------------

_ANTHROPIC_STREAM = b"".join(
    b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
    for kind, data in [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "m",
                    "stop_reason": None,
                    "usage": {"input_tokens": 25, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"command": "ls"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {
                    "input_tokens": 25,
                    "output_tokens": 9,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 16,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(_ANTHROPIC_STREAM) - 1), max_size=8),
    collect=st.booleans(),
)
def test_an_anthropic_stream_gives_its_usage_stop_reason_and_tools_however_it_is_cut(
    cuts: list[int], collect: bool
) -> None:
    scanner = _fed_in_pieces(_ANTHROPIC_STREAM, cuts, collect)
    assert scanner.usage() == Usage(25, 9, 16, "tool_calls", ("Bash",))


def test_a_whole_anthropic_answer_and_chat_stop_strings() -> None:
    from proxy.sse_scan import parse_answer

    whole = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "end_turn",
        "content": [
            {"type": "text", "text": "done"},
            {"type": "tool_use", "id": "t", "name": "Read", "input": {}},
        ],
        "usage": {"input_tokens": 40, "output_tokens": 3, "cache_read_input_tokens": 32},
    }
    assert parse_answer(json.dumps(whole).encode()) == Usage(40, 3, 32, "stop", ("Read",))
    stopped = parse_answer(json.dumps({**whole, "stop_reason": "max_tokens"}).encode())
    assert stopped is not None and stopped.finish_reason == "length"
    # vLLM's chat choices carry `stop_reason` too, the stop string matched: one spelled like an Anthropic stop
    # reason must not override the chat's own finish_reason, streamed or whole
    choice = {"index": 0, "finish_reason": "stop", "stop_reason": "tool_use"}
    scanner = StreamScanner()
    scanner.feed(b"data: " + json.dumps({"choices": [{**choice, "delta": {}}]}).encode() + b"\n\n")
    streamed = scanner.usage()
    assert streamed is not None and streamed.finish_reason == "stop"
    whole_chat = {"choices": [{**choice, "message": {"role": "assistant", "content": "ok"}}]}
    assert parse_answer(json.dumps(whole_chat).encode()) == Usage(finish_reason="stop")


def test_an_anthropic_answer_is_rebuilt_as_its_text_blocks_text_whole_and_streamed() -> None:
    whole = (
        b'{"type":"message","role":"assistant","content":[{"type":"text","text":"Let me "},'
        b'{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}},{"type":"text","text":"look."}],'
        b'"stop_reason":"tool_use","usage":{"input_tokens":9,"output_tokens":4}}'
    )
    _, said = read_answer(whole)
    assert said == Answer("Let me look.")  # what session_chain reads of the message a client sends back
    events = [
        {"type": "message_start", "message": {"content": [], "usage": {"input_tokens": 9}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "look."}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "Bash"}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
    ]
    stream = b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())  # type: ignore[index]
        for e in events
    )
    for pieces in ([stream], [stream[:100], stream[100:]], [bytes([b]) for b in stream]):
        scanner = StreamScanner(collect_answer=True)
        for piece in pieces:
            scanner.feed(piece)
        assert scanner.answer() == Answer("Let me look.")
        usage = scanner.usage()
        assert usage is not None and usage.finish_reason == "tool_calls" and usage.tool_names == ("Bash",)


def counts(answer: bytes) -> tuple[int, int, int]:
    usage, _ = read_answer(answer)
    assert usage is not None
    return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens


def test_a_replicas_usage_is_taken_only_as_far_as_it_makes_sense() -> None:
    """Negative counts, or more cached tokens than prompted (an Anthropic `cache_read_input_tokens` or an
    OpenAI `cached_tokens`), are clamped before the scheduler learns prefill speeds from them."""
    anthropic = (
        b'{"content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn",'
        b'"usage":{"input_tokens":10,"output_tokens":-3,"cache_read_input_tokens":99}}'
    )
    usage, _ = read_answer(anthropic)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
        10,
        0,
        10,
    )
    openai = (
        b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":-7,'
        b'"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":-4}}}'
    )
    usage, _ = read_answer(openai)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
        0,
        2,
        0,
    )


def test_a_replicas_count_past_any_context_is_clamped() -> None:
    from proxy.sse_scan import MAX_USAGE_TOKENS

    huge = b"123456789012345678901234567890"
    whole = (
        b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%b,'
        b'"completion_tokens":%b,"prompt_tokens_details":{"cached_tokens":%b}}}' % (huge, huge, huge)
    )
    usage, _ = read_answer(whole)
    assert usage == Usage(MAX_USAGE_TOKENS, MAX_USAGE_TOKENS, MAX_USAGE_TOKENS, "stop")
    scanner = StreamScanner()
    scanner.feed(b'data: {"choices":[],"usage":{"prompt_tokens":%b,"completion_tokens":2}}\n\n' % huge)
    assert scanner.usage() == Usage(MAX_USAGE_TOKENS, 2)


def test_complete_events_length_ends_at_the_last_blank_line() -> None:
    from proxy.sse_scan import complete_events_length

    assert complete_events_length(b'data: {"a":1}\n\ndata: {"b"') == len(b'data: {"a":1}\n\n')
    assert complete_events_length(b'data: {"a":1}\r\n\r\ndata: {"b"') == len(b'data: {"a":1}\r\n\r\n')
    assert complete_events_length(b'data: {"a":1}\n\n') == len(b'data: {"a":1}\n\n')
    assert complete_events_length(b'data: {"a":1}\n') == 0  # the line is whole, its event is not
    assert complete_events_length(b"") == 0


def test_a_relay_holds_an_unfinished_event_back_but_never_more_than_its_bound() -> None:
    from proxy.sse_scan import MAX_HELD_EVENT, whole_events

    assert whole_events(b"", b'data: {"a":1}\n\ndata: {"b"') == (b'data: {"a":1}\n\n', b'data: {"b"')
    assert whole_events(b'data: {"b"', b":2}\n\n") == (b'data: {"b":2}\n\n', b"")
    assert whole_events(b"", b"data: x") == (b"", b"data: x")  # nothing whole yet
    # A backend that never ends its events (or one event of megabytes) still streams, in bounded memory:
    # before, everything it sent was held until the stream ended.
    held = b""
    sent = 0
    for _ in range(100):
        out, held = whole_events(held, b"data: " + b"x" * 8186)  # 8 KiB, never a blank line
        sent += len(out)
        assert len(held) <= MAX_HELD_EVENT
    assert sent + len(held) == 100 * 8192 and sent > 0


_USAGE_EVENT = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'


def _one_long_line(scanner: StreamScanner, chunks: int, strip: bool) -> tuple[bytes, int]:
    """Feeds a chat stream whose first event is one line of `chunks` x 8 KiB, then a usage-only event: what
    the scanner forwarded (stripping) and the most it held at once."""
    feed = scanner.feed_stripping_usage if strip else scanner.feed
    out, most = [], 0
    for i in range(chunks):
        piece = (b'data: {"choices":[{"delta":{"content":"' if i == 0 else b"") + b"x" * 8192
        out.append(feed(piece) or b"")
        most = max(most, len(scanner._partial), len(scanner._pending_events))
    out.append(feed(b'"}}]}\n\n' + _USAGE_EVENT + b"data: [DONE]\n\n") or b"")
    return b"".join(out), most


def test_a_line_longer_than_the_limit_is_skipped_in_bounded_memory_and_the_rest_is_read() -> None:
    """A replica's line that never ends was held whole, and copied again with each chunk: time quadratic in
    its length (128 MB stalled the proxy's loop ~1 s). Past the limit it is dropped up to its newline."""
    from proxy.sse_scan import MAX_HELD_EVENT

    scanner = StreamScanner(collect_answer=True, collect_limit=1)  # the line limit is then MAX_HELD_EVENT
    _, most = _one_long_line(scanner, 200, strip=False)  # 1.6 MB in one line
    assert most <= MAX_HELD_EVENT
    assert scanner.usage() == Usage(7, 3)  # the events after the skipped line are read
    assert scanner.answer() is None  # past its limit: not collected


def test_a_long_line_under_the_limit_is_still_read_whole() -> None:
    scanner = StreamScanner(collect_answer=True)  # the default limit, 64 MiB
    _one_long_line(scanner, 200, strip=False)
    assert scanner.usage() == Usage(7, 3)
    answer = scanner.answer()
    assert answer is not None and answer.text == "x" * 8192 * 200


def test_an_event_too_long_to_hold_flows_before_it_ends_and_the_usage_event_is_still_stripped() -> None:
    from proxy.sse_scan import MAX_HELD_EVENT

    scanner = StreamScanner(collect_answer=True)
    stream = scanner.feed_stripping_usage(b'data: {"choices":[{"delta":{"content":"')
    for _ in range(100):
        stream += scanner.feed_stripping_usage(b"x" * 8192)
        assert len(scanner._pending_events) <= MAX_HELD_EVENT
    assert len(stream) > 100 * 8192 - MAX_HELD_EVENT  # flowing before the event's end
    stream += scanner.feed_stripping_usage(b'"}}]}\n\n' + _USAGE_EVENT + b"data: [DONE]\n\n")
    stream += scanner.flush()
    head = b'data: {"choices":[{"delta":{"content":"' + b"x" * 819200 + b'"}}]}\n\n'
    assert stream == head + b"data: [DONE]\n\n"  # every byte but the usage-only event
    assert scanner.usage() == Usage(7, 3)


_STOP = re.compile(rb'"stop_reason":\s*"(end_turn|tool_use|max_tokens|stop_sequence|pause_turn|refusal)"')
_STOPS = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
# Lines whose finish reason, stop reason and tool names a block's backward search must read as a reading of
# each data line in turn does: reasons null or not, both on one line, markers outside data lines, CR endings.
_MARKED_LINES = st.sampled_from(
    [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        b'data: {"choices":[{"finish_reason":null},{"finish_reason":"length"}]}',
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}',
        b'data: {"delta":{"stop_reason":"no such reason"}}',
        b'data: {"finish_reason": "length", "stop_reason":"tool_use"}',
        b'data: {"finish_reason":null,"stop_reason":"max_tokens"}',
        b': comment "finish_reason":"length" "stop_reason":"end_turn"',
        b'event: x "finish_reason":"tool_calls"',
        b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"search"}}]}}]}',
        b'data: {"content_block":{"type":"tool_use","name":"Bash"}}',
        b'data: {"name":"not a tool"}',
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}',
        b'data: {"choices":[{"finish_reason":"stop"}],"usage": {"prompt_tokens":3}}',
        b': "usage":{"prompt_tokens":99}',
        b"data: [DONE]",
        b"",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MARKED_LINES, max_size=14), st.booleans(), st.booleans())
def test_a_blocks_finish_reason_usage_and_tools_are_those_of_its_data_lines_read_in_turn(
    lines: list[bytes], crlf: bool, collect: bool
) -> None:
    # A block of several lines (the branches that search the block back from its end), collecting or not
    first = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}'
    end = b"\r\n" if crlf else b"\n"
    block = b"".join(line + end for line in [first, *lines])
    finish, tools, prompt = "", [], 0
    for line in block.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        if b'"usage"' in line:
            prompt = json.loads(line[5:])["usage"]["prompt_tokens"]
        found, stop = _FINISH.search(line), _STOP.search(line)
        if found:
            finish = found.group(1).decode()
        elif stop:
            finish = _STOPS[stop.group(1).decode()]
        if b'"tool_calls"' in line or b'"tool_use"' in line:
            tools.extend(m.group(1).decode() for m in _NAME.finditer(line))
    scanner = StreamScanner(collect_answer=collect)
    scanner.feed(block)
    usage = scanner.usage()
    read = (usage.finish_reason, usage.tool_names, usage.prompt_tokens) if usage is not None else ("", (), 0)
    assert read == (finish, tuple(tools), prompt)


def test_a_response_id_is_read_on_the_responses_route_and_not_on_the_other_call_routes() -> None:
    from proxy.sse_scan import whole_response_id

    event = b'data: {"type":"response.created","response":{"id":"resp_abc","status":"in_progress"}}\n\n'
    for path, expected in [("/v1/responses", "resp_abc"), ("", "resp_abc"), ("/v1/chat/completions", None)]:
        scanner = StreamScanner(collect_answer=True, path=path)
        scanner.feed(event + b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
        assert scanner.response_id == expected
        assert whole_response_id(b'{"id":"resp_abc","object":"response"}', path) == expected


def test_what_an_answer_and_a_body_decode_to_is_left_out_of_the_cyclic_gc() -> None:
    import gc

    from proxy.data_structs import AnswerFields, CallFields, ChatMessage

    answer = msgspec.json.decode(
        b'{"choices":[{"delta":{"tool_calls":[{"function":{"name":"a"}}]}}],"usage":{"prompt_tokens":1}}',
        type=AnswerFields,
    )
    assert answer.choices and answer.choices[0].delta and answer.usage
    message = msgspec.json.decode(b'{"role":"user","content":"x","tool_calls":[]}', type=ChatMessage)
    call = msgspec.json.decode(b'{"model":"m","vllm_xargs":{"a":[1]}}', type=CallFields)
    for struct in (answer, answer.choices[0], answer.choices[0].delta, answer.usage, message, call):
        assert not gc.is_tracked(struct)


@pytest.mark.parametrize("crlf", [False, True])
def test_a_large_events_blank_line_split_before_a_stripped_usage_event_stays_with_it(crlf: bool) -> None:
    """The thirteenth review: an event past MAX_HELD_EVENT flows as it comes; when its blank line was cut
    between two reads and the second also held the usage event the proxy strips, the strip took the blank
    line's rest with it, and the client read the large event and `[DONE]` as one event that is not JSON."""
    line_end = b"\r\n" if crlf else b"\n"
    big = _chunk({"content": "x" * (MAX_HELD_EVENT + 10)}) + line_end
    usage = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}' + line_end * 2
    done = b"data: [DONE]" + line_end * 2
    stream = big + line_end + usage + done
    for cut in range(len(big) - 2, len(big) + 3):  # every cut around the large event's blank line
        scanner = StreamScanner()
        forwarded = scanner.feed_stripping_usage(stream[:cut]) + scanner.feed_stripping_usage(stream[cut:])
        forwarded += scanner.flush()
        assert forwarded == big + line_end + done, cut
        assert scanner.usage() == Usage(5, 1)


def test_a_replica_forcing_usage_keeps_its_usage_event() -> None:
    """vLLM's `--enable-force-include-usage` puts usage in every chunk and ends every stream with a usage
    event, asked for or not: the proxy stripped that last event, which the client gets from vLLM directly."""
    first = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":5}}'
    )
    last = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
    stream = first + b"\n\n" + _chunk({"content": "a"}) + b"\n\n" + last + b"\n\ndata: [DONE]\n\n"
    scanner = StreamScanner()
    assert scanner.feed_stripping_usage(stream) + scanner.flush() == stream
    assert scanner.usage() == Usage(5, 1)


def test_the_word_usage_in_the_first_token_is_not_taken_for_forced_usage() -> None:
    """The fourteenth review: the forced-usage check looked for the bytes `"usage"` on a line with choices,
    so a completion whose first token was the word "usage" kept the usage event the client did not ask for."""
    first = b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"usage"}]}'
    last = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
    stream = first + b"\n\n" + last + b"\n\ndata: [DONE]\n\n"
    scanner = StreamScanner()
    assert scanner.feed_stripping_usage(stream) + scanner.flush() == first + b"\n\ndata: [DONE]\n\n"


def test_a_comment_before_the_first_event_does_not_decide_whether_usage_is_forced() -> None:
    """The fifteenth review: the check was made on the first block whatever it held, so a keep-alive comment
    first left a forcing replica's usage event stripped."""
    first = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":5}}'
    )
    last = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
    rest = first + b"\n\n" + last + b"\n\ndata: [DONE]\n\n"
    scanner = StreamScanner()
    forwarded = scanner.feed_stripping_usage(b": ping\n\n") + scanner.feed_stripping_usage(rest)
    assert forwarded + scanner.flush() == b": ping\n\n" + rest


@pytest.mark.parametrize("collect", [False, True])
@pytest.mark.parametrize("event_by_event", [False, True])
@pytest.mark.parametrize("path", ["", "/v1/chat/completions"])
def test_forced_usage_is_told_from_what_the_scan_decodes_however_the_stream_comes(
    collect: bool, event_by_event: bool, path: str
) -> None:
    """The forced-usage check reads what `feed` decodes of the first events (no search and decode of its
    own): a forcing replica's stream keeps its usage event on every path through `feed`, and an ordinary
    one loses the usage event the proxy asked for."""
    first = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":5}}'
    )
    last = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
    for forced in (True, False):
        opening = first if forced else _chunk({"role": "assistant"})
        events = [opening, _chunk({"content": "a"}), _chunk({}, "stop"), last, b"data: [DONE]"]
        pieces = [e + b"\n\n" for e in events] if event_by_event else [b"\n\n".join(events) + b"\n\n"]
        scanner = StreamScanner(collect_answer=collect, path=path)
        forwarded = b"".join(scanner.feed_stripping_usage(p) for p in pieces) + scanner.flush()
        kept = events if forced else [e for e in events if e != last]
        assert forwarded == b"\n\n".join(kept) + b"\n\n", (forced, collect, event_by_event)
        assert scanner.usage() == Usage(5, 1, 0, "stop")
        assert scanner.answer() == (Answer("a") if collect else None)


@pytest.mark.parametrize("spacing", [b":", b": ", b" : ", b":\t", b":  "])
@pytest.mark.parametrize("collect", [False, True])
def test_usage_is_read_and_forced_usage_told_with_any_json_spacing(spacing: bytes, collect: bool) -> None:
    """Only `"usage":{` and `"usage": {` were known: a replica writing `"usage" : {` had neither its usage
    read nor, once the forced-usage check came from what the scan decodes, its forced usage told (the
    forty-fourth session's review of its fixes)."""
    usage = b'"usage"' + spacing + b'{"prompt_tokens":5,"completion_tokens":1}'
    forced_first = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}],' + usage + b"}"
    # the usage-only event's empty choices spaced alike (`"choices": []`, Python's json.dumps: the
    # eighteenth review)
    last = b'data: {"id":"c","choices"' + spacing + b"[]," + usage + b"}"
    for forced in (True, False):
        first = forced_first if forced else b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"x"}}]}'
        events = [first, _chunk({"content": "a"}), _chunk({}, "stop"), last, b"data: [DONE]"]
        for pieces in ([e + b"\n\n" for e in events], [b"\n\n".join(events) + b"\n\n"]):
            scanner = StreamScanner(collect_answer=collect)
            forwarded = b"".join(scanner.feed_stripping_usage(p) for p in pieces) + scanner.flush()
            kept = events if forced else [e for e in events if e != last]
            assert forwarded == b"\n\n".join(kept) + b"\n\n", (forced, len(pieces))
            assert scanner.usage() == Usage(5, 1, 0, "stop"), (forced, len(pieces))


def test_the_sequence_number_after_the_last_event_sent() -> None:
    from proxy.sse_scan import sequence_number_after

    assert sequence_number_after(b": keep-alive\n\n") is None
    two = b'data: {"type":"a","sequence_number": 7}\n\ndata: {"type":"b","sequence_number":8}\n\n'
    assert sequence_number_after(two) == 9  # the last event's
    for hostile in (b"1e999", b"-3", b'"4"', b"1234567890123456789"):  # no number read: none given
        assert sequence_number_after(b'data: {"sequence_number":' + hostile + b"}\n\n") is None
    quoted = b'data: {"sequence_number":2,"delta":"\\"sequence_number\\":40"}\n\n'
    assert sequence_number_after(quoted) == 3  # (a quoted one in the text is not a field)
    # the top-level key of the last event, wherever it stands in it (OpenAI's order puts it before the
    # response, whose tools may name a property so; the second review of the change)
    nested = b'data: {"sequence_number":0,"response":{"tools":[{"sequence_number":{"type":"integer"}}]}}\n\n'
    assert sequence_number_after(nested) == 1
    example = b'data: {"sequence_number":0,"response":{"examples":[{"sequence_number":41}]}}\n\n'
    assert sequence_number_after(example) == 1
    assert sequence_number_after(b'data: {"type":"x","sequence_number" : 7}\n\n') == 8
    later = two + b'data: {"type":"c","item":{"sequence_number":99}}\n\n'  # no number of its own
    assert sequence_number_after(later) == 9
    # an event's data over two lines, joined as SSE joins them; CR-only line ends (the third review)
    split = two + b'data: {"type":"x",\ndata: "sequence_number":9}\n\n'
    assert sequence_number_after(split) == 10
    assert sequence_number_after(two.replace(b"\n", b"\r")) == 9


def test_an_anthropic_streams_input_counts_come_from_message_start_when_its_last_usage_has_none() -> None:
    """Anthropic's API gives `message_delta` the output's count alone (vLLM gives the whole usage there):
    the input's came out 0, so the per-tenant token counters and the predictor saw no prompt (the
    forty-sixth session's review)."""
    counts = {"input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 4}
    start = {"type": "message_start", "message": {"id": "m", "usage": counts}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}
    events = [("message_start", start), ("message_delta", delta), ("message_stop", {"type": "message_stop"})]
    stream = b"".join(b"event: %s\ndata: %s\n\n" % (n.encode(), json.dumps(e).encode()) for n, e in events)
    for collect in (False, True):
        scanner = StreamScanner(collect, path="/v1/messages")
        scanner.feed(stream)
        assert scanner.usage() == Usage(11, 5, 4, "stop"), collect
    whole = {**delta, "usage": {"input_tokens": 20, "output_tokens": 5}}  # vLLM's: taken as it is
    scanner = StreamScanner(path="/v1/messages")
    scanner.feed(b"".join(b"data: %s\n\n" % json.dumps(e).encode() for e in (start, whole)))
    assert scanner.usage() == Usage(20, 5, 0, "stop")
