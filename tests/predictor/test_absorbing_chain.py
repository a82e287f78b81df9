"""The expected work still to come in an agent's graph is the exact solution of its absorbing chain, however
long the agent runs (value iteration from zero stopped short on long agents), and stays finite."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictor.absorbing_chain import Row, solve_absorbing
from predictor.graph import START, AgentGraph, _finite, node_key
from predictor.structs import GraphLimits
from tests.predictor.streams import learned_graph


def _equations(graph: AgentGraph) -> dict[str, tuple[float, list[tuple[str, float, float, float]]]]:
    """Per node: its continue probability and edges (target, p, mean growth, mean output), from the graph."""
    plan = {}
    for key, node in graph.nodes.items():
        probs = graph.transitions(node)
        cont = 1.0 - graph.end_probability(node) if probs else 0.0
        plan[key] = (
            cont,
            [
                (k, p, _finite(node.out[k].growth.mean()), _finite(node.out[k].output.mean()))
                for k, p in probs.items()
            ],
        )
    return plan


def _value_iteration(graph: AgentGraph, sweeps: int) -> dict[str, tuple[float, float, float]]:
    """The chain by plain value iteration from zero, every sweep run (no early stop)."""
    plan = _equations(graph)
    calls, new, out = dict.fromkeys(plan, 0.0), dict.fromkeys(plan, 0.0), dict.fromkeys(plan, 0.0)
    for _ in range(sweeps):
        for key, (cont, edges) in plan.items():
            calls[key] = cont * sum(p * (1.0 + calls[k]) for k, p, _, _ in edges)
            new[key] = cont * sum(p * (g + new[k]) for k, p, g, _ in edges)
            out[key] = cont * sum(p * (y + out[k]) for k, p, _, y in edges)
    return {k: (calls[k], new[k], out[k]) for k in plan}


@pytest.mark.parametrize("seed", range(6))
def test_the_solution_satisfies_every_node_equation(seed: int) -> None:
    rng = random.Random(seed)
    states = ["bash", "edit", "search", "answer", "call", "think"] if seed % 2 else ["call"]
    # a small node limit folds later states into `other`, whose edges lead back: loops across buckets
    limits = GraphLimits(max_nodes=6 + 6 * seed, max_edges_per_node=3 + seed)
    graph = learned_graph(rng, states, rng.randrange(20, 200), 300, limits)
    solved = graph._solve()
    assert list(solved) == list(graph.nodes)
    for key, (cont, edges) in _equations(graph).items():
        want_calls = cont * sum(p * (1.0 + solved[k].calls) for k, p, _, _ in edges)
        want_new = cont * sum(p * (g + solved[k].new_tokens) for k, p, g, _ in edges)
        want_out = cont * sum(p * (y + solved[k].output_tokens) for k, p, _, y in edges)
        assert solved[key].calls == pytest.approx(want_calls, rel=1e-9, abs=1e-9)
        assert solved[key].new_tokens == pytest.approx(want_new, rel=1e-9, abs=1e-6)
        assert solved[key].output_tokens == pytest.approx(want_out, rel=1e-9, abs=1e-6)


def test_short_agents_get_what_value_iteration_converges_to() -> None:
    rng = random.Random(4)
    graph = learned_graph(rng, ["bash", "edit", "answer"], 150, 20, GraphLimits())
    reference = _value_iteration(graph, 3000)
    for key, work in graph._solve().items():
        assert (work.calls, work.new_tokens, work.output_tokens) == pytest.approx(reference[key], rel=1e-9)


def test_a_long_agent_is_not_cut_short() -> None:
    """Agents of 200-250 calls: in the 64-255 bucket a node loops on itself ~99% of the time. 300 sweeps of
    value iteration from zero (the solver before) reached ~85% of the expected remaining calls there."""
    graph = AgentGraph("long", GraphLimits())
    rng = random.Random(1)
    for _ in range(40):
        prev, length = START, rng.randrange(200, 251)
        for n in range(1, length + 1):
            dst = node_key("bash", n)
            graph.observe_transition(prev, dst, gap_s=1.0, growth=100.0, output=10.0)
            prev = graph.node(dst).key
        graph.observe_end(prev, calls=length, peak_prompt=length * 100)
    solved = graph._solve()
    exact = _value_iteration(graph, 20_000)
    short = _value_iteration(graph, 300)
    node = node_key("bash", 64)  # just entered the 64-255 bucket: ~160 calls to go
    assert solved[node].calls == pytest.approx(exact[node][0], rel=1e-6)
    assert solved[node].calls > 100
    assert short[node][0] < 0.9 * solved[node].calls  # what 300 sweeps gave: the defect this replaced


def test_a_node_that_never_ends_promises_a_bounded_number_of_calls() -> None:
    rows: list[Row] = [(1.0, [(0, 1.0, 50.0, 5.0)])]  # continues forever (no end prior), on itself
    calls, new, out = solve_absorbing(rows, 1, max_continue=1.0 - 1e-4)
    assert calls[0] == pytest.approx(1e4 - 1, rel=1e-6)
    assert new[0] == pytest.approx(50.0 * calls[0]) and out[0] == pytest.approx(5.0 * calls[0])


def test_a_two_state_loop_solved_by_hand() -> None:
    # a <-> b, each continuing with 0.9: from a, calls = 0.9 (1 + calls_b), calls_b = 0.9 (1 + calls_a)
    rows: list[Row] = [(0.9, [(1, 1.0, 10.0, 1.0)]), (0.9, [(0, 1.0, 20.0, 2.0)])]
    calls, new, _ = solve_absorbing(rows, 2)
    assert calls[0] == pytest.approx(0.9 * 1.9 / (1 - 0.81))
    assert calls[1] == pytest.approx(calls[0])
    assert new[0] == pytest.approx((0.9 * 10 + 0.81 * 20) / (1 - 0.81))


def test_a_target_outside_the_graph_counts_its_own_step_only() -> None:
    rows: list[Row] = [(0.5, [(7, 1.0, 100.0, 10.0)])]
    assert solve_absorbing(rows, 1) == ([0.5], [50.0], [5.0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 0.999),
            st.lists(st.tuples(st.integers(0, 9), st.floats(0.01, 1.0), st.floats(0, 1e4)), max_size=4),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_any_chain_is_solved_exactly(raw: list[tuple[float, list[tuple[int, float, float]]]]) -> None:
    size = len(raw)
    rows: list[Row] = []
    for cont, edges in raw:
        total = sum(p for _, p, _ in edges)
        rows.append((cont, [(j, p / total, g, 1.0) for j, p, g in edges] if edges else []))
    calls, new, out = solve_absorbing(rows, size)
    for i, (cont, edges) in enumerate(rows):
        inside = [(j, p, g) for j, p, g, _ in edges]
        want = cont * sum(p * (1.0 + (calls[j] if j < size else 0.0)) for j, p, _ in inside)
        want_new = cont * sum(p * (g + (new[j] if j < size else 0.0)) for j, p, g in inside)
        assert calls[i] == pytest.approx(want, rel=1e-7, abs=1e-7)
        assert new[i] == pytest.approx(want_new, rel=1e-7, abs=1e-4)
        assert 0.0 <= calls[i] < 1e4 and out[i] == pytest.approx(calls[i], rel=1e-7, abs=1e-7)
