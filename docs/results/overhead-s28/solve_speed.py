"""The remaining-work solve before and after the twenty-eighth session, on the same learned graphs.

`SAGA_PURE_PYTHON=1 python3 docs/results/overhead-s28/solve_speed.py` prints, per graph (seeded: 12 agents
of 1-6 tools learned over 20-200 tasks of up to 300 calls), its nodes, the time of `AgentGraph._solve` (the
exact solve) and of the value iteration it replaced (300 sweeps from zero, stopping once a sweep changes no
node's calls by 1e-3: the code before, kept here for the comparison), best of 5 each, and how far the value
iteration got: the largest relative error of its remaining calls against the exact ones.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for its test helpers

import predictor.graph
from predictor.graph import AgentGraph, _finite
from predictor.structs import GraphLimits
from tests.predictor.streams import learned_graph


def value_iteration(graph: AgentGraph, iterations: int = 300) -> dict[str, float]:
    """The remaining calls per node as `AgentGraph._solve` computed them before (its Gauss-Seidel sweeps)."""
    index = {key: i for i, key in enumerate(graph.nodes)}
    size = len(index)
    rows = []
    for i, node in enumerate(graph.nodes.values()):
        probs = graph.transitions(node)
        cont = 1.0 - graph.end_probability(node) if probs else 0.0
        edges = [
            (index.get(k, size), p, _finite(node.out[k].growth.mean()), _finite(node.out[k].output.mean()))
            for k, p in probs.items()
        ]
        rows.append((i, cont, edges))
    calls, new, out = [0.0] * (size + 1), [0.0] * (size + 1), [0.0] * (size + 1)
    for _ in range(iterations):
        delta = 0.0
        for i, cont, targets in rows:
            c = cont * sum([p * (1.0 + calls[j]) for j, p, _, _ in targets])
            n = cont * sum([p * (g + new[j]) for j, p, g, _ in targets])
            o = cont * sum([p * (y + out[j]) for j, p, _, y in targets])
            delta = max(delta, abs(c - calls[i]))
            calls[i], new[i], out[i] = c, n, o
        if delta < 1e-3:
            break
    return {key: calls[i] for key, i in index.items()}


def best_of(fn: object, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    if not predictor.graph.__file__.endswith(".py"):  # the sweeps below are interpreted: like with like
        sys.exit("run with SAGA_PURE_PYTHON=1: a compiled solve against interpreted sweeps is no comparison")
    rng = random.Random(9)
    print(f"{'nodes':>5} {'exact us':>9} {'sweeps us':>10} {'ratio':>6} {'sweeps error':>13}")
    for trial in range(12):
        states = ["bash", "edit", "search", "answer", "call", "think"] if trial % 3 else ["call"]
        limits = GraphLimits(max_nodes=8 + 4 * trial, max_edges_per_node=3 + trial)
        graph = learned_graph(rng, states, rng.randrange(20, 200), 300, limits)
        exact_s = best_of(graph._solve)
        sweeps_s = best_of(lambda graph=graph: value_iteration(graph))
        exact = graph._solve()
        swept = value_iteration(graph)
        error = max(abs(swept[k] - w.calls) / max(1.0, w.calls) for k, w in exact.items())
        print(
            f"{len(graph.nodes):>5} {exact_s * 1e6:>9.0f} {sweeps_s * 1e6:>10.0f} "
            f"{sweeps_s / exact_s:>5.0f}x {error:>12.1%}"
        )


if __name__ == "__main__":
    main()
