"""`trace-agent`: sessions shaped like real mixed agentic traffic (WORKLOADS.md section 1, "Mixed real
agentic traffic", from data/inference-perf/agentic-trace-replay.config.json).

Calls per session log-normal with mean 21.9 and sd 23.4 (max 300); output per call mean 659 (heavy tail);
gap between calls mean 13 s with a long tail; input per call mean ~49k tokens, made of a large first prompt
(tool definitions, files) that then grows by each answer and tool result. Contexts are capped at the model's
window, where a real agent would compact its history.
"""

from __future__ import annotations

import random

import msgspec

from loadtests.tasks import AgentTask
from loadtests.workloads.distributions import LogNormal
from loadtests.workloads.growing import growing_task

TRACE_TOOLS = ("read", "edit", "bash", "grep", "web_fetch", "task")


class TraceAgentParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    calls_per_task: LogNormal = LogNormal.from_mean_sd(21.9, 23.4, cap=300)
    shared_prefix_tokens: int = 6000  # tool definitions and system prompt of the agent type
    first_prompt_tokens: LogNormal = LogNormal(20_000, 60_000, cap=100_000)
    new_input_tokens: LogNormal = LogNormal(900, 5000, cap=20_000)
    output_tokens: LogNormal = LogNormal.from_mean_sd(659, 1500, cap=8192)
    gap_s: LogNormal = LogNormal.from_median_mean(1.0, 13.0, cap=600)
    max_context_tokens: int = 128_000
    agent_type: str = "trace-agent"


def trace_agent_task(
    rng: random.Random, session_id: str, p: TraceAgentParams, *, tenant_id: str = "default"
) -> AgentTask:
    return growing_task(
        rng,
        session_id,
        calls_per_task=p.calls_per_task,
        shared_prefix_tokens=p.shared_prefix_tokens,
        first_prompt_tokens=p.first_prompt_tokens,
        output_tokens=p.output_tokens,
        new_input_tokens=p.new_input_tokens,
        max_context_tokens=p.max_context_tokens,
        draw_tool=lambda r: (r.choice(TRACE_TOOLS), p.gap_s.draw(r)),
        agent_type=p.agent_type,
        tenant_id=tenant_id,
    )
