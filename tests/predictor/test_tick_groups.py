"""`Predictor.tick` reads only the heads of its (agent type, state) groups: it must end exactly the sessions a
scan of every session would, in the order of their last answers, whatever the horizons of the states."""

from __future__ import annotations

import random

from predictor import Predictor, PredictorConfig


def _expected_ends(predictor: Predictor, order: list[str], now: float) -> list[str]:
    """The plain computation: every session, in the order of its last answer, silent past its horizon."""
    out = []
    for sid in order:
        s = predictor.sessions.get(sid)
        if s is None or s.in_flight or s.finished_at is None:
            continue
        if now - s.finished_at > predictor.horizon_s(s):
            out.append(sid)
    return out


def test_grouped_tick_ends_the_same_sessions_as_a_full_scan_in_the_same_order() -> None:
    rng = random.Random(7)
    predictor = Predictor(PredictorConfig(min_horizon_s=5.0, end_scan_interval_s=0.0, max_sessions=400))
    tools = ["bash", "edit", "think", "search", "call"]
    gap_of = {"bash": 1.0, "edit": 0.2, "think": 40.0, "search": 8.0, "call": 3.0}  # horizons 5 s to ~100 s
    order: list[str] = []  # sessions by their last answer (what the old single list held)
    busy: dict[str, int] = {}
    now = 0.0
    ended_total = 0
    for step in range(6000):
        now += rng.choice((0.01, 0.05, 0.3, 1.0))
        sid = f"s{rng.randrange(500)}"
        action = rng.random()
        s = predictor.sessions.get(sid)
        if busy.get(sid):
            tool = rng.choice(tools)  # "call": the answer's tool calls were not seen
            predictor.call_finished(sid, now, 1000, 50, "tool_calls", () if tool == "call" else (tool,))
            busy[sid] -= 1
            if sid in predictor.sessions and predictor.sessions[sid].finished_at == now:  # it answered
                order = [o for o in order if o != sid] + [sid]
        elif action < 0.02:
            predictor.forget(sid)
        elif action < 0.04:
            predictor.session_ended(sid)
        elif action < 0.08 and s is not None and s.in_flight == 0 and s.calls:
            # a call the tool messages name (moves a `call#` state) that then fails: the session keeps its
            # old answer time in a new state
            predictor.call_arrived(sid, "agent", now, 1200, ("bash",))
            predictor.call_failed(sid)
        else:
            last = predictor.sessions[sid].state.split("#")[0] if sid in predictor.sessions else "start"
            wait = gap_of.get(last, 0.5) * rng.random()
            if s is None or s.finished_at is None or now - s.finished_at >= wait:
                predictor.call_arrived(sid, "agent", now, 1000, ())
                busy[sid] = busy.get(sid, 0) + 1
        order = [o for o in order if o in predictor.sessions]
        if step % 7 == 0:
            expected = _expected_ends(predictor, order, now)
            assert predictor.tick(now) == expected
            ended_total += len(expected)
            order = [o for o in order if o not in expected]
    assert ended_total > 10  # the horizons were passed often enough to test something


def test_a_long_horizon_head_does_not_hide_a_short_horizon_session_behind_it() -> None:
    predictor = Predictor(PredictorConfig(min_horizon_s=1.0))
    for i in range(20):  # "think" gaps of ~100 s (horizon ~200 s), "bash" gaps of ~0.5 s (horizon 1 s)
        for tool, gap in (("think", 100.0), ("bash", 0.5)):
            sid = f"{tool}{i}"
            predictor.call_arrived(sid, "t", 0.0, 100)
            predictor.call_finished(sid, 0.0, 100, 10, "tool_calls", (tool,))
            predictor.call_arrived(sid, "t", gap, 200)
            predictor.call_finished(sid, gap, 200, 10, "tool_calls", (tool,))
            predictor.forget(sid)
    predictor.call_arrived("slow", "t", 300.0, 100)
    predictor.call_finished("slow", 300.0, 100, 10, "tool_calls", ("think",))
    predictor.call_arrived("quick", "t", 301.0, 100)
    predictor.call_finished("quick", 301.0, 100, 10, "tool_calls", ("bash",))
    assert predictor.tick(310.0) == ["quick"]  # the older "slow" is within its horizon; "quick" is past its
    assert "slow" in predictor.sessions and "quick" not in predictor.sessions
