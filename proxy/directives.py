"""Rewrites a call's body to carry what the scheduler decided for the replica (KV retention), and to ask a
streamed call for its token usage.

Contract: `with_retention(body, session_id, ttl_s, priority)` returns the body with
`vllm_xargs.saga_retain_ttl_s`, `vllm_xargs.session_id` (unless the client set one) and, when `priority` is
not None, `vllm_xargs.saga_retain_priority` set (docs/retention-api.md), every other field unchanged;
bodies the proxy would not touch otherwise are forwarded byte for byte. Priority needs no rewrite: vLLM
reads the `X-Vllm-Priority` header. `without_client_retention` drops the retention directives a client sent
(`asks_for_retention`): only the scheduler asks replicas for retention. `with_session_id` makes a body's
`session_id` the session the proxy schedules.

The rewrites decode only the body's top level: each field's value stays the bytes the client sent
(`msgspec.Raw`), only the one field rewritten is decoded, so a long conversation is scanned, not rebuilt
(a 1.4 KB chat body: ~7 µs decoded and re-encoded whole, ~1.2 µs so). A body that is not a JSON object
raises msgspec's DecodeError or ValidationError, as a whole decode did.

When the caller knows the body lacks the member (`absent`: its decode found no `vllm_xargs` or
`stream_options` at the top level, `BodyLacks`), the member is added before the object's closing brace
without reading the body at all: one copy instead of a scan and a re-encode (a coding agent's 470 KB call:
~165 µs -> ~20 µs). The body must then be a JSON object (the caller decoded it as one).
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.data_structs import CallFields

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])  # the top level; values left as sent
_encoder = msgspec.json.Encoder()


class BodyLacks:
    """Top-level members a call's body does not have (its decode found none): added without a re-decode.
    (A plain class: compiled, it is made without entering the interpreter, which a NamedTuple's is not.)"""

    def __init__(self, vllm_xargs: bool = False, stream_options: bool = False) -> None:
        self.vllm_xargs = vllm_xargs
        self.stream_options = stream_options


def lacks_of(fields: CallFields) -> BodyLacks:
    """What the body `fields` were decoded from lacks (a member set to null is there: it is rewritten)."""
    return BodyLacks(fields.vllm_xargs is msgspec.UNSET, fields.stream_options is msgspec.UNSET)


_SPACE = b" \t\r\n"


def _with_member(body: bytes, name: str, value: bytes) -> bytes:
    """`body`, a JSON object without a member `name`, with `"name": value` added last; the body is not read
    past its closing brace (and the whitespace around it)."""
    end = len(body)
    while end and body[end - 1] in _SPACE:
        end -= 1
    if not end or body[end - 1] != 0x7D:  # "}"; callers decoded the body as an object first
        raise ValueError("the body is not a JSON object")
    close = end - 1
    before = close
    while before and body[before - 1] in _SPACE:
        before -= 1
    separator = b"" if before and body[before - 1] == 0x7B else b","  # "{": an empty object
    member = b"".join((separator, _encoder.encode(name), b":", value, b"}"))
    return b"".join((memoryview(body)[:close], member))


def _object(raw: msgspec.Raw | None) -> dict[str, Any]:
    """A field's value as a new dict to update: {} when absent or not an object."""
    if raw is None:
        return {}
    value = msgspec.json.decode(raw)
    return dict(value) if isinstance(value, dict) else {}


# docs/retention-api.md's directives: the scheduler's to send, never a client's (`without_client_retention`)
RETENTION_KEYS = ("saga_retain_ttl_s", "saga_retain_priority")


def asks_for_retention(xargs: dict[str, Any] | None) -> bool:
    return xargs is not None and ("saga_retain_ttl_s" in xargs or "saga_retain_priority" in xargs)


def without_client_retention(body: bytes) -> bytes:
    """The body without the retention directives a client put in `vllm_xargs`: the replica would pin the
    session's KV for as long and at whatever priority the client says (nothing less important breaks it),
    outside the scheduler, which asks for retention itself and counts what it retains."""
    call = _fields.decode(body)
    xargs = _object(call.get("vllm_xargs"))
    for key in RETENTION_KEYS:
        xargs.pop(key, None)
    call["vllm_xargs"] = msgspec.Raw(_encoder.encode(xargs))
    return _encoder.encode(call)


def with_retention(
    body: bytes, session_id: str, ttl_s: float, priority: int | None = None, absent: bool = False
) -> bytes:
    """`absent`: the body is known to have no `vllm_xargs` (`BodyLacks`), so it is added without a decode."""
    directives: dict[str, Any] = {"saga_retain_ttl_s": ttl_s}
    if priority is not None:
        directives["saga_retain_priority"] = priority
    if absent:
        directives["session_id"] = session_id
        return _with_member(body, "vllm_xargs", _encoder.encode(directives))
    call = _fields.decode(body)  # a duplicated key: the last, as a whole decode keeps
    xargs = _object(call.get("vllm_xargs"))
    xargs.update(directives)
    xargs.setdefault("session_id", session_id)
    call["vllm_xargs"] = msgspec.Raw(_encoder.encode(xargs))
    return _encoder.encode(call)


def with_member_set(body: bytes, name: str, value: bytes, absent: bool = False) -> bytes:
    """The body with its top-level member `name` set to `value` (JSON); `absent`: the body is known to have
    no such member, so it is added without a decode."""
    if absent:
        return _with_member(body, name, value)
    call = _fields.decode(body)
    call[name] = msgspec.Raw(value)
    return _encoder.encode(call)


def with_session_id(body: bytes, session_id: str) -> bytes:
    """The body with its top-level `session_id` set to `session_id`: vLLM files a call's blocks (its KV
    events, the plugin's retention) under the body's `session_id` before the `X-Session-ID` header, so a
    body naming another id than the session the proxy schedules (a client API key's tenant prefix, or a
    header naming another session) would be filed apart from it, and two tenants' `"session_id": "x"`
    together."""
    return with_member_set(body, "session_id", _encoder.encode(session_id))


def asking_for_usage(body: bytes, absent: bool = False) -> bytes:
    """The body of a streamed call with `stream_options.include_usage` set, so the replica reports token
    usage at the end of the stream (the scheduler needs it); the proxy strips that chunk from what the client
    sees. `absent`: the body is known to have no `stream_options` (`BodyLacks`)."""
    if absent:
        return _with_member(body, "stream_options", b'{"include_usage":true}')
    call = _fields.decode(body)
    options = _object(call.get("stream_options"))
    options["include_usage"] = True
    # vLLM sends continuous usage (in every chunk, not stripped) only with include_usage: a client that asked
    # for it without include_usage gets none from vLLM, so none through the proxy either
    options.pop("continuous_usage_stats", None)
    call["stream_options"] = msgspec.Raw(_encoder.encode(options))
    return _encoder.encode(call)
