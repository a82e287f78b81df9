"""Learning on hand-made streams with known structure: transition probabilities, gap quantiles and end
probabilities converge to the generating ones; person-driven gaps are told apart from tool gaps."""

from __future__ import annotations

import math

import pytest

from predictor import GraphLimits, Predictor, PredictorConfig
from predictor.export import state_graph_dot
from predictor.graph import AgentGraph
from tests.predictor.streams import GAP_MEDIAN_S, GAP_SIGMA, TRANSITIONS, feed_sessions


def _state_transitions(graph: AgentGraph, state: str) -> dict[str, float]:
    """Transition probabilities between states, summed over step buckets."""
    counts: dict[str, float] = {}
    for node in graph.nodes.values():
        if node.state != state:
            continue
        for dst, edge in node.out.items():
            counts[graph.nodes[dst].state] = counts.get(graph.nodes[dst].state, 0.0) + edge.count
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def test_transition_probabilities_converge_to_the_generating_ones() -> None:
    predictor = Predictor()
    feed_sessions(predictor, 400)
    graph = predictor.graph("toy")
    assert graph is not None
    for state, targets in TRANSITIONS.items():
        learned = _state_transitions(graph, state)
        for target, p in targets:
            assert learned.get(target, 0.0) == pytest.approx(p, abs=0.05), (state, target, learned)


def test_gap_quantiles_converge_per_state() -> None:
    predictor = Predictor()
    feed_sessions(predictor, 400)
    graph = predictor.graph("toy")
    assert graph is not None
    ratio = 1.3  # one bucket (1.21) plus sampling noise
    for state, median in GAP_MEDIAN_S.items():
        sketch = graph.merged(graph.keys_with_state(state), "gap")
        assert sketch is not None
        for q, z in ((0.1, -1.2815515655446004), (0.5, 0.0), (0.9, 1.2815515655446004)):
            true = median * math.exp(GAP_SIGMA * z)
            assert true / ratio < sketch.quantile(q) < true * ratio, (state, q)


def test_end_probability_is_learned_where_tasks_end() -> None:
    predictor = Predictor()
    feed_sessions(predictor, 400, end_after_answers=2)
    graph = predictor.graph("toy")
    assert graph is not None
    # Every session ends at its second answer: an answer ends the task half of the time; tools never do.
    answers = [n for n in graph.nodes.values() if n.state == "answer"]
    ends = sum(n.ends for n in answers)
    visits = sum(n.weight for n in answers)
    assert ends / visits == pytest.approx(0.5, abs=0.05)
    assert all(n.ends == 0 for n in graph.nodes.values() if n.state in ("search", "read", "edit"))


def test_predictions_after_an_answer_and_after_a_tool_differ() -> None:
    predictor = Predictor()
    now = feed_sessions(predictor, 300)
    # A live session that just called `read` vs one that just answered the person.
    predictor.call_arrived("tool", "toy", now, 5000)
    predictor.call_finished("tool", now + 1, 5000, 100, "tool_calls", ("read",))
    predictor.call_arrived("person", "toy", now, 5000)
    predictor.call_finished("person", now + 1, 5000, 100, "stop", ())
    tool = predictor.predict("tool", now + 1)
    person = predictor.predict("person", now + 1)
    assert tool is not None and person is not None
    assert not tool.cold and not person.cold
    median = tool.quantiles.index(0.5)
    assert tool.return_gap_s[median] < 0.2
    assert person.return_gap_s[median] > 60
    assert person.p_end > tool.p_end
    assert tool.next_prompt_tokens == pytest.approx(5000 + 300, rel=0.25)
    assert tool.remaining_calls > 1


def test_cold_start_uses_priors_and_says_so() -> None:
    predictor = Predictor()
    predictor.call_arrived("s", "never-seen", 0.0, 1000)
    predictor.call_finished("s", 1.0, 1000, 50, "tool_calls", ("x",))
    pred = predictor.predict("s", 1.0)
    assert pred is not None
    assert pred.cold and pred.source == "prior"
    assert pred.return_gap_s[pred.quantiles.index(0.5)] == pytest.approx(
        predictor.config.priors.gap_median_s, rel=0.3
    )
    feed_sessions(predictor, 50, agent_type="never-seen")
    predictor.call_arrived("t", "never-seen", 1e6, 1000)
    predictor.call_finished("t", 1e6 + 1, 1000, 50, "tool_calls", ("read",))
    warm = predictor.predict("t", 1e6 + 1)
    assert warm is not None and not warm.cold and warm.source == "node"


def test_silence_past_the_horizon_ends_a_session_and_a_return_takes_it_back() -> None:
    predictor = Predictor()
    now = feed_sessions(predictor, 100)
    graph = predictor.graph("toy")
    assert graph is not None
    predictor.call_arrived("quiet", "toy", now, 1000)
    predictor.call_finished("quiet", now + 1, 1000, 10, "tool_calls", ("read",))
    ends_before = graph.sessions_ended
    assert predictor.tick(now + 2) == []  # within read's horizon (p99 well under a second, floor 30 s)
    assert predictor.tick(now + 1 + 31) == ["quiet"]
    assert graph.sessions_ended == ends_before + 1
    assert "quiet" not in predictor.sessions
    # It was not over: the next call takes the end back and continues the session where it was.
    predictor.call_arrived("quiet", "toy", now + 100, 1300)
    assert graph.sessions_ended == ends_before
    assert predictor.sessions["quiet"].calls == 1


def test_decay_follows_drift() -> None:
    predictor = Predictor(PredictorConfig(graph=GraphLimits(decay_weight=200)))
    feed_sessions(predictor, 200, gap=lambda rng, state: 0.1)
    feed_sessions(predictor, 400, seed=1, gap=lambda rng, state: 10.0)
    graph = predictor.graph("toy")
    assert graph is not None
    sketch = graph.merged(graph.keys_with_state("search"), "gap")
    assert sketch is not None
    assert sketch.quantile(0.2) > 5.0  # the old 0.1 s gaps have faded


def test_request_tool_messages_name_the_state_when_the_answer_did_not() -> None:
    predictor = Predictor()
    for i in range(20):
        sid = f"s{i}"
        predictor.call_arrived(sid, "proxy-agent", i * 100.0, 1000)
        predictor.call_finished(sid, i * 100.0 + 1, 1000, 10)  # no finish reason, no tool names seen
        predictor.call_arrived(sid, "proxy-agent", i * 100.0 + 3, 1300, ("bash",))
        predictor.call_finished(sid, i * 100.0 + 4, 1300, 10)
    graph = predictor.graph("proxy-agent")
    assert graph is not None
    assert any(n.state == "bash" and n.out for n in graph.nodes.values())


def test_state_level_drawing_shows_the_generating_structure() -> None:
    predictor = Predictor()
    feed_sessions(predictor, 300)
    graph = predictor.graph("toy")
    assert graph is not None
    dot = state_graph_dot(graph)
    edges = {
        tuple(line.split(" [")[0].strip().replace('"', "").split(" -> ")): float(line.split('label="')[1][:4])
        for line in dot.splitlines()
        if " -> " in line
    }
    for state, targets in TRANSITIONS.items():
        for target, p in targets:
            assert edges[(state, target)] == pytest.approx(p, abs=0.05)
    assert 'fillcolor="#fdebd0"' in dot  # answers to the person stand out
