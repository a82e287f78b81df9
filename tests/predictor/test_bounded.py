"""Memory stays bounded whatever the traffic: floods of agent types, sessions and tool names."""

from __future__ import annotations

import gc

from predictor import GraphLimits, Predictor, PredictorConfig
from predictor.predictor import ONE_OFF_AGENT_TYPE


def test_a_flood_of_agent_types_and_sessions_is_capped() -> None:
    cfg = PredictorConfig(max_agent_types=8, max_sessions=100, max_ghosts=50)
    predictor = Predictor(cfg)
    now = 0.0
    for i in range(20_000):
        sid, agent = f"s{i}", f"agent-{i % 3000}-" + "x" * (i % 500)
        predictor.call_arrived(sid, agent, now, 1000)
        predictor.call_finished(sid, now + 0.5, 1000, 10, "tool_calls", (f"tool{i % 7}",))
        now += 1.0
        if i % 1000 == 0:
            predictor.tick(now)
        assert len(predictor.graphs) <= cfg.max_agent_types
        assert len(predictor.sessions) <= cfg.max_sessions
    predictor.tick(now + 10_000)
    assert len(predictor.sessions) == 0
    assert len(predictor._ghosts) <= cfg.max_ghosts
    assert all(len(a) <= cfg.max_agent_type_chars for a in predictor.graphs)


def test_a_flood_of_tool_names_folds_into_other() -> None:
    limits = GraphLimits(max_nodes=10, max_edges_per_node=4)
    predictor = Predictor(PredictorConfig(graph=limits))
    now = 0.0
    for i in range(200):
        sid = f"s{i}"
        for k in range(10):
            predictor.call_arrived(sid, "a", now, 1000 + k)
            predictor.call_finished(sid, now + 0.1, 1000 + k, 10, "tool_calls", (f"t{i}-{k}",))
            now += 0.2
        predictor.session_ended(sid)
    graph = predictor.graph("a")
    assert graph is not None
    assert len(graph.nodes) <= limits.max_nodes + 1  # the cap, plus `other`
    assert all(len(n.out) <= limits.max_edges_per_node + 1 for n in graph.nodes.values())
    assert "other" in graph.nodes


def test_node_counts_stay_finite_under_endless_traffic() -> None:
    limits = GraphLimits(decay_weight=100)
    predictor = Predictor(PredictorConfig(graph=limits))
    now = 0.0
    for _ in range(5000):
        predictor.call_arrived("s", "a", now, 1000)
        predictor.call_finished("s", now + 0.1, 1000, 10, "tool_calls", ("t",))
        now += 0.2
    graph = predictor.graph("a")
    assert graph is not None
    assert max(n.weight for n in graph.nodes.values()) <= limits.decay_weight + 1


def test_a_flood_of_agent_types_leaves_no_reference_cycles() -> None:
    """What the predictor drops (graphs of evicted agent types, forgotten sessions) is freed when dropped.
    An edge once listed itself among the sums its transitions add to; the cycle left every dropped graph to
    the cyclic GC, whose full collections stalled `saga serve` for 1-2 s when each session had an agent type
    of its own (a system prompt naming its user)."""
    cfg = PredictorConfig(max_agent_types=4, max_sessions=50, max_ghosts=20)
    predictor = Predictor(cfg)
    gc.collect()
    gc.disable()  # nothing collects behind the test's back: the count below is everything left cyclic
    try:
        now = 0.0
        for i in range(400):
            sid, agent = f"s{i}", f"agent-{i}"
            for k in range(3):
                predictor.call_arrived(sid, agent, now, 1000 + 100 * k)
                predictor.call_finished(sid, now + 0.5, 1000 + 100 * k, 10, "tool_calls", (f"tool{k}",))
                now += 1.0
                # the reads that fill the graph's caches (remaining work, merged sketches, return models)
                predictor.predict(sid, now)
                predictor.hold_outlook(sid, now)
                predictor.expected_work_s(sid)
                predictor.peak_context_tokens(sid)
            predictor.session_ended(sid)
            if i % 50 == 0:
                predictor.tick(now)
        assert len(predictor.graphs) <= cfg.max_agent_types
        assert gc.collect() == 0
    finally:
        gc.enable()


def _session(predictor: Predictor, sid: str, agent: str, now: float) -> None:
    predictor.call_arrived(sid, agent, now, 1000)
    predictor.call_finished(sid, now + 0.5, 1000, 10, "tool_calls", ("t",))
    predictor.session_ended(sid)


def test_types_seen_once_share_one_graph_while_the_recurring_types_keep_theirs() -> None:
    """With every graph slot taken, a stream of types each seen once (a system prompt naming its user) would
    build a graph per session and evict the recurring agents' graphs: they are filed together instead, and a
    type earns a graph of its own at its second session."""
    cfg = PredictorConfig(max_agent_types=4)
    predictor = Predictor(cfg)
    for i, agent in enumerate(("coder", "browser", "planner")):
        _session(predictor, f"warm-{i}", agent, float(i))
    assert predictor.agent_type_of("warm-0") is None  # ended sessions are no longer live
    for i in range(200):
        predictor.call_arrived(f"user-{i}", f"assistant-for-user-{i}", 10.0 + i, 1000)
        assert predictor.agent_type_of(f"user-{i}") in (f"assistant-for-user-{i}", ONE_OFF_AGENT_TYPE)
        predictor.call_finished(f"user-{i}", 10.5 + i, 1000, 10, "tool_calls", ("t",))
        _session(predictor, f"coder-{i}", "coder", 10.6 + i)  # the recurring agent keeps coming back
    # the first took the last free slot; the shared graph took the least recently used one's (browser's)
    assert list(predictor.graphs) == ["planner", "assistant-for-user-0", ONE_OFF_AGENT_TYPE, "coder"]
    one_off = predictor.graph(ONE_OFF_AGENT_TYPE)
    assert one_off is not None and one_off.sessions_seen == 199
    # a type met again recently earns its own graph (the least recently used one makes room)
    predictor.call_arrived("again", "assistant-for-user-199", 500.0, 1000)
    assert predictor.agent_type_of("again") == "assistant-for-user-199"
    predictor.call_finished("again", 500.5, 1000, 10, "tool_calls", ("t",))
    assert list(predictor.graphs)[-1] == "assistant-for-user-199" and "planner" not in predictor.graphs
    # one met long ago (past the doorkeeper's 4 x 4 recent new types) starts over as a one-off
    predictor.call_arrived("late", "assistant-for-user-5", 501.0, 1000)
    assert predictor.agent_type_of("late") == ONE_OFF_AGENT_TYPE


def test_one_owner_sending_many_types_evicts_its_own_graphs_not_anothers() -> None:
    """One LRU table for every tenant: a tenant sending 64 types (two one-call sessions each) in 0.8 s evicted
    every other tenant's graphs, whose workflows went back to the cold priors (no retention, prior holds),
    and while the slots were full every tenant's new types were learned in one shared graph (the fifth
    review). The graph dropped is now the least recently used of the owner holding the most, and each owner
    has its own types seen once."""
    predictor = Predictor(PredictorConfig(max_agent_types=8))
    for k in range(3):
        _session(predictor, f"a-{k}", "alpha:coder", float(k))
    for i in range(64):
        for k in range(2):
            _session(predictor, f"m-{i}-{k}", f"mallory:type-{i}", 10.0 + i + k / 2)
    assert "alpha:coder" in predictor.graphs  # alpha's one graph stays: mallory holds the most
    coder = predictor.graph("alpha:coder")
    assert coder is not None and coder.sessions_seen == 3
    predictor.call_arrived("a-new", "alpha:reviewer", 100.0, 1000)  # alpha's new type, every slot taken
    predictor.call_arrived("m-new", "mallory:type-new", 100.0, 1000)
    assert predictor.agent_type_of("a-new") == "alpha:" + ONE_OFF_AGENT_TYPE
    assert predictor.agent_type_of("m-new") == "mallory:" + ONE_OFF_AGENT_TYPE
    assert len(predictor.graphs) <= 8
