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


def _spliced(body: bytes, key: bytes, value: bytes) -> bytes | None:
    """`body` with `"key":value,` inserted after its opening brace, without decoding it; None where that
    might not give the same object as decoding would: the body is not an object, the object is empty (a
    trailing comma), the key appears anywhere in the body (maybe as a field), or the body has a `\\u`
    escape (a key may be spelled with one)."""
    start = body.find(b"{")
    if start < 0 or body[:start].strip() or body[start + 1 :].lstrip()[:1] == b"}":
        return None
    if b'"' + key + b'"' in body or b"\\u" in body:
        return None
    return body[: start + 1] + b'"' + key + b'":' + value + b"," + body[start + 1 :]


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
    spliced = _spliced(body, b"stream_options", b'{"include_usage":true}')
    if spliced is not None:
        return spliced
    call = _decoder.decode(body)
    options = call.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    call["stream_options"] = options
    return _encoder.encode(call)
