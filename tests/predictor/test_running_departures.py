"""A node's departures read from its running total equal the sum over its edges, bit for bit, and the
per-state node lists equal a walk over the graph (round 7 of docs/results/core-cost.md)."""

from __future__ import annotations

import random

from predictor.graph import _EXACT_BELOW, START, AgentGraph, Node, node_key
from predictor.structs import GraphLimits


def _summed(node: Node) -> float:
    """The edges' counts added left to right (Python 3.12's sum() compensates, so it is not the oracle)."""
    total = 0.0
    for edge in node.out.values():
        total += edge.count
    return total


def _random_graph(seed: int, limits: GraphLimits, steps: int) -> AgentGraph:
    rng = random.Random(seed)
    graph = AgentGraph("a", limits)
    tools = ["read", "edit", "test", "search", "answer", "call"]
    state, calls = START, 0
    for _ in range(steps):
        calls += 1
        dst = node_key(rng.choice(tools), calls)
        state = graph.observe_transition(state, dst, gap_s=rng.random() * 10, growth=300.0, output=50.0)
        if rng.random() < 0.05:
            graph.observe_end(state, calls=calls, peak_prompt=1000)
            state, calls = START, 0
        if rng.random() < 0.01:  # an end declared too early, taken back
            graph.observe_end(state, -1.0, calls=calls, peak_prompt=1000)
    return graph


def test_running_departures_equal_the_sum_after_random_updates() -> None:
    # a low decay weight: many decays per node, so counts take many fractional bits
    for seed in range(6):
        limits = GraphLimits(max_nodes=12, max_edges_per_node=5, decay_weight=60.0)
        graph = _random_graph(seed, limits, 20_000)
        assert max(n.decays for n in graph.nodes.values()) > 20
        for node in graph.nodes.values():
            assert node.departures == _summed(node)
            assert node.weight == node.ends + _summed(node)


def test_departures_fall_back_to_the_sum_once_the_total_may_have_rounded() -> None:
    node = Node("x#1")
    graph = AgentGraph("a", GraphLimits())
    graph.nodes["x#1"] = node
    graph.observe_transition("x#1", "y#2", gap_s=1.0, growth=1.0, output=1.0)
    node.decays = 52  # 2^-52 steps: a count of 1.0 is past the exact range (< 2^1 is the bound)
    node.total.count = 3.0  # not the edges' sum: only readable if the shortcut were taken
    assert _EXACT_BELOW[52] == 2.0
    assert node.departures == 1.0
    node.decays = 60  # beyond the table
    assert node.departures == 1.0


def test_state_nodes_are_the_walk_over_the_graph_in_its_order() -> None:
    limits = GraphLimits(max_nodes=20, max_edges_per_node=6)
    graph = _random_graph(7, limits, 5_000)
    states = {n.state for n in graph.nodes.values()} | {"nowhere"}
    for state in states:
        walked = [k for k, n in graph.nodes.items() if n.state == state]
        assert graph.keys_with_state(state) == walked
        assert [n.key for n in graph.state_nodes(state)] == walked
