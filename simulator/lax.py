"""Pydantic's lax mode for the scalar fields of the simulator's request structs, as vLLM reads its bodies.

Contract: `loosen(obj, type_)` returns the decoded JSON `obj` with the values of `type_`'s bool, int and
float fields (nested Structs too) converted as pydantic's lax mode converts them, so that a strict
`msgspec.convert(obj, type_)` accepts what vLLM accepts and refuses what it refuses:
- bool: true/false, 0/1, 0.0/1.0, and the strings yes/no/on/off/y/n/t/f/true/false/1/0 (any case);
- int: a bool, an integral float, or a decimal string (surrounding whitespace, `_` separators and trailing
  `.0` allowed) - not "null", "1e1" or "3.5";
- float: a bool, an int, or a number string ("1e1", "inf" included).
A value it cannot convert is left as it is, for msgspec to refuse with its path; untyped fields are left
alone.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any

import msgspec

_TRUE = frozenset(("1", "on", "t", "true", "y", "yes"))
_FALSE = frozenset(("0", "off", "f", "false", "n", "no"))
_INT_STR = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?", re.ASCII)  # (pydantic refuses "2.")


def loosen(obj: Any, type_: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    for name, kind in _plan(type_):
        if name in obj and obj[name] is not None:
            obj[name] = loosen(obj[name], kind) if isinstance(kind, type) else _CONVERT[kind](obj[name])
    return obj


@functools.cache
def _plan(type_: Any) -> tuple[tuple[str, Any], ...]:
    """(JSON name, "bool" | "int" | "float" | a nested Struct type) for each field that lax mode converts."""
    if not (isinstance(type_, type) and issubclass(type_, msgspec.Struct)):
        return ()
    plan = []
    for field in msgspec.structs.fields(type_):
        kind = _kind(field.type)
        if kind is not None:
            plan.append((field.encode_name, kind))
    return tuple(plan)


def _kind(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else None  # a real union (str | list) is left to msgspec
    if tp is bool or tp is int or tp is float:
        return tp.__name__
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    return None


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else value
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INT_STR.fullmatch(text):
            try:
                return int(text.split(".")[0])
            except ValueError:  # past Python's 4,300 digits: left for msgspec to refuse (a 400, not a 500)
                return value
    return value


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.isascii():
        try:
            return float(value)
        except ValueError:
            return value
    return value


_CONVERT = {"bool": _to_bool, "int": _to_int, "float": _to_float}
