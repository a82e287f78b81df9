"""The call body's two flags read as vLLM reads them, where msgspec's loose decoding does not.

Contract: `loosened(body)` is called only for a body the routing decoder refused (proxy/identity.py
`decode_call`, a msgspec ValidationError); it returns the body re-encoded with `stream` and
`stream_options.include_usage` as the booleans pydantic's lax mode makes of them ("yes", "on", "t", "y",
"no", "off", "f", "n", any case, and 1.0 / 0.0, which msgspec refuses), or None when neither needed it (the
refusal stands). Only the proxy's own reading uses the re-encoded body; the replica gets the bytes sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

_TRUE = frozenset(("1", "on", "t", "true", "y", "yes"))
_FALSE = frozenset(("0", "off", "f", "false", "n", "no"))


def lax_bool(value: Any) -> Any:
    """`value` as pydantic's lax mode reads a bool; unchanged when it reads none (the refusal stands)."""
    if isinstance(value, str):
        lowered = value.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else value
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def loosened(body: bytes) -> bytes | None:
    try:
        fields = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    changed = False
    if "stream" in fields:
        stream = lax_bool(fields["stream"])
        changed = stream is not fields["stream"]
        fields["stream"] = stream
    options = fields.get("stream_options")
    if isinstance(options, dict) and "include_usage" in options:
        usage = lax_bool(options["include_usage"])
        changed = changed or usage is not options["include_usage"]
        options["include_usage"] = usage
    return msgspec.json.encode(fields) if changed else None
