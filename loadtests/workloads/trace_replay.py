"""Trace replay: agent sessions from a CSV with one row per LLM call (WORKLOADS.md, "Trace replay format").

Columns: `session_id, arrival_time, round_idx, prefix_len, input_len, output_len, tool_wait_after_ms`, and
optionally `tenant, agent_type, tool_name`. Round 0 starts at `arrival_time` (seconds); each later round
starts `tool_wait_after_ms` after the previous round's answer ends. Round 0's `prefix_len` is the part shared
by the agent type (system prompt) and its `input_len` the task's own prompt; round r > 0 re-sends everything
before it and appends `input_len` new tokens (the tool result). Contract: `load_trace` returns one task per
session, in order of first arrival, and raises ValueError naming the line of any malformed row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from loadtests.tasks import AgentTask, Step

REQUIRED = ("session_id", "arrival_time", "round_idx", "prefix_len", "input_len", "output_len")


class _Row:
    __slots__ = ("arrival", "input_len", "line", "output_len", "prefix_len", "round", "tool", "wait_s")

    def __init__(self, raw: dict[str, str], line: int) -> None:
        self.line = line
        try:
            self.arrival = float(raw["arrival_time"] or 0)
            self.round = int(raw["round_idx"])
            self.prefix_len = int(raw["prefix_len"])
            self.input_len = int(raw["input_len"])
            self.output_len = int(raw["output_len"])
            self.wait_s = float(raw.get("tool_wait_after_ms") or 0) / 1000.0
        except (TypeError, ValueError) as e:
            raise ValueError(f"trace line {line}: {e}") from None
        if min(self.prefix_len, self.input_len) < 0 or self.output_len < 1 or self.wait_s < 0:
            raise ValueError(f"trace line {line}: lengths must be >= 0, output_len >= 1, waits >= 0")
        self.tool = raw.get("tool_name") or "tool"


def parse_trace(lines: Iterable[str]) -> list[AgentTask]:
    reader = csv.DictReader(lines, skipinitialspace=True)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"trace is missing columns: {', '.join(missing)}")
    sessions: dict[str, list[_Row]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for line, raw in enumerate(reader, start=2):
        sid = raw["session_id"]
        if not sid:
            raise ValueError(f"trace line {line}: empty session_id")
        sessions.setdefault(sid, []).append(_Row(raw, line))
        meta.setdefault(sid, (raw.get("tenant") or "default", raw.get("agent_type") or "default"))
    tasks = []
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: r.round)
        if [r.round for r in rows] != list(range(len(rows))):
            raise ValueError(f"trace session {sid!r}: rounds must be 0..{len(rows) - 1} without gaps")
        first = rows[0]
        # Step k is call k and the tool after it; the tool's result is call k+1's new input.
        steps = [
            Step(r.output_len, r.tool, r.wait_s, rows[k + 1].input_len if k + 1 < len(rows) else 0)
            for k, r in enumerate(rows)
        ]
        tenant, agent_type = meta[sid]
        tasks.append(
            AgentTask(
                session_id=sid,
                system_tokens=first.prefix_len,
                task_tokens=max(1, first.input_len),
                steps=steps,
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
