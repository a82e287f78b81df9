"""Hand-made call streams with known structure, fed to a Predictor in time order."""

from __future__ import annotations

import random
from collections.abc import Callable

from predictor import Predictor
from predictor.graph import START, AgentGraph, node_key
from predictor.structs import GraphLimits

# A toy agent: after `search` it calls `read` (70%) or `search` again (30%); after `read`, `edit` (100%);
# after `edit`, `search` (60%) or it answers the person (40%, finish_reason stop). Tool gaps are log-normal
# with these medians; a person thinks for minutes.
TRANSITIONS: dict[str, list[tuple[str, float]]] = {
    "search": [("read", 0.7), ("search", 0.3)],
    "read": [("edit", 1.0)],
    "edit": [("search", 0.6), ("answer", 0.4)],
    "answer": [("search", 1.0)],
}
GAP_MEDIAN_S = {"search": 0.5, "read": 0.05, "edit": 2.0, "answer": 120.0}
GAP_SIGMA = 0.5


def draw_gap(rng: random.Random, state: str) -> float:
    return rng.lognormvariate(0.0, GAP_SIGMA) * GAP_MEDIAN_S[state]


def feed_sessions(
    predictor: Predictor,
    n_sessions: int,
    *,
    seed: int = 0,
    agent_type: str = "toy",
    end_after_answers: int = 2,
    gap: Callable[[random.Random, str], float] = draw_gap,
    explicit_end: bool = True,
) -> float:
    """Runs sessions one after another (each to its end); returns the time reached."""
    rng = random.Random(seed)
    now = 0.0
    for i in range(n_sessions):
        sid = f"{agent_type}-{seed}-{i}"
        state, prompt, answers = "search", 1000, 0
        while True:
            predictor.call_arrived(sid, agent_type, now, prompt)
            output = 100
            now += 1.0
            finish_reason, tools = ("stop", ()) if state == "answer" else ("tool_calls", (state,))
            predictor.call_finished(sid, now, prompt, output, finish_reason, tools)
            if state == "answer":
                answers += 1
                if answers >= end_after_answers:
                    break
            now += gap(rng, state)
            nxt, weights = zip(*TRANSITIONS[state], strict=True)
            state = rng.choices(nxt, weights)[0]
            prompt += output + 200
        if explicit_end:
            predictor.session_ended(sid)
        now += 1.0
    return now


def learned_graph(
    rng: random.Random, states: list[str], tasks: int, longest: int, limits: GraphLimits
) -> AgentGraph:
    """An agent graph learned from `tasks` random tasks of 1 to `longest` - 1 calls, each call's tool drawn
    from `states` (gaps, growth and output uniform); the remaining-work solve's tests and its speed script
    (docs/results/overhead-s28/solve_speed.py) learn theirs here."""
    graph = AgentGraph("a", limits)
    for _ in range(tasks):
        prev, calls = START, 0
        for _ in range(rng.randrange(1, longest)):
            calls += 1
            dst = node_key(rng.choice(states), calls)
            graph.observe_transition(
                prev, dst, gap_s=rng.random() * 10, growth=rng.random() * 3000, output=rng.random() * 500
            )
            prev = graph.node(dst).key
        graph.observe_end(prev, calls=calls, peak_prompt=calls * 1000)
    return graph
