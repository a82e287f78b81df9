"""Load shapes for the agent locustfile, as pure functions of elapsed time (Locust's `LoadTestShape.tick`).

Contract: `plan(shape, elapsed_s, users=U, spawn_rate=R, run_time_s=T)` returns `(user_count, spawn_rate)`,
or `(user_count, spawn_rate, user_class_names)` when the shape chooses which user classes run, or None once
the run is over (`elapsed_s >= T`). U, R and T are Locust's own `-u`, `-r` and `-t`, so a shape is sized like
any run:
- `ramp`: users grow linearly from 1 to U over the first half of the run, then hold at U.
- `step`: U in `STEPS` equal steps, each held for T / STEPS: a capacity search by steps.
- `burst` (multi-tenant): the background user classes run U / 2 users throughout; in the middle third of
  the run, `BURST_CLASS` users (their own tenant) join until there are U users, then leave: what a second
  tenant's burst does to the first tenant's task completion times. The middle third's tick names the
  burst's class alone: Locust adds users only of the classes a tick names (listing the background's too
  spread the new users over them by weight: 2 burst users of 4 with -u 8, the background grown to 6) and
  stops the users it added last first, so the background keeps its U / 2 throughout.
"""

from __future__ import annotations

import math

STEPS = 4
BURST_CLASS = "BurstTenantAgent"

Tick = tuple[int, float] | tuple[int, float, list[str]]


def plan(
    shape: str,
    elapsed_s: float,
    *,
    users: int,
    spawn_rate: float,
    run_time_s: float,
    background: list[str] | None = None,
) -> Tick | None:
    """The shape's target at `elapsed_s`; `background`: the user class names the burst runs beside."""
    if elapsed_s >= run_time_s:
        return None
    users = max(1, users)
    if shape == "ramp":
        half = run_time_s / 2
        return max(1, min(users, math.ceil(users * elapsed_s / half))), spawn_rate
    if shape == "step":
        step = min(STEPS, 1 + int(elapsed_s // (run_time_s / STEPS)))
        return max(1, math.ceil(users * step / STEPS)), spawn_rate
    if shape == "burst":
        base = max(1, users // 2)
        classes = list(background or [])
        if run_time_s / 3 <= elapsed_s < 2 * run_time_s / 3:
            return max(users, base + 1), spawn_rate, [BURST_CLASS]
        return base, spawn_rate, classes
    raise ValueError(f"unknown shape {shape!r}")
