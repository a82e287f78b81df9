"""Trace replay (docs/trace-format.md): validation that names the line, compaction and turns, in the
discrete-event cluster and over HTTP."""

from __future__ import annotations

import math

import aiohttp
import pytest

from loadtests.agent_client import AgentClient, compact
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import policy_metrics
from loadtests.des.cluster import run_cluster
from loadtests.des.event_queue import EventQueue
from loadtests.tasks import AgentTask, Step
from loadtests.workloads.trace_replay import parse_trace
from simulator.cost_model import get_profile
from simulator.server import start_fleet

HEADER = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms"
GOOD = f"{HEADER}\ns,0.5,0,1024,600,100,1000\ns,0.5,1,,500,100,2000\ns,0.5,2,1210,300,50,0\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("t,nan,0,10,10,5,0", r"line 3: arrival_time must be finite, got 'nan'"),
        ("t,inf,0,10,10,5,0", r"line 3: arrival_time must be finite"),
        ("t,1,0,10,10,5,NaN", r"line 3: tool_wait_after_ms must be finite"),
        ("t,1,0,10,10,5,-inf", r"line 3: tool_wait_after_ms must be finite"),
        ("t,1,0,nan,10,5,0", r"line 3: prefix_len must be finite"),
        ("t,1,0,10,10,inf,0", r"line 3: output_len must be finite"),
        ("t,-2,0,10,10,5,0", r"line 3: arrival_time must be >= 0, got '-2'"),
        ("t,1,0,10,-1,5,0", r"line 3: input_len must be >= 0"),
        ("t,1,0,10.5,10,5,0", r"line 3: prefix_len must be a whole number"),
        ("t,1,0,10,10,5,0,extra", r"line 3: more fields than the header"),
    ],
)
def test_a_bad_value_is_refused_naming_its_line_and_column(row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trace(f"{HEADER}\nu,0,0,10,10,5,0\n{row}\n".splitlines())


def test_a_trace_with_only_a_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rows"):
        parse_trace([HEADER + "\n"])


def test_turns_are_all_or_nothing_and_never_go_back() -> None:
    head = HEADER + ",turn"
    a = parse_trace(f"{head}\ns,0,0,10,10,5,0,0\ns,0,1,,10,5,0,0\ns,0,2,,10,5,0,1\n".splitlines())
    assert [st.turn for st in a[0].steps] == [0, 0, 1]
    with pytest.raises(ValueError, match="every round or on none"):
        parse_trace(f"{head}\ns,0,0,10,10,5,0,0\ns,0,1,,10,5,0,\n".splitlines())
    with pytest.raises(ValueError, match="must not decrease"):
        parse_trace(f"{head}\ns,0,0,10,10,5,0,1\ns,0,1,,10,5,0,0\n".splitlines())


def test_a_prefix_shorter_than_the_context_so_far_is_a_compaction() -> None:
    (task,) = parse_trace(GOOD.splitlines())
    # Context after call 0: 1624 + 100; call 1 re-sends it all (empty prefix_len) + 500; after call 1: 2324.
    # Round 2's prefix_len 1210 < 2324: compaction, after step 1.
    assert [st.compact_to_tokens for st in task.steps] == [None, 1210, None]
    # A prefix_len equal to (or above) the context so far is no compaction.
    same = parse_trace(GOOD.replace("s,0.5,2,1210", "s,0.5,2,2324").splitlines())[0]
    assert [st.compact_to_tokens for st in same.steps] == [None, None, None]


def test_the_cluster_refuses_non_finite_times_instead_of_spinning() -> None:
    queue = EventQueue()
    for at in (math.nan, math.inf):
        with pytest.raises(ValueError, match="must be finite"):
            queue.schedule(at, print, None)
    with pytest.raises(ValueError, match="before now"):
        EventQueue(5.0).schedule(1.0, print, None)
    nan_arrival = AgentTask("x", 10, 10, [Step(5, "t", 0.0, 0)], arrival_s=math.nan)
    with pytest.raises(ValueError, match="task 'x': arrival_s must be finite"):
        run_cluster([nan_arrival], replicas=1)
    nan_tool = AgentTask("y", 10, 10, [Step(5, "t", math.inf, 0)])
    with pytest.raises(ValueError, match="task 'y' step 0: tool_time_s"):
        run_cluster([nan_tool], replicas=1)


def test_compaction_shrinks_the_prompt_and_the_next_call_hits_the_compacted_prefix() -> None:
    (task,) = parse_trace(GOOD.splitlines())
    result = run_cluster([task], replicas=1, policy="session-affinity")
    c0, c1, c2 = result.tasks[0].calls
    assert [c.prompt_tokens for c in (c0, c1, c2)] == [1624, 2224, 1210 + 300]
    bs = get_profile("llama3-8b-h100").block_size
    assert c1.cached_tokens == (1624 + 100) // bs * bs  # the whole context before it, in full blocks
    assert c2.cached_tokens == 1210 // bs * bs  # the compacted prefix, still cached from call 1
    # Only the partial blocks are recomputed; what compaction dropped is not counted as lost.
    m = policy_metrics(result.tasks, [task], {"s": 1.0})
    assert m.recomputed_prefill_tokens == (1724 - c1.cached_tokens) + (1210 - c2.cached_tokens)
    # Alone on a replica, a compacted task is faster than the same task growing its whole context.
    grown = parse_trace(GOOD.replace("s,0.5,2,1210", "s,0.5,2,").splitlines())[0]
    profile = get_profile("llama3-8b-h100")
    assert isolated_task_time_s(task, profile) < isolated_task_time_s(grown, profile)


def test_compacting_messages_keeps_the_first_words_and_drops_cut_tool_calls() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "a b c"},
        {"role": "user", "content": "d e"},
        {"role": "assistant", "content": "f g\nh", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "i j"},
    ]
    cut = [dict(m) for m in messages]
    compact(cut, 6)
    assert cut == [messages[0], messages[1], {"role": "assistant", "content": "f"}]
    cut = [dict(m) for m in messages]
    compact(cut, 9)  # the assistant's call is kept whole, and so is its (cut) result
    assert cut[:3] == messages[:3] and cut[3] == {"role": "tool", "tool_call_id": "c", "content": "i"}
    cut = [dict(m) for m in messages]
    compact(cut, 100)
    assert cut == messages


async def test_compaction_over_http_shrinks_the_prompt_and_keeps_its_prefix_cached() -> None:
    steps = [Step(40, "t", 0.0, 300), Step(40, "t", 0.0, 300, compact_to_tokens=600), Step(20, "t", 0.0, 0)]
    task = AgentTask("h", 500, 400, steps)
    fleet = await start_fleet(1, time_scale=500.0)
    try:
        async with aiohttp.ClientSession() as session:
            record = await AgentClient(session, fleet.urls[0], time_scale=500.0).run_task(task)
    finally:
        await fleet.close()
    c0, c1, c2 = record.calls
    assert not record.failed
    # Without compaction call 2 would re-send call 1's prompt, its answer and the observation (~1600).
    assert c1.prompt_tokens > c0.prompt_tokens and c2.prompt_tokens < c1.prompt_tokens
    # About 600 tokens kept (words; the chat template adds a few) plus the 300-word observation.
    assert 880 <= c2.prompt_tokens <= 960
    # The kept start is a prefix of what call 1 sent: its full blocks hit the cache.
    assert 576 <= c2.cached_tokens <= 624
