"""The call body's two flags read as vLLM reads them: pydantic's lax booleans, which msgspec does not read.

Contract: CallFields decodes `stream` and `stream_options.include_usage` as `bool | str | float | None`
(proxy/data_structs.py); `lax_bool(value, path)` then makes a boolean of what is not one, as pydantic's lax
mode does ("yes", "on", "t", "y", "1", "true", "no", "off", "f", "n", "0", "false", any case; 1.0 and 0.0),
and raises msgspec.ValidationError naming `path` for anything else. Read in the one decode (a body decoded a
second time read differently: a key given twice, a number past a float's range elsewhere in it).
"""

from __future__ import annotations

import msgspec

_TRUE = frozenset(("1", "on", "t", "true", "y", "yes"))
_FALSE = frozenset(("0", "off", "f", "false", "n", "no"))


def lax_bool(value: str | float, path: str) -> bool:
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    elif value in (0, 1):
        return bool(value)
    kind = "str" if isinstance(value, str) else "number"
    raise msgspec.ValidationError(f"Expected `bool | null`, got `{kind}` - at `{path}`")
