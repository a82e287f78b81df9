"""Sharing what a predictor learned (`keep_learned` / `take_learned` / `learn`): what the workers of
`saga serve --workers N` exchange so each worker's graphs learn from every worker's tasks."""

from __future__ import annotations

from predictor import Predictor
from predictor.export import graph_json
from predictor.predictor import END, MAX_KEPT, TRANSITION
from tests.predictor.streams import feed_sessions


def test_a_replayed_journal_teaches_another_predictor_the_same_graph() -> None:
    teacher, learner = Predictor(), Predictor()
    teacher.keep_learned()
    learner.keep_learned()
    now = feed_sessions(teacher, 150, explicit_end=True)
    feed_sessions(teacher, 50, seed=1, explicit_end=False)  # these end by silence, in `tick`
    teacher.tick(now + 1e6)
    learned = teacher.take_learned()
    assert {kind for kind, *_ in learned} == {0, END}
    learner.learn(learned)
    graph, copy = teacher.graph("toy"), learner.graph("toy")
    assert graph is not None and copy is not None
    assert graph_json(copy) == graph_json(graph)
    assert copy.sessions_ended == graph.sessions_ended == 200
    assert teacher.take_learned() == []  # taken once
    assert learner.take_learned() == []  # what was replayed is not passed on again
    assert not learner.sessions  # the teacher's sessions stay the teacher's


def test_a_session_that_returns_after_its_end_takes_the_end_back_everywhere() -> None:
    teacher, learner = Predictor(), Predictor()
    teacher.keep_learned()
    teacher.call_arrived("s", "toy", 0.0, 100)
    teacher.call_finished("s", 1.0, 100, 10, "tool_calls", ("search",))
    assert teacher.tick(1e6) == ["s"]  # silent past its horizon: ended
    teacher.call_arrived("s", "toy", 1e6 + 1, 200)  # it was not over after all
    learner.learn(teacher.take_learned())
    graph, copy = teacher.graph("toy"), learner.graph("toy")
    assert graph is not None and copy is not None
    assert graph.sessions_ended == copy.sessions_ended == 0
    assert graph_json(copy) == graph_json(graph)


def test_an_end_taken_back_for_an_agent_type_never_learned_is_ignored() -> None:
    learner = Predictor()
    learner.learn([(END, "unseen", "search#1", "", -1.0, 100.0, 0.0, 3)])
    assert learner.graph("unseen") is None


def test_nothing_is_kept_unless_asked_and_what_is_kept_is_bounded() -> None:
    quiet = Predictor()
    feed_sessions(quiet, 5)
    assert quiet.take_learned() == []
    keeping = Predictor()
    keeping.keep_learned()
    for i in range(MAX_KEPT + 10):
        keeping.call_arrived(f"s{i}", "toy", float(i), 100)
        keeping.call_finished(f"s{i}", float(i) + 0.5, 100, 10, "stop")
    assert len(keeping.take_learned()) == MAX_KEPT


def test_observations_no_predictor_makes_are_not_learned() -> None:
    learner = Predictor()
    impossible = [
        (TRANSITION, "toy", "search#1", "read#2", float("nan"), 10.0, 5.0, 0),
        (TRANSITION, "toy", "search#1", "read#2", 1.0, float("inf"), 5.0, 0),
        (TRANSITION, "toy", "search#1", "read#2", -5.0, 10.0, 5.0, 0),
        (TRANSITION, "toy", "search#1", "read#2", 1.0, 10.0, -1.0, 0),
        (END, "toy", "search#1", "", 1e300, 100.0, 0.0, 3),
        (END, "toy", "search#1", "", 1.0, 100.0, 0.0, -3),
        (7, "toy", "search#1", "read#2", 1.0, 10.0, 5.0, 0),
    ]
    learner.learn(impossible)
    assert learner.graph("toy") is None
    learner.learn([(TRANSITION, "toy", "search#1", "read#2", -1.0, 10.0, 5.0, 0)])  # no gap: possible
    graph = learner.graph("toy")
    assert graph is not None and graph.nodes["search#1"].out["read#2"].count == 1.0
