"""`saga bench overhead`: wrk output parsing, and one tiny run when nginx and wrk are installed."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from loadtests.bench.overhead import parse_wrk, run_overhead

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8000/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  20.00ms   90.00%
  Latency Distribution
     50%  850.00us
     75%    2.10ms
     90%    4.00ms
     99%    1.20s
  30000 requests in 3.00s, 10.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  10000.50
Transfer/sec:      3.33MB
"""


def test_wrk_output_is_parsed_with_units() -> None:
    assert parse_wrk(WRK_OUTPUT) == (10000.5, 0.85, 1200.0, 12, 30000)


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
def test_a_tiny_overhead_run_measures_direct_and_saga(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    args = argparse.Namespace(
        json=out, rounds=1, duration=1.0, connections=4, modes="json,sse", targets="direct,saga", saga_args=""
    )
    assert run_overhead(args) == 0
    report = json.loads(out.read_text())
    for mode in ("json", "sse"):
        direct, saga = report["modes"][mode]["direct"], report["modes"][mode]["saga"]
        assert direct["rps"] > 0 and saga["rps"] > 0
        assert saga["rounds"][0]["non_2xx"] == 0  # every call went through the proxy intact
        assert saga["cpu_us_per_request"] is not None and direct["cpu_us_per_request"] is None
