"""`saga bench overhead`: wrk output parsing, and one tiny run when nginx and wrk are installed."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadtests.bench import overhead, paced_backend
from loadtests.bench.overhead import add_overhead_parser, parse_wrk, request_fields, run_overhead, wrk_script

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


def _tiny_run(out: Path, **options: object) -> argparse.Namespace:
    """`saga bench overhead`'s arguments for one 1-second round of direct and saga, 4 connections."""
    return argparse.Namespace(
        json=out, rounds=1, duration=1.0, connections=4, targets="direct,saga", saga_args="", **options
    )


@pytest.mark.parametrize(
    "flag,value",
    [("--paced-interval-ms", v) for v in ("nan", "inf", "-1")]
    + [("--paced-events", v) for v in ("0", "-3", "1.5")],
)
def test_paced_options_refuse_what_cannot_pace(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_overhead_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["overhead", flag, value])
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "fast"])
def test_rate_refuses_what_cannot_pace(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_overhead_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["overhead", "--rate", value])
    assert "--rate" in capsys.readouterr().err


def test_a_paced_script_waits_connections_over_rate_on_average_after_each_answer() -> None:
    unpaced = wrk_script('{"a": "b"}', 32, None)
    assert "delay" not in unpaced and 'wrk.body = "{\\"a\\": \\"b\\"}"' in unpaced
    paced = wrk_script('{"a": "b"}', 32, 2000.0)
    # 32 connections / 2000 per s = 16 ms on average, drawn afresh each time (one fixed pause kept the
    # connections in step: bursts of 32 calls); wrk truncates a pause to whole ms, hence the half
    assert paced.startswith(unpaced) and "return math.random() * 32.000 + 0.5" in paced
    # every wrk thread seeds its own sequence: threads drawing alike would pause in step again
    per_thread = wrk_script('{"a": "b"}', 8, 100.0, "per-connection")
    assert 'thread:set("seed", threads + 1)' in per_thread and "math.randomseed(seed)" in per_thread
    assert 'thread:set("session", "agent-" .. threads)' in per_thread


def test_session_scripts_name_a_session_per_connection_or_per_request() -> None:
    plain = wrk_script('{"a": "b"}', 8, None)
    assert "X-Session-Id" not in plain
    per_connection = wrk_script('{"a": "b"}', 8, None, "per-connection")
    # each wrk thread (one per connection) sets its own id before wrk formats its one request
    assert 'thread:set("session", "agent-" .. threads)' in per_connection
    assert 'function init(args)\n  wrk.headers["X-Session-Id"] = session' in per_connection
    pooled = wrk_script('{"a": "b"}', 8, 100.0, "pooled")
    assert '"agent-" .. (sent % 8)' in pooled and "return wrk.format()" in pooled and "delay" in pooled


def test_wrk_output_is_parsed_with_units() -> None:
    assert parse_wrk(WRK_OUTPUT) == (10000.5, 0.85, 1200.0, 12, 30000)


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
def test_a_tiny_overhead_run_measures_direct_and_saga(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    assert run_overhead(_tiny_run(out, modes="json,sse", backend="nginx")) == 0
    report = json.loads(out.read_text())
    for mode in ("json", "sse"):
        direct, saga = report["modes"][mode]["direct"], report["modes"][mode]["saga"]
        assert direct["rps"] > 0 and saga["rps"] > 0
        assert saga["rounds"][0]["non_2xx"] == 0  # every call went through the proxy intact
        assert saga["cpu_us_per_request"] is not None and direct["cpu_us_per_request"] is None


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
def test_a_paced_run_offers_about_the_rate_asked(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    assert run_overhead(_tiny_run(out, modes="json", backend="nginx", rate=100.0)) == 0
    report = json.loads(out.read_text())
    assert report["rate"] == 100.0
    for target in ("direct", "saga"):
        result = report["modes"]["json"][target]
        # 4 connections each waiting 40 ms after every answer stay near 100 requests/s (wrk sends each
        # connection's first request at once, hence the margin); unpaced, it answers thousands a second
        assert 0 < result["rps"] <= 120.0 and result["rounds"][0]["non_2xx"] == 0


async def test_the_paced_backend_writes_each_event_on_its_own() -> None:
    server = await paced_backend.start(0, events=5, interval_ms=20.0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"stream": true}'
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
            % (len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"text/event-stream" in head and b"chunked" in head
        reads = []
        while not reads or not reads[-1].endswith(b"0\r\n\r\n"):
            reads.append(await asyncio.wait_for(reader.read(65536), 10))
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    stream = b"".join(reads)
    assert stream == b"".join(paced_backend.stream_events(5))
    assert stream.count(b'"content":" tok') == 5 and b"data: [DONE]" in stream
    assert len(reads) >= 5  # 20 ms apart: the events arrive in separate reads, not as one segment


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
def test_a_tiny_paced_run_streams_through_saga(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    assert (
        run_overhead(_tiny_run(out, modes="sse", backend="paced", paced_events=4, paced_interval_ms=1.0)) == 0
    )
    report = json.loads(out.read_text())
    assert report["backend"].startswith("paced")
    saga = report["modes"]["sse"]["saga"]
    assert saga["rps"] > 0 and saga["rounds"][0]["non_2xx"] == 0


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
@pytest.mark.parametrize("sessions", ["per-connection", "pooled"])
def test_a_tiny_run_measures_saga_workers_with_sessions(tmp_path: Path, sessions: str) -> None:
    out = tmp_path / "overhead.json"
    args = _tiny_run(out, modes="json", backend="nginx", sessions=sessions, saga_workers=2)
    args.targets = "saga-workers"
    assert run_overhead(args) == 0
    report = json.loads(out.read_text())
    assert report["sessions"] == sessions and report["saga_workers"] == 2
    workers = report["modes"]["json"]["saga-workers"]
    assert workers["rps"] > 0 and workers["rounds"][0]["non_2xx"] == 0
    assert workers["cpu_us_per_request"] is not None


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None, reason="needs nginx and wrk"
)
def test_a_tiny_run_sends_a_long_agent_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--request long`: every call carries the ~470 KB conversation of an agent 160 turns in, and goes
    through the proxy intact (the proxy reads it whole: a body it refused would be a non-2xx answer)."""
    bodies: list[str] = []
    script_of = overhead.wrk_script

    def recording(body: str, *args: Any, **kwargs: Any) -> str:
        bodies.append(body)
        return script_of(body, *args, **kwargs)

    monkeypatch.setattr(overhead, "wrk_script", recording)
    out = tmp_path / "overhead.json"
    args = _tiny_run(out, modes="json", backend="nginx", sessions="per-connection", request="long")
    assert run_overhead(args) == 0
    report = json.loads(out.read_text())
    assert report["request"] == "long"
    saga = report["modes"]["json"]["saga"]
    assert saga["rps"] > 0 and saga["rounds"][0]["non_2xx"] == 0
    assert len(bodies) == 1 and len(bodies[0]) > 400_000
    assert json.loads(bodies[0])["messages"] == request_fields("long")["messages"]
