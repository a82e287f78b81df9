"""`webarena`: a browser agent (WebArena-like), parameters and defaults from WORKLOADS.md section 1.

Steps per task: mean 15-18, capped at 30. The prompt is a ~2.5k-token part shared by all tasks (instructions,
few-shot examples) plus an observation of 1k-1.9k tokens. Two context modes: `baseline` — the observation
replaces the previous one, so only the shared part is reusable — and `history` — the whole history is kept
and grows by 300-800 tokens a step. Output 50-384 tokens, median ~150. Browser action latency is log-normal,
p50 ~1 s, p95 ~4.5 s (so p90 ~3.2 s), with a long tail.
"""

from __future__ import annotations

import random
from typing import Literal

import msgspec

from loadtests.tasks import AgentTask, Step
from loadtests.workloads.distributions import LogNormal, Uniform

BROWSER_ACTIONS = ("click", "type", "scroll", "goto", "go_back", "hover", "press")


class WebArenaParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    context_mode: Literal["baseline", "history"] = "history"
    steps_per_task: LogNormal = LogNormal(15, 26, cap=30)  # mean ~16.5
    shared_prefix_tokens: int = 2500
    observation_tokens: Uniform = Uniform(1000, 1900)
    history_growth_tokens: Uniform = Uniform(300, 800)  # per step, history mode
    output_tokens: LogNormal = LogNormal(150, 300, cap=384)
    min_output_tokens: int = 50
    action_latency_s: LogNormal = LogNormal(1.0, 3.2, cap=120)
    agent_type: str = "browser-agent"


def webarena_task(
    rng: random.Random, session_id: str, p: WebArenaParams, *, tenant_id: str = "default"
) -> AgentTask:
    n = max(1, round(p.steps_per_task.draw(rng)))
    steps = []
    for _ in range(n):
        output = max(p.min_output_tokens, round(p.output_tokens.draw(rng)))
        growth = p.history_growth_tokens if p.context_mode == "history" else p.observation_tokens
        steps.append(
            Step(output, rng.choice(BROWSER_ACTIONS), p.action_latency_s.draw(rng), round(growth.draw(rng)))
        )
    return AgentTask(
        session_id=session_id,
        system_tokens=p.shared_prefix_tokens,
        task_tokens=round(p.observation_tokens.draw(rng)),
        steps=steps,
        tenant_id=tenant_id,
        agent_type=p.agent_type,
        seed=rng.randrange(2**31),
        replace_history=p.context_mode == "baseline",
    )


def webarena_tasks(n: int, *, seed: int = 0, params: WebArenaParams | None = None) -> list[AgentTask]:
    rng = random.Random(seed)
    p = params or WebArenaParams()
    return [webarena_task(rng, f"web-{seed}-{i}", p) for i in range(n)]
