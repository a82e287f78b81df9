# ruff: noqa
"""Item 5: /v1/messages stream input counts from message_start; chat/completions/responses unchanged; hostile
message_start events. Drives proxy.sse_scan.StreamScanner (the compiled module) with whole streams, fed as
one chunk, event by event, and byte by byte, collecting and not."""

import json, os, sys

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46d")
sys.path.insert(0, TREE)
os.chdir(TREE)
from proxy.sse_scan import StreamScanner


def sse(name, obj):
    return b"event: %s\ndata: %s\n\n" % (
        name.encode(),
        json.dumps(obj).encode() if not isinstance(obj, bytes) else obj,
    )


def start(usage):
    return sse(
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
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


TEXT = (
    sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    + sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
    )
    + sse("content_block_stop", {"type": "content_block_stop", "index": 0})
)


def delta(usage):
    return sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": usage,
        },
    )


STOP = sse("message_stop", {"type": "message_stop"})


def scan(path, stream, mode, collect):
    s = StreamScanner(collect, path=path)
    if mode == "whole":
        s.feed(stream)
    elif mode == "events":
        for part in stream.split(b"\n\n")[:-1]:
            s.feed(part + b"\n\n")
    else:
        for i in range(len(stream)):
            s.feed(stream[i : i + 1])
    u = s.usage()
    return (
        None
        if u is None
        else (u.prompt_tokens, u.completion_tokens, u.cached_tokens)
        if hasattr(u, "cached_tokens")
        else tuple(u)[:3]
    )


M = "/v1/messages"
CASES = [
    (
        "anthropic: input only in message_start",
        M,
        start({"input_tokens": 25, "output_tokens": 1}) + TEXT + delta({"output_tokens": 15}) + STOP,
        (25, 15, 0),
    ),
    (
        "anthropic: cache read from message_start",
        M,
        start({"input_tokens": 40, "cache_read_input_tokens": 30, "output_tokens": 1})
        + TEXT
        + delta({"output_tokens": 15})
        + STOP,
        (40, 15, 30),
    ),
    (
        "vllm: whole usage in message_delta wins",
        M,
        start({"input_tokens": 25, "output_tokens": 0})
        + TEXT
        + delta({"input_tokens": 99, "output_tokens": 15})
        + STOP,
        (99, 15, 0),
    ),
    (
        "no message_start usage",
        M,
        sse("message_start", {"type": "message_start", "message": {"id": "x", "content": []}})
        + TEXT
        + delta({"output_tokens": 15})
        + STOP,
        (0, 15, 0),
    ),
    (
        "hostile: huge input",
        M,
        start({"input_tokens": 10**15}) + TEXT + delta({"output_tokens": 15}) + STOP,
        (1 << 31, 15, 0),
    ),
    (
        "hostile: beyond int64 (clamped)",
        M,
        start({"input_tokens": 10**30}) + TEXT + delta({"output_tokens": 15}) + STOP,
        (1 << 31, 15, 0),
    ),
    (
        "hostile: negative",
        M,
        start({"input_tokens": -50, "cache_read_input_tokens": -3})
        + TEXT
        + delta({"output_tokens": 15})
        + STOP,
        (0, 15, 0),
    ),
    ("hostile: usage a string", M, start("lots") + TEXT + delta({"output_tokens": 15}) + STOP, (0, 15, 0)),
    ("hostile: usage a list", M, start([1, 2]) + TEXT + delta({"output_tokens": 15}) + STOP, (0, 15, 0)),
    (
        "hostile: message a string",
        M,
        sse("message_start", {"type": "message_start", "message": "hi"})
        + TEXT
        + delta({"output_tokens": 15})
        + STOP,
        (0, 15, 0),
    ),
    (
        "several message_start: last before delta",
        M,
        start({"input_tokens": 5}) + start({"input_tokens": 7}) + TEXT + delta({"output_tokens": 15}) + STOP,
        (7, 15, 0),
    ),
    (
        "message_start after message_delta: ignored",
        M,
        start({"input_tokens": 5})
        + TEXT
        + delta({"output_tokens": 15})
        + start({"input_tokens": 900})
        + STOP,
        (5, 15, 0),
    ),
    (
        "cached more than input (clamped)",
        M,
        start({"input_tokens": 3, "cache_read_input_tokens": 300})
        + TEXT
        + delta({"output_tokens": 15})
        + STOP,
        (3, 15, 3),
    ),
    # other routes unchanged
    (
        "chat usage",
        "/v1/chat/completions",
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\ndata: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":8}}}\n\ndata: [DONE]\n\n',
        (11, 4, 8),
    ),
    (
        "chat with a top-level message.usage chunk (hostile)",
        "/v1/chat/completions",
        b'data: {"message":{"usage":{"input_tokens":500}},"choices":[]}\n\ndata: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4}}\n\ndata: [DONE]\n\n',
        (11, 4, 0),
    ),
    (
        "completions usage",
        "/v1/completions",
        b'data: {"choices":[{"index":0,"text":"hi","finish_reason":"length"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":2}}\n\ndata: [DONE]\n\n',
        (6, 2, 0),
    ),
    (
        "responses usage",
        "/v1/responses",
        sse(
            "response.created",
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {"id": "resp_1", "status": "in_progress"},
            },
        )
        + sse(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "delta": "hi", "sequence_number": 1},
        )
        + sse(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 2,
                "response": {
                    "id": "resp_1",
                    "status": "completed",
                    "output": [],
                    "usage": {
                        "input_tokens": 13,
                        "output_tokens": 5,
                        "input_tokens_details": {"cached_tokens": 4},
                    },
                },
            },
        ),
        (13, 5, 4),
    ),
    (
        "responses error event with top-level message string then completed",
        "/v1/responses",
        sse("error", {"type": "error", "code": "x", "message": "oops", "sequence_number": 1})
        + sse(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 2,
                "response": {
                    "id": "resp_1",
                    "status": "completed",
                    "output": [],
                    "usage": {"input_tokens": 13, "output_tokens": 5},
                },
            },
        ),
        (13, 5, 0),
    ),
]
for name, path, stream, want in CASES:
    got = {
        f"{m}/{'collect' if c else 'scan'}": scan(path, stream, m, c)
        for m in ("whole", "events", "bytes")
        for c in (False, True)
    }
    bad = {k: v for k, v in got.items() if v != want}
    print(("DEFECT" if bad else "OK") + f": {name}: want {want}" + (f", got {bad}" if bad else ""))
