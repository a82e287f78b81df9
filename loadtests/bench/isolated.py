"""How long an agent task would take running alone on one replica: the reference for SLOs and slowdowns.

Contract: `isolated_task_time_s(task, profile)` is a pure function of the task's token counts and tool times
and the profile's cost model (simulator/cost_model.py, the same step-time function the simulated engine
uses). Alone, a task never waits in a queue and never loses its cache: each call prefills only what the
previous call did not leave in full cached blocks (the shared system prompt counts as cached, as it is in a
warm fleet), in chunks of the profile's token budget, then decodes its output one token per step. A compacting
step leaves the first `compact_to_tokens` of the context cached (they are a prefix of what ran before).
A step that spawns subagents waits for the longer of its tool time and its slowest subagent's isolated time
(the subagents side by side, none slowing another: a lower bound, as the rest is).
"""

from __future__ import annotations

from loadtests.tasks import AgentTask
from simulator.cost_model import Profile, chunked_prefill_s, step_time_s


def _call_times_s(profile: Profile, prompt: int, cached: int, output: int) -> tuple[float, float]:
    """(prefill, decode) seconds of one call alone."""
    prefill = chunked_prefill_s(profile, prompt, cached)  # its last chunk also samples the first output token
    decode = 0.0
    steps = output - 1
    if steps > 0:  # decode steps: time is linear in context, so n steps cost n x the mean of first and last
        first = step_time_s(profile, num_tokens=1, decode_context_tokens=prompt + 1)
        last = step_time_s(profile, num_tokens=1, decode_context_tokens=prompt + steps)
        decode = steps * (first + last) / 2
    return prefill, decode


def isolated_time_split_s(task: AgentTask, profile: Profile) -> tuple[float, float, float]:
    """The isolated task time in parts: (prefill, decode, tool and think) seconds."""
    bs = profile.block_size
    cached = task.system_tokens // bs * bs
    prefill = decode = 0.0
    for step, context in task.call_prompts():
        p, d = _call_times_s(profile, context, min(cached, context - 1), step.output_tokens)
        prefill += p
        decode += d
        if task.replace_history:
            cached = task.system_tokens // bs * bs
        else:  # what this call leaves in full cached blocks (a compacted prefix is still cached)
            after = context + step.output_tokens
            if step.compact_to_tokens is not None:
                after = min(after, step.compact_to_tokens)
            cached = after // bs * bs
    return prefill, decode, _waits_s(task, profile)


def _waits_s(task: AgentTask, profile: Profile) -> float:
    last = len(task.steps) - 1
    return sum(
        max([step.tool_time_s, *(isolated_task_time_s(sub, profile) for sub in step.subagents)])
        if step.subagents and k < last  # (the last call spawns none: the task ends with its answer)
        else step.tool_time_s
        for k, step in enumerate(task.steps)
    )


def isolated_task_time_s(task: AgentTask, profile: Profile) -> float:
    return sum(isolated_time_split_s(task, profile))
