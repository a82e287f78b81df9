"""Every number on `saga`'s command line is checked where it is parsed: zero replicas, a negative duration,
NaN or infinity are argparse's usage error naming the flag (exit 2), not a traceback, an empty run or a
benchmark that never ends (`saga bench overhead --duration -1` hung before)."""

from __future__ import annotations

import argparse

import pytest

from proxy.arg_types import at_least, non_negative, positive
from proxy.cli import build_parser, main

BAD = [
    "demo --time-scale 0",
    "demo --time-scale nan",
    "demo --sessions 0",
    "demo --replicas -1",
    "demo --steps 1.5",
    "serve --simulate -1",
    "serve --time-scale inf",
    "sim --replicas 0",
    "bench des --tasks 0",
    "bench des --replicas 0",
    "bench des --jobs 0",
    "bench des --arrival-rate -0.1",
    "bench live --time-scale 0",
    "bench live --concurrency 0",
    "bench overhead --duration -1",
    "bench overhead --rounds 0",
    "bench overhead --connections 0",
    "bench faults --max-run-s nan",
    "bench faults --spacing -1",
    "bench core --replicas 0",
    "bench core --warmup -5",
    "bench fairness --interactive-rate 0",
    "bench grid --loads nan",
    "bench grid --oversub 1,inf",
    "bench grid --jobs -2",
    "bench grid --json /nonexistent/x.json",
    "bench des --json /nonexistent/x.json",
    "bench live --markdown /nonexistent/x.md",
    "bench core --json /nonexistent/x.json",
    "bench fairness --json /nonexistent/x.json",
    "bench overhead --json /nonexistent/x.json",
    "bench predictor --json /nonexistent/x.json",
    "bench predictor --concurrency 0",
    "bench predictor --session-speed-sigma inf",
    "bench predictor --noise-sigmas nan",
    "bench predictor --trace /nonexistent.csv",
    "bench fairness --min-active-tenants -5",
    "bench des --tenants a:1:bogus",
    "bench des --tenants a:nan",
    "sim --num-gpu-blocks-override 1000000000000",
]


@pytest.mark.parametrize("command", BAD)
def test_a_bad_number_is_a_usage_error_naming_the_flag(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(command.split())
    assert e.value.code == 2
    flag = next(word for word in command.split() if word.startswith("--"))
    assert f"argument {flag}:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        "demo --time-scale 0.5 --sessions 1",
        "bench core --warmup 0",
        "bench faults --spacing 0",
        "bench des --tasks 3",
    ],
)
def test_good_numbers_still_parse(command: str) -> None:
    build_parser().parse_args(command.split())


def test_the_types_say_what_they_need() -> None:
    assert at_least(0)("0") == 0 and positive("1e-3") == 0.001 and non_negative("0") == 0.0
    for parse, text in (
        (at_least(1), "0"),
        (at_least(1), "x"),
        (positive, "0"),
        (positive, "nan"),
        (non_negative, "-1"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_a_demo_whose_tasks_failed_says_why_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Three KV blocks hold no demo task's context: every task fails. The table said 0/2 and the command
    exited 0 with no reason; it now prints the reasons and exits 1 (failed work is a result)."""
    argv = ["demo", "--replicas", "1", "--sessions", "2", "--steps", "2", "--time-scale", "50"]
    assert main([*argv, "--policies", "saga", "--kv-blocks", "3"]) == 1
    out = capsys.readouterr().out
    # (vLLM's refusal of an output limit past the context, as the simulator now words it)
    assert "saga: 2 of 2 tasks failed: " in out and "cannot be greater than max_model_len" in out
    assert main([*argv, "--kv-blocks", "1"]) == 2
