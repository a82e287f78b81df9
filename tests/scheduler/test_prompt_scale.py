"""The shell's prompt-token estimate scaled by what the engines counted (`SchedulerCore.prompt_scale`)."""

from __future__ import annotations

import pytest

from proxy.scheduler import SchedulerCore, Usage, build_policy
from proxy.scheduler.types import RequestInfo


def test_the_prompt_scale_follows_the_engines_counts() -> None:
    """The shell's estimate (bytes / 4) is scaled by what the engines counted: admission sized new workflows
    1.9x over on the simulator's tokenizer (the fifth review)."""
    core = SchedulerCore(["r0", "r1"], build_policy("least-request", seed=0), lambda: 0.0)
    for n in range(200):
        (d,) = core.request_arrived(
            RequestInfo(f"q{n}", f"s{n}", 0.0, prompt_tokens=int(1_000 * core.prompt_scale))
        )
        core.request_finished(d.request_id, Usage(prompt_tokens=500, completion_tokens=5))
    assert 0.49 <= core.prompt_scale <= 0.51
    scale = core.prompt_scale
    pinned = RequestInfo("p", "s0", 0.0, prompt_tokens=10, pinned_replica="r0")  # a continued response
    core.request_arrived(pinned)
    core.request_finished("p", Usage(prompt_tokens=9_000, completion_tokens=5))
    core.request_arrived(RequestInfo("r", "s1", 0.0, prompt_tokens=500))
    core.request_finished("r", None)  # refused: no count
    (d,) = core.request_arrived(RequestInfo("x", "s2", 0.0, prompt_tokens=500))
    core.request_finished("x", Usage(prompt_tokens=500_000, completion_tokens=5))  # one call moves it little
    assert core.prompt_scale == pytest.approx(scale * 4**0.05)
