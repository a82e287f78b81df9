"""The task model shared by every agent client: the HTTP one (`loadtests.agent_client`) and the discrete-event
one (`loadtests.des.client`). An `AgentTask` is what a workload generates; a `TaskRecord` with its
`CallRecord`s is what running it produced. Plain msgspec structs, no I/O.

A step may compact the conversation (`compact_to_tokens`): after its tool, the next call's prompt is the
first that many tokens of the context so far plus the tool's result, as a coding assistant compacting a
long context does (docs/trace-format.md). A step may name the person's turn it serves (`turn`): the calls
of one turn answer one request, and the wait after a turn's last call is the person's think time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import msgspec


class Step(msgspec.Struct, frozen=True):
    """One LLM call and the tool call after it, in tokens: text is rendered only when run over HTTP."""

    output_tokens: int
    tool_name: str
    tool_time_s: float
    observation_tokens: int  # size of the tool's result, appended as a tool message
    # Compaction before the next call: keep only the conversation's first N tokens, then the tool's result.
    compact_to_tokens: int | None = None
    turn: int | None = None  # the person's turn this call serves, where a trace marks turns
    # Subagents this call spawns (a coding agent's Task tool): they start as its answer ends and run in
    # parallel; the next call waits for the tool time and for every one of them to end. Run in the
    # discrete-event cluster only.
    subagents: tuple[AgentTask, ...] = ()


class AgentTask(msgspec.Struct, frozen=True):
    """A workflow. Tasks of one agent type share a system prompt (`system_tokens` long); the user prompt
    (`task_tokens`) is the task's own."""

    session_id: str
    system_tokens: int
    task_tokens: int
    steps: list[Step]
    tenant_id: str = "default"
    agent_type: str = "default"
    seed: int = 0  # what the task's text is rendered from
    # Browser agents without history: each observation replaces the conversation after the system prompt.
    replace_history: bool = False
    slo_class: str = "standard"  # a key into the harness's SLO targets (multi-tenant mixes)
    # When the task starts, in workload seconds from the run's start (trace replay, open loop); None: as soon
    # as a closed-loop slot is free.
    arrival_s: float | None = None
    # A subagent's task: the session of the task that spawned it. `merged`: its calls are sent under that
    # session's id, as a proxy that does not tell subagents apart sees them (for comparisons).
    parent_session: str = ""
    merged: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the task and field of a value no run could honour (a NaN arrival or
        tool time would stall a virtual clock forever)."""
        where = f"task {self.session_id!r}"
        if self.arrival_s is not None and not 0.0 <= self.arrival_s < math.inf:
            raise ValueError(f"{where}: arrival_s must be finite and >= 0, got {self.arrival_s}")
        if not self.steps:  # (a run indexed its first call and stopped with an IndexError)
            raise ValueError(f"{where}: a task needs at least one step (LLM call)")
        for k, step in enumerate(self.steps):
            if not 0.0 <= step.tool_time_s < math.inf:
                raise ValueError(
                    f"{where} step {k}: tool_time_s must be finite and >= 0, got {step.tool_time_s}"
                )
            if step.compact_to_tokens is not None and step.compact_to_tokens < 0:
                raise ValueError(f"{where} step {k}: compact_to_tokens must be >= 0")
            for sub in step.subagents:
                sub.validate()

    def and_subagents(self) -> Iterator[AgentTask]:
        """This task, then every subagent task its steps spawn (theirs included), in order."""
        yield self
        for step in self.steps:
            for sub in step.subagents:
                yield from sub.and_subagents()

    @property
    def wait_s(self) -> float:
        """The task's own client-side waits: every tool (or think) time after its calls."""
        return sum(s.tool_time_s for s in self.steps)

    def call_prompts(self) -> Iterator[tuple[Step, int]]:
        """Each step with the prompt tokens of its call, as the clients build them: the conversation so far
        (or, with `replace_history`, the system prompt and the last observation), compacted where a step
        says so."""
        context = self.system_tokens + self.task_tokens
        for step in self.steps:
            yield step, context
            if self.replace_history:
                context = self.system_tokens + step.observation_tokens
            else:
                context += step.output_tokens
                if step.compact_to_tokens is not None:
                    context = min(context, step.compact_to_tokens)
                context += step.observation_tokens


class CallRecord(msgspec.Struct):
    step: int
    started_s: float
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    replica: str = ""
    error: str | None = None
    # What kind of failure `error` is: "http" (an error status with a body), "stream_error" (an error event in
    # a stream), "disconnected" (the connection dropped, or a stream ended without its end event: no answer),
    # "timeout" (no complete answer within the client's limit), "bad_answer" (unparseable).
    error_kind: str | None = None
    status: int = 0  # the answer's HTTP status; 0 when none came
    # From sending the call to the engine first scheduling it (the proxy's queue and the engine's); known
    # in the discrete-event cluster only.
    queue_s: float | None = None


class TaskRecord(msgspec.Struct):
    session_id: str
    tenant_id: str
    agent_type: str
    started_s: float
    finished_s: float = 0.0
    calls: list[CallRecord] = msgspec.field(default_factory=list)
    subagents: list[TaskRecord] = msgspec.field(default_factory=list)  # the subagents it spawned, in order

    def and_subagents(self) -> Iterator[TaskRecord]:
        """This record, then its subagents' (theirs included), in the order they were spawned."""
        yield self
        for sub in self.subagents:
            yield from sub.and_subagents()

    @property
    def completion_time_s(self) -> float:
        return self.finished_s - self.started_s

    @property
    def failed(self) -> bool:
        return any(c.error is not None for c in self.calls) or any(s.failed for s in self.subagents)
