"""`swe`: a coding agent (SWE-bench-like), parameters and defaults from WORKLOADS.md section 1.

Calls per task are log-normal (median ~30, mean ~37, capped at 150). The first prompt is 2.5k-5k tokens, of
which a 1.5k-2k system/tool-definition part is shared by every task of the agent type. Each step appends the
model's output and a tool observation (log-normal, median ~800, p90 ~4k, capped); output per step median ~200,
p90 ~600. Tool time is a mixture: editor operations, light shell, running code or one test, installs or full
test suites, and rare timeouts.
"""

from __future__ import annotations

import random

import msgspec

from loadtests.tasks import AgentTask
from loadtests.workloads.distributions import LogNormal, ToolKind, Uniform, draw_tool
from loadtests.workloads.growing import growing_task


class SweParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    calls_per_task: LogNormal = LogNormal.from_median_mean(30, 37, cap=150)
    shared_prefix_tokens: int = 1750  # 1.5k-2k: system prompt and tool definitions
    first_prompt_tokens: Uniform = Uniform(2500, 5000)  # shared part included
    new_input_tokens: LogNormal = LogNormal(800, 4000, cap=12500)  # cap: 10k-15k
    output_tokens: LogNormal = LogNormal(200, 600, cap=4096)
    max_context_tokens: int = 120_000  # a task ends when its context would outgrow the model
    tools: list[ToolKind] = msgspec.field(
        default_factory=lambda: [
            ToolKind("str_replace_editor", 0.50, Uniform(0.001, 0.005)),
            ToolKind("bash", 0.20, LogNormal(0.2, 0.4)),
            ToolKind("python", 0.22, LogNormal.from_median_mean(0.5, 2.0, cap=60)),
            ToolKind("run_test_suite", 0.05, LogNormal(35, 90, cap=600)),  # median 10-60 s
            ToolKind("timeout", 0.005, Uniform(60, 120)),
        ]
    )
    agent_type: str = "swe-agent"


def swe_task(rng: random.Random, session_id: str, p: SweParams, *, tenant_id: str = "default") -> AgentTask:
    return growing_task(
        rng,
        session_id,
        calls_per_task=p.calls_per_task,
        shared_prefix_tokens=p.shared_prefix_tokens,
        first_prompt_tokens=p.first_prompt_tokens,
        output_tokens=p.output_tokens,
        new_input_tokens=p.new_input_tokens,
        max_context_tokens=p.max_context_tokens,
        draw_tool=lambda r: draw_tool(r, p.tools),
        agent_type=p.agent_type,
        tenant_id=tenant_id,
    )


def swe_tasks(n: int, *, seed: int = 0, params: SweParams | None = None) -> list[AgentTask]:
    rng = random.Random(seed)
    p = params or SweParams()
    return [swe_task(rng, f"swe-{seed}-{i}", p) for i in range(n)]
