"""Per-session records of the scheduler core (`SessionRecord`) and of admission (`WorkflowRecord`).

One of each lives per session the core knows: with calls that carry no session id, one more every two calls,
kept for `single_call_session_ttl_s` (120 s) — hundreds of thousands at 10k calls/s. Every field is a number
or a string, so a record can be in no reference cycle: they are msgspec Structs with `gc=False`, which the
cyclic GC never tracks (a compiled module's native classes always are, and a full collection would walk
every one of them). Structs live in a pure-Python module: mypyc drops a Struct's class keywords
(docs/development.md).
"""

from __future__ import annotations

import msgspec


class SessionRecord(msgspec.Struct, gc=False):
    """The core's view of one session."""

    last_seen: float
    in_flight: int = 0
    calls: int = 0
    started: float = 0.0
    tenant_id: str = "default"
    seq: int = 0  # order of arrival among workflows (older = lower)


class WorkflowRecord(msgspec.Struct, gc=False):
    """Admission's view of one admitted workflow."""

    replica_id: str
    agent_type: str
    context: int  # tokens: last prompt (+ its answer once finished)
    footprint: int
    reserved: int = 0  # what this workflow holds in its replica's reservation now
    in_flight: int = 0
    quiet_at: float | None = None  # when the reservation lapses (between calls)
