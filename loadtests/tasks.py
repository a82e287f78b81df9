"""The task model shared by every agent client: the HTTP one (`loadtests.agent_client`) and the discrete-event
one (`loadtests.des.client`). An `AgentTask` is what a workload generates; a `TaskRecord` with its
`CallRecord`s is what running it produced. Plain msgspec structs, no I/O.
"""

from __future__ import annotations

import msgspec


class Step(msgspec.Struct, frozen=True):
    """One LLM call and the tool call after it, in tokens: text is rendered only when run over HTTP."""

    output_tokens: int
    tool_name: str
    tool_time_s: float
    observation_tokens: int  # size of the tool's result, appended as a tool message


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

    @property
    def completion_time_s(self) -> float:
        return self.finished_s - self.started_s

    @property
    def failed(self) -> bool:
        return any(c.error is not None for c in self.calls)
