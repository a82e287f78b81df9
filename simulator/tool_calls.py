"""Simulated tool calls: what a vLLM replica started with `--enable-auto-tool-choice --tool-call-parser ...`
answers when a chat request carries `tools`.

Contract:
- `ToolSpec.parse(tools, tool_choice, xargs)` validates the request as vLLM does and raises `ToolsError`
  (a 400 naming the offending parameter) for: `tools` not a non-empty list, a tool that is not
  `{"type": "function", "function": {"name": <non-empty str>, "parameters": <object>?}}`, a `tool_choice`
  that is not "none" / "auto" / "required" / `{"type": "function", "function": {"name": ...}}`, a
  `tool_choice` without `tools`, or a named function that is not among the tools.
- `ToolSpec.decide(messages, seed)` is the simulated model's choice, deterministic in (request, seed):
  "none" never calls; "required" always calls one tool (picked by `seed`); a named choice always calls that
  function; "auto" (the default when tools are given) calls a tool while fewer than `k` assistant messages
  follow the last user message, then answers in text. `k` is `vllm_xargs.saga_sim_tool_turns` (default 1),
  so an agent loop sees: user -> tool call -> tool result -> answer.
- `arguments_for(schema, seed)` returns a value valid for the function's JSON schema: every required
  property, by type (string, number, integer, boolean, array, object, enum, const, anyOf/oneOf, local
  `$ref`), honouring min/max bounds and lengths, recursion cut at `MAX_DEPTH` (past it: the smallest value of
  the type). `pattern` and `format` other than a few common ones are not honoured.
- The call is the rendered output of the tokens the engine generated: `usage.completion_tokens` stays what
  the engine produced. A stream releases the call's name with the first token, then one piece of its
  `arguments` JSON per token, and the rest with the last token (`ToolCallStream`).
- `finish_reason` is "tool_calls" for "auto" and "required", "stop" for a named function (vLLM and OpenAI).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

MAX_DEPTH = 6
DEFAULT_TOOL_TURNS = 1
_WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "romeo", "sierra", "tango")
_ARG_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")


class ToolsError(Exception):
    """A request's `tools` or `tool_choice` is invalid: HTTP 400 naming `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class SimulatedToolCall(msgspec.Struct, frozen=True):
    id: str
    name: str
    arguments: str  # a JSON object, as OpenAI's `function.arguments`
    finish_reason: str  # "tool_calls", or "stop" for a named tool choice
    content: str | None = None  # vLLM: null beside an auto call, "" beside a required or named one


class ToolSpec(msgspec.Struct, frozen=True):
    functions: dict[str, dict[str, Any]]  # name -> parameters schema, in request order
    choice: str  # "none", "auto", "required" or "named"
    named: str | None = None
    tool_turns: int = DEFAULT_TOOL_TURNS

    @classmethod
    def parse(cls, tools: Any, tool_choice: Any, xargs: Mapping[str, Any] | None = None) -> ToolSpec | None:
        """The request's tool spec, None when it has no tools and no tool choice."""
        if tools is None:
            if tool_choice is None or tool_choice == "none":
                return None
            raise ToolsError("When using `tool_choice`, `tools` must be set.", "tool_choice")
        functions = _parse_tools(tools)
        turns = (xargs or {}).get("saga_sim_tool_turns", DEFAULT_TOOL_TURNS)
        if not isinstance(turns, int) or isinstance(turns, bool) or turns < 0:
            raise ToolsError(
                f"vllm_xargs.saga_sim_tool_turns must be a non-negative integer, got {turns!r}.",
                "vllm_xargs.saga_sim_tool_turns",
            )
        if tool_choice is None or tool_choice in ("none", "auto", "required"):
            return cls(functions, tool_choice or "auto", tool_turns=turns)
        if not isinstance(tool_choice, dict):
            raise ToolsError(
                f'Invalid value for `tool_choice`: {tool_choice!r}! Only named tools, "none", "auto" or '
                '"required" are supported.',
                "tool_choice",
            )
        function = tool_choice.get("function")
        usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
        if not isinstance(function, dict):
            raise ToolsError(
                f"Invalid value for `function`: `{function}` in `tool_choice`! {usage}",
                "tool_choice.function",
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ToolsError(
                f"Invalid `name` in `function`: `{name}` in `tool_choice`! {usage}",
                "tool_choice.function.name",
            )
        if name not in functions:
            raise ToolsError(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                "tool_choice",
            )
        return cls(functions, "named", named=name, tool_turns=turns)

    def decide(self, messages: Sequence[Mapping[str, Any]], seed: int) -> SimulatedToolCall | None:
        """The tool call the simulated model makes for this conversation, or None to answer in text."""
        if self.choice == "none":
            return None
        if self.choice == "auto" and _assistant_turns_since_user(messages) >= self.tool_turns:
            return None
        if self.named is not None:
            name = self.named
        else:
            names = list(self.functions)
            name = names[seed % len(names)]
        arguments = arguments_for(self.functions[name], seed)
        return SimulatedToolCall(
            id=f"chatcmpl-tool-{uuid.uuid4().hex[:16]}",  # vLLM's make_tool_call_id shape
            name=name,
            arguments=json.dumps(arguments),
            finish_reason="stop" if self.choice == "named" else "tool_calls",
            content=None if self.choice == "auto" else "",
        )


def _parse_tools(tools: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tools, list):
        raise ToolsError(f"`tools` must be a list of tools, got {type(tools).__name__}.", "tools")
    if not tools:
        raise ToolsError(
            "`tools` must not be an empty array. "
            "Either provide at least one tool or omit the field entirely.",
            "tools",
        )
    functions: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise ToolsError(f"{where} must be an object.", where)
        if tool.get("type", "function") != "function":
            raise ToolsError(f"{where}.type must be 'function', got {tool.get('type')!r}.", f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise ToolsError(f"{where}.function must be an object with a 'name'.", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ToolsError(f"{where}.function.name must be a non-empty string.", f"{where}.function.name")
        parameters = function.get("parameters", {})
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise ToolsError(
                f"{where}.function.parameters must be a JSON schema object, got {type(parameters).__name__}.",
                f"{where}.function.parameters",
            )
        functions[name] = parameters
    return functions


def _assistant_turns_since_user(messages: Sequence[Mapping[str, Any]]) -> int:
    turns = 0
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            break
        if role == "assistant":
            turns += 1
    return turns


# ---- arguments valid for a JSON schema ----------------------------------------------------------------


def arguments_for(schema: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A JSON object valid for a function's `parameters` schema, a pure function of (schema, seed)."""
    value = _value(schema, schema, _Seeds(seed), 0)
    return value if isinstance(value, dict) else {}


class _Seeds:
    """A deterministic stream of small integers (a 64-bit LCG; no global random state)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self, bound: int) -> int:
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (self.state >> 33) % max(1, bound)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(MAX_DEPTH):  # chains of $ref, bounded
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            return {}
        schema = target
    return schema


def _type_of(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), "null")
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _value(schema: Any, root: Mapping[str, Any], seeds: _Seeds, depth: int) -> Any:
    if not isinstance(schema, Mapping):
        return "value"
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[seeds.next(len(enum))]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            resolved = [_resolve(o, root) if isinstance(o, Mapping) else {} for o in options]
            concrete = [o for o in resolved if o.get("type") != "null"] or resolved
            merged = {k: v for k, v in schema.items() if k != key}
            return _value({**merged, **concrete[0]}, root, seeds, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, seeds, depth)
    if kind == "array":
        return _array(schema, root, seeds, depth)
    if kind == "integer":
        return _integer(schema, seeds)
    if kind == "number":
        return _number(schema, seeds)
    if kind == "boolean":
        return seeds.next(2) == 0
    if kind == "null":
        return None
    return _string(schema, seeds)


def _object(schema: Mapping[str, Any], root: Mapping[str, Any], seeds: _Seeds, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    if depth >= MAX_DEPTH:
        names = []  # bounded: a required property past the depth limit is left out
    return {name: _value(properties.get(name, {}), root, seeds, depth + 1) for name in names}


def _array(schema: Mapping[str, Any], root: Mapping[str, Any], seeds: _Seeds, depth: int) -> list[Any]:
    low = _int_bound(schema.get("minItems"), 0)
    high = _int_bound(schema.get("maxItems"), max(low, 2))
    count = 0 if depth >= MAX_DEPTH else min(high, max(low, 1))
    items = schema.get("items", {})
    out: list[Any] = []
    for _ in range(count):
        value = _value(items, root, seeds, depth + 1)
        if schema.get("uniqueItems") and value in out:
            continue  # may come out shorter than minItems for tiny enums; rare
        out.append(value)
    return out


def _int_bound(raw: Any, default: int) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else default


def _bounds(schema: Mapping[str, Any], default_low: float, default_high: float) -> tuple[float, float]:
    """[low, high] inside the schema's bounds; a missing side is the default, moved to keep the range."""
    low: float | None = None
    high: float | None = None
    if isinstance(schema.get("minimum"), int | float):
        low = float(schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = float(schema["exclusiveMinimum"]) + 1
    if isinstance(schema.get("maximum"), int | float):
        high = float(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = float(schema["exclusiveMaximum"]) - 1
    span = default_high - default_low
    if low is None:
        low = default_low if high is None or high >= default_low else high - span
    if high is None:
        high = max(default_high, low + span) if low > default_high else default_high
    return low, max(low, high)


def _integer(schema: Mapping[str, Any], seeds: _Seeds) -> int:
    low, high = _bounds(schema, 0, 100)
    lo, hi = int(-(-low // 1)), int(high // 1)  # ceil, floor
    return lo if hi <= lo else lo + seeds.next(hi - lo + 1)


def _number(schema: Mapping[str, Any], seeds: _Seeds) -> float:
    low, high = _bounds(schema, 0.0, 100.0)
    if high <= low:
        return low
    return low + (high - low) * seeds.next(1000) / 1000


_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "agent@example.com",
    "uri": "https://example.com/saga",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: Mapping[str, Any], seeds: _Seeds) -> str:
    fixed = _FORMATS.get(str(schema.get("format")))
    if fixed is not None:
        return fixed
    text = " ".join(_WORDS[seeds.next(len(_WORDS))] for _ in range(2))
    low = _int_bound(schema.get("minLength"), 0)
    high = _int_bound(schema.get("maxLength"), max(low, len(text)))
    while len(text) < low:
        text += " " + _WORDS[seeds.next(len(_WORDS))]
    return text[: max(low, min(high, len(text)))]


# ---- streaming ----------------------------------------------------------------------------------------


class ToolCallStream:
    """Turns the engine's token outputs into `delta.tool_calls` entries (OpenAI/vLLM stream shape)."""

    def __init__(self, call: SimulatedToolCall) -> None:
        self.call = call
        pieces = _ARG_PIECE_RE.findall(call.arguments)
        self._pieces = pieces if "".join(pieces) == call.arguments else [call.arguments]
        self._sent = 0
        self._started = False

    def advance(self, num_tokens: int, finished: bool) -> list[dict[str, Any]]:
        """The tool-call deltas for `num_tokens` more tokens; on `finished`, everything not yet sent."""
        deltas: list[dict[str, Any]] = []
        if not self._started and (num_tokens or finished):
            self._started = True
            num_tokens -= 1
            first = {"index": 0, "id": self.call.id, "type": "function", "function": {"name": self.call.name}}
            deltas.append(first)
        end = len(self._pieces) if finished else min(len(self._pieces), self._sent + max(0, num_tokens))
        if end > self._sent:
            text = "".join(self._pieces[self._sent : end])
            deltas.append({"index": 0, "function": {"arguments": text}})
            self._sent = end
        return deltas
