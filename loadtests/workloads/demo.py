"""The demo workload: a few dozen coding-agent-like tasks, small enough to run over HTTP in seconds.

Each task shares a system prompt with all others, then alternates LLM calls with tool calls whose results
grow the context (shapes from WORKLOADS.md's coding agent, scaled down in steps). The full generators with
every WORKLOADS.md parameter live beside this one.
"""

from __future__ import annotations

import math
import random

from loadtests.tasks import AgentTask, Step

TOOLS = ("edit_file", "run_shell", "run_tests", "read_file")


def _lognormal(rng: random.Random, median: float, p90: float) -> float:
    sigma = math.log(p90 / median) / 1.2816
    return rng.lognormvariate(math.log(median), sigma)


def demo_task(
    rng: random.Random,
    session_id: str,
    steps: int = 12,
    *,
    tenant_id: str = "default",
    seed: int = 0,
    system_tokens: int = 2000,
    task_tokens: int = 1000,
    observation_median: int = 1500,
    output_median: int = 120,
    tool_median_s: float = 0.5,
) -> AgentTask:
    """One demo task, drawn from `rng`."""
    task_steps = [
        Step(
            output_tokens=max(16, int(_lognormal(rng, output_median, output_median * 2.5))),
            tool_name=rng.choice(TOOLS),
            tool_time_s=min(_lognormal(rng, tool_median_s, tool_median_s * 6), 30.0),
            observation_tokens=min(int(_lognormal(rng, observation_median, observation_median * 4)), 8000),
        )
        for _ in range(steps)
    ]
    return AgentTask(
        session_id=session_id,
        system_tokens=system_tokens,
        task_tokens=task_tokens,
        steps=task_steps,
        agent_type="coder",
        seed=seed,
        tenant_id=tenant_id,
    )


def demo_tasks(sessions: int = 32, steps: int = 10, *, seed: int = 0) -> list[AgentTask]:
    """The demo's tasks: `sessions` tasks of `steps` calls each (`saga demo`; `--workload demo` elsewhere)."""
    rng = random.Random(seed)
    return [demo_task(rng, f"demo-{seed}-{i}", steps, seed=seed) for i in range(sessions)]
