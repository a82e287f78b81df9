"""The person-driven workload, the DES clients' tool names, and `saga bench predictor` end to end."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from loadtests.bench.predictor import add_predictor_parser, main
from loadtests.des.client import AgentRun, PromptSource
from loadtests.tasks import AgentTask, CallRecord, Step
from loadtests.workloads.catalog import WORKLOADS, generate
from loadtests.workloads.interactive import HUMAN_TURN


def test_interactive_sessions_are_bursts_separated_by_think_time() -> None:
    assert "interactive" in WORKLOADS
    tasks = generate("interactive", 300, seed=3)
    bursts: list[int] = []
    tool_gaps: list[float] = []
    think: list[float] = []
    for task in tasks:
        assert task.steps[-1].tool_name == HUMAN_TURN or sum(s.output_tokens for s in task.steps) > 0
        run = 0
        for step in task.steps:
            run += 1
            if step.tool_name == HUMAN_TURN:
                bursts.append(run)
                think.append(step.tool_time_s)
                run = 0
            else:
                tool_gaps.append(step.tool_time_s)
    assert 6 < statistics.mean(bursts) < 12  # WORKLOADS.md: 8.8 LLM steps per user request
    assert 0.1 < statistics.median(tool_gaps) < 0.6  # tool latency p50 ~0.3 s
    assert statistics.median(think) > 30  # minutes of reading and typing, not tool time
    assert len(think) > len(tasks)  # several requests per session


def test_des_clients_report_tool_names_and_finish_reasons() -> None:
    steps = [Step(10, "bash", 0.1, 5), Step(10, HUMAN_TURN, 60.0, 5), Step(10, "read", 0.1, 5)]
    run = AgentRun(AgentTask("s", 32, 32, steps), PromptSource(16), 0.0)
    calls = []
    for k in range(3):
        call = run.next_call(float(k))
        calls.append(call)
        run.record.calls.append(CallRecord(step=k, started_s=float(k), latency_s=0.1))
    # A request carries the result of the previous answer's tool; none after an answer to a person.
    assert [c.info.tool_names for c in calls] == [(), ("bash",), ()]
    # The task's last answer calls no tool: the agent's loop is over.
    assert [run.answer_tools(c) for c in calls] == [("tool_calls", ("bash",)), ("stop", ()), ("stop", ())]


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_predictor_parser(parser.add_subparsers(dest="bench_mode"))
    return parser.parse_args(["predictor", "--json", str(tmp_path / "out.json"), *extra])


def test_bench_predictor_on_a_generated_workload(tmp_path: Path) -> None:
    assert main(_args(tmp_path, "--workload", "webarena", "--tasks", "12", "--concurrency", "4")) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["sessions"] == 12
    assert len(result["cache"]) == 4
    for row in result["cache"]:
        assert set(row["policies"]) == {
            "belady", "saga", "lru", "fixed-ttl-10s", "state-oracle", "end-oracle",
            "belady-noise-0.5", "belady-noise-1",
        }  # fmt: skip
        assert row["over_belady"]["saga"] == row["saga_over_belady"]
        for r in row["policies"].values():
            assert 0 <= r["avoidable"] <= r["recomputed"] <= result["prompt_tokens"]
    assert result["belady_ratio"] == max(r["saga_over_belady"] for r in result["cache"])
    assert result["gap_information"]["gaps"] > 0
    coverage = result["quality"]["coverage"]
    assert coverage["p10"] <= coverage["p50"] <= coverage["p90"]
    quality = result["quality"]
    for key in ("remaining_calls_mae", "remaining_calls_mae_constant", "remaining_service_mae_s"):
        assert quality[key] >= 0
    assert quality["peak_prompt_rel_error_median_no_growth"] >= 0
    assert quality["peak_prompt_rel_error_median"] >= 0
    assert abs(quality["remaining_calls_bias"]) <= quality["remaining_calls_mae"]


def test_bench_predictor_replays_a_csv_trace(tmp_path: Path) -> None:
    rows = ["session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms,tool_name"]
    for s in range(4):
        for r in range(5):
            # prefix_len: the context re-sent (1000 first, then each round adds 300 in and 50 out).
            rows.append(f"s{s},{s * 2.0},{r},{1000 + 350 * r},300,50,{200 * (s + 1)},bash")
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(rows) + "\n")
    assert main(_args(tmp_path, "--trace", str(trace), "--cache-tokens", "0,2000,100000")) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert (result["sessions"], result["calls"]) == (4, 20)
    no_cache, _, everything = result["cache"]
    # Without a cache every reusable token is recomputed; with room for all, none is (by every policy).
    assert all(r["avoidable"] > 0 for r in no_cache["policies"].values())
    assert all(r["avoidable"] == 0 for r in everything["policies"].values())


def test_rank_correlation_of_the_remaining_work() -> None:
    from loadtests.bench.predictor import _spearman

    assert _spearman([1, 2, 3, 4], [10, 20, 30, 45]) == 1.0  # any increasing relation ranks the same
    assert _spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert _spearman([5, 5, 5], [1, 2, 3]) is None  # a constant predicts no order
    assert _spearman([1, 2], [1, 2]) is None
