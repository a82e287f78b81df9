"""Rewrites a call's body to carry what the scheduler decided for the replica (KV retention), and to ask a
streamed call for its token usage.

Contract: `with_retention(body, session_id, ttl_s, priority)` returns the body with
`vllm_xargs.saga_retain_ttl_s`, `vllm_xargs.session_id` (unless the client set one) and, when `priority` is
not None, `vllm_xargs.saga_retain_priority` set (docs/retention-api.md), every other field unchanged;
bodies the proxy would not touch otherwise are forwarded byte for byte. Priority needs no rewrite: vLLM
reads the `X-Vllm-Priority` header.
"""

from __future__ import annotations

from typing import Any

import msgspec

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def with_retention(body: bytes, session_id: str, ttl_s: float, priority: int | None = None) -> bytes:
    call = _decoder.decode(body)
    xargs = call.get("vllm_xargs")
    xargs = dict(xargs) if isinstance(xargs, dict) else {}
    xargs["saga_retain_ttl_s"] = ttl_s
    if priority is not None:
        xargs["saga_retain_priority"] = priority
    xargs.setdefault("session_id", session_id)
    call["vllm_xargs"] = xargs
    return _encoder.encode(call)


def asking_for_usage(body: bytes) -> bytes:
    """The body of a streamed call with `stream_options.include_usage` set, so the replica reports token
    usage at the end of the stream (the scheduler needs it); the proxy strips that chunk from what the client
    sees. A body without `stream_options` gets it spliced in after its opening brace, without re-encoding."""
    start = body.find(b"{")
    if b'"stream_options"' not in body and start >= 0:
        return body[: start + 1] + b'"stream_options":{"include_usage":true},' + body[start + 1 :]
    call = _decoder.decode(body)
    options = call.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    call["stream_options"] = options
    return _encoder.encode(call)
