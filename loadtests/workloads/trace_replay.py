"""Trace replay: agent sessions from a CSV with one row per LLM call (docs/trace-format.md).

Columns: `session_id, arrival_time, round_idx, prefix_len, input_len, output_len, tool_wait_after_ms`, and
optionally `tenant, agent_type, tool_name, turn`. Round 0 starts at `arrival_time` (seconds); each later round
starts `tool_wait_after_ms` after the previous round's answer ends. Round 0's `prefix_len` is the part shared
by the agent type (system prompt) and its `input_len` the task's own prompt; round r > 0 re-sends the context
so far (every prompt and answer before it) and appends `input_len` new tokens (the tool result), unless its
`prefix_len` is smaller than that context: then it is a compaction, and the prompt is the context's first
`prefix_len` tokens plus the new input (an empty `prefix_len` means the whole context). `turn`, where given,
marks the person's turn each round serves (per-turn latency is reported for such traces).

Contract: `load_trace` returns one task per session, in order of first arrival, and raises ValueError naming
the line of any malformed row: a missing or non-numeric value, NaN or infinity in any numeric column, a
negative arrival, length or wait; and it refuses a trace with no rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from loadtests.tasks import AgentTask, Step

REQUIRED = ("session_id", "arrival_time", "round_idx", "prefix_len", "input_len", "output_len")


def _number(
    raw: dict[str, str | None], column: str, line: int, *, integer: bool, default: str | None
) -> float:
    text = (raw.get(column) or "").strip() or default
    if text is None:
        raise ValueError(f"trace line {line}: {column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"trace line {line}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"trace line {line}: {column} must be finite, got {text!r}")
    if value < 0:
        raise ValueError(f"trace line {line}: {column} must be >= 0, got {text!r}")
    if integer and value != int(value):
        raise ValueError(f"trace line {line}: {column} must be a whole number, got {text!r}")
    return value


class _Row:
    __slots__ = (
        "arrival",
        "input_len",
        "line",
        "output_len",
        "prefix_len",
        "round",
        "tool",
        "turn",
        "wait_s",
    )

    def __init__(self, raw: dict[str, str | None], line: int) -> None:
        self.line = line
        self.arrival = _number(raw, "arrival_time", line, integer=False, default="0")
        self.round = int(_number(raw, "round_idx", line, integer=True, default=None))
        # Empty prefix_len after round 0: the whole context so far (no compaction).
        self.prefix_len: int | None = None
        if self.round == 0 or (raw.get("prefix_len") or "").strip():
            self.prefix_len = int(_number(raw, "prefix_len", line, integer=True, default=None))
        self.input_len = int(_number(raw, "input_len", line, integer=True, default=None))
        self.output_len = int(_number(raw, "output_len", line, integer=True, default=None))
        self.wait_s = _number(raw, "tool_wait_after_ms", line, integer=False, default="0") / 1000.0
        if self.output_len < 1:
            raise ValueError(f"trace line {line}: output_len must be >= 1")
        has_turn = (raw.get("turn") or "").strip()
        self.turn = int(_number(raw, "turn", line, integer=True, default=None)) if has_turn else None
        self.tool = raw.get("tool_name") or "tool"


def _steps(rows: list[_Row]) -> list[Step]:
    """Step k is call k and the tool after it; call k+1's new input is the tool's result, and call k+1's
    `prefix_len` below the context so far compacts the conversation before it."""
    steps = []
    first = rows[0]
    context = (first.prefix_len or 0) + max(1, first.input_len)  # call 0's prompt
    for k, row in enumerate(rows):
        context += row.output_len  # the context so far, once call k has answered
        nxt = rows[k + 1] if k + 1 < len(rows) else None
        compact_to = None
        if nxt is not None and nxt.prefix_len is not None and nxt.prefix_len < context:
            compact_to = context = nxt.prefix_len
        observation = nxt.input_len if nxt is not None else 0
        context += observation
        steps.append(Step(row.output_len, row.tool, row.wait_s, observation, compact_to, row.turn))
    return steps


def parse_trace(lines: Iterable[str]) -> list[AgentTask]:
    reader = csv.DictReader(lines, skipinitialspace=True)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"trace is missing columns: {', '.join(missing)}")
    sessions: dict[str, list[_Row]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            raise ValueError(f"trace line {line}: more fields than the header has columns")
        sid = raw["session_id"]
        if not sid:
            raise ValueError(f"trace line {line}: empty session_id")
        sessions.setdefault(sid, []).append(_Row(raw, line))
        meta.setdefault(sid, (raw.get("tenant") or "default", raw.get("agent_type") or "default"))
    if not sessions:
        raise ValueError("trace has a header but no rows: nothing to replay")
    tasks = []
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: r.round)
        if [r.round for r in rows] != list(range(len(rows))):
            raise ValueError(f"trace session {sid!r}: rounds must be 0..{len(rows) - 1} without gaps")
        turns = [r.turn for r in rows]
        if any(t is None for t in turns) and any(t is not None for t in turns):
            raise ValueError(f"trace session {sid!r}: give `turn` on every round or on none")
        if turns != sorted(turns, key=lambda t: t or 0):
            raise ValueError(f"trace session {sid!r}: `turn` must not decrease from one round to the next")
        first = rows[0]
        tenant, agent_type = meta[sid]
        tasks.append(
            AgentTask(
                session_id=sid,
                system_tokens=first.prefix_len or 0,
                task_tokens=max(1, first.input_len),
                steps=_steps(rows),
                tenant_id=tenant,
                agent_type=agent_type,
                arrival_s=first.arrival,
            )
        )
    tasks.sort(key=lambda t: (t.arrival_s or 0.0, t.session_id))
    return tasks


def load_trace(path: str | Path) -> list[AgentTask]:
    with open(path, newline="") as f:
        return parse_trace(f)
