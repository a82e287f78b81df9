"""The agent locustfile: its pure parts in-process, and bounded Locust runs (headless, and one master with two
workers) against `saga serve --simulate` on loopback, read back from Locust's CSV output.

Locust is only ever run as a subprocess: importing it monkey-patches the whole process with gevent.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests import locust_shapes
from loadtests.agent_client import AgentClient
from loadtests.locust_client import LocustAgentClient
from loadtests.locust_options import TaskSource, parse_tenant_mix
from loadtests.tasks import AgentTask, Step
from loadtests.workloads.catalog import generate
from simulator.server import start_fleet
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (in the test extra)"
)  # found, not imported: importing locust would gevent-patch the test process

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
TIME_SCALE = 50.0  # simulated replicas 50x faster than real time; Locust scales its tool waits to match
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 15)


@contextlib.contextmanager
def saga_simulated(tmp_path: Path, replicas: int = 2) -> Iterator[str]:
    """`python3 -m proxy.cli serve --simulate N` on a free loopback port until the block exits."""
    port = free_port()
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", str(replicas)]
    cmd += ["--port", str(port), "--host", "127.0.0.1", "--time-scale", str(TIME_SCALE)]
    with open(tmp_path / "saga.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "saga.log").read_text()
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "saga serve did not come up"
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)


def locust_cmd(url: str, csv_prefix: Path, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url]
    cmd += ["--time-scale", str(TIME_SCALE), "--csv", str(csv_prefix), "--only-summary"]
    return [*cmd, *args]


def stats_rows(csv_prefix: Path) -> list[dict[str, str]]:
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]


def count(rows: list[dict[str, str]], kind: str) -> int:
    return sum(int(r["Request Count"]) for r in rows if r["Type"] == kind)


# ---- the pure parts ----------------------------------------------------------------------------------


def test_tenant_mix_presets_and_explicit_mixes() -> None:
    tiers = parse_tenant_mix("tiers")
    assert [(t.tenant, t.weight, t.slo_class) for t in tiers] == [
        ("gold", 1.0, "interactive"),
        ("silver", 2.0, "standard"),
        ("bronze", 4.0, "batch"),
    ]
    mix = parse_tenant_mix("a:2,b::batch:webarena")
    assert [(t.tenant, t.weight, t.slo_class, t.workload) for t in mix] == [
        ("a", 2.0, "standard", "auto"),
        ("b", 1.0, "batch", "webarena"),
    ]
    for bad in ("a:x", "a:-1", "a:1:s:nosuch", ":1", "", "a:1:s:swe:extra", "a:nan,b:1", "a:inf,b:1"):
        with pytest.raises(ValueError):
            parse_tenant_mix(bad)


def test_task_source_draws_tenants_by_weight_with_unique_sessions() -> None:
    source = TaskSource("webarena", parse_tenant_mix("a:3,b:1:batch:swe"), seed=1, user_key="u0")
    tasks = [source.next() for _ in range(200)]
    assert len({t.session_id for t in tasks}) == 200
    by_tenant = {t: [x for x in tasks if x.tenant_id == t] for t in ("a", "b")}
    assert {x.agent_type for x in by_tenant["a"]} == {"browser-agent"}  # the user's workload
    assert {x.agent_type for x in by_tenant["b"]} == {"swe-agent"} and {
        x.slo_class for x in by_tenant["b"]
    } == {"batch"}
    assert 100 < len(by_tenant["a"]) < 190  # weight 3:1
    again = TaskSource("webarena", parse_tenant_mix("a:3,b:1:batch:swe"), seed=1, user_key="u0")
    assert [t.steps for t in tasks[:5]] == [again.next().steps for _ in range(5)]


def test_shapes() -> None:
    def ramp(t: float) -> object:
        return locust_shapes.plan("ramp", t, users=10, spawn_rate=5, run_time_s=100)

    assert ramp(0) == (1, 5) and ramp(25) == (5, 5) and ramp(50) == (10, 5) and ramp(99) == (10, 5)
    assert ramp(100) is None
    steps = [locust_shapes.plan("step", t, users=8, spawn_rate=8, run_time_s=40) for t in (0, 10, 20, 39)]
    assert steps == [(2, 8), (4, 8), (6, 8), (8, 8)]
    bg = ["SweAgent"]
    burst = [
        locust_shapes.plan("burst", t, users=8, spawn_rate=8, run_time_s=30, background=bg)
        for t in (0, 15, 25)
    ]
    assert burst == [(4, 8, bg), (8, 8, ["SweAgent", "BurstTenantAgent"]), (4, 8, bg)]


async def test_locust_client_renders_the_same_conversation_as_the_async_client() -> None:
    """Both clients send each call of a task with the same prompt: the rendering is shared, not copied."""
    base = generate("swe", 1, seed=4)[0]
    steps = [Step(s.output_tokens, s.tool_name, 0.0, s.observation_tokens) for s in base.steps[:4]]
    fleet = await start_fleet(1, time_scale=1000.0)
    try:
        for stream in (False, True):
            task = AgentTask(
                f"render-{stream}",
                base.system_tokens,
                base.task_tokens,
                steps,
                agent_type="swe-agent",
                seed=9,
            )
            async with aiohttp.ClientSession() as http:
                reference = await AgentClient(http, fleet.urls[0], stream=stream).run_task(task)
            seen: list[dict[str, str]] = []
            sync = LocustAgentClient(
                fleet.urls[0],
                model="saga-sim",
                time_scale=1.0,
                stream=stream,
                request_timeout_s=60,
                on_call=lambda call, headers, seen=seen: seen.append(headers),
            )
            try:
                record = await asyncio.to_thread(sync.run_task_sync, task)
            finally:
                sync.close()
            assert not record.failed and len(record.calls) == 4
            assert [c.prompt_tokens for c in record.calls] == [c.prompt_tokens for c in reference.calls]
            assert [c.completion_tokens for c in record.calls] == [s.output_tokens for s in steps]
            assert all(c.ttft_s is not None and c.ttft_s <= c.latency_s for c in record.calls)
            assert record.calls[-1].cached_tokens > 0  # the same session again: its prefix is cached
            assert {h["X-Session-ID"] for h in seen} == {task.session_id} and len(seen) == 4
    finally:
        await fleet.close()


# ---- Locust runs -------------------------------------------------------------------------------------


def test_headless_run_reports_finished_agent_tasks_and_no_failures(tmp_path: Path) -> None:
    prefix = tmp_path / "run"
    with saga_simulated(tmp_path) as url:
        cmd = locust_cmd(url, prefix, "--headless", "-u", "8", "-r", "8", "-t", "12s", "WebArenaAgent")
        cmd += ["--tenant-mix", "two-tenants"]
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rows = stats_rows(prefix)
    assert count(rows, "agent_task") > 0, rows
    assert count(rows, "chat") > count(rows, "agent_task") and count(rows, "ttft") == count(rows, "chat")
    assert sum(int(r["Failure Count"]) for r in rows) == 0, rows
    names = {r["Name"] for r in rows}
    assert {"team-a/browser-agent", "team-b/browser-agent"} <= names
    tasks = [r for r in rows if r["Type"] == "agent_task"]
    chats = {r["Name"]: r for r in rows if r["Type"] == "chat"}
    for row in tasks:  # a task's completion time spans several calls
        assert float(row["Average Response Time"]) > float(chats[row["Name"]]["Average Response Time"])


@pytest.mark.parametrize(
    "option", ["--time-scale=nan", "--time-scale=0", "--time-scale=-2", "--request-timeout=0"]
)
def test_a_bad_option_value_stops_locust_at_start(tmp_path: Path, option: str) -> None:
    """`--time-scale nan` hung past `-t` (every task raised), 0 raised on every task, -2 reported negative
    times, `--request-timeout 0` made no request: each is now argparse's one-line error, at start."""
    cmd = locust_cmd("http://127.0.0.1:9", tmp_path / "run", "--headless", "-u", "1", "-r", "1", "-t", "30s")
    cmd = [c for c in cmd if c != str(TIME_SCALE) and c != "--time-scale"] + [option]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2 and option.split("=")[0] in err and "Traceback" not in err, err[-2000:]


def test_failed_tasks_are_grouped_by_cause_not_listed_one_row_each(tmp_path: Path) -> None:
    """A task's failure is reported by its cause (the session id goes in the context): one row per task made
    Locust's failure table grow without bound and impossible to read."""
    prefix = tmp_path / "run"
    cmd = locust_cmd(f"http://127.0.0.1:{free_port()}", prefix, "--headless", "-u", "2", "-r", "2")
    cmd += ["-t", "3s", "--stop-timeout", "5", "WebArenaAgent"]
    subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=60)  # every call refused: exit 1
    failed_tasks = sum(int(r["Failure Count"]) for r in stats_rows(prefix) if r["Type"] == "agent_task")
    with open(f"{prefix}_failures.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Method"] == "agent_task"]
    assert failed_tasks >= 4 and 1 <= len(rows) <= 2, rows


def test_web_ui_shows_the_agent_options(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1"]
    cmd += ["--web-port", str(port), "--host", "http://127.0.0.1:9"]
    with open(tmp_path / "web.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        page = ""
        deadline = time.monotonic() + 60
        while "templateArgs" not in page:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            time.sleep(0.5)
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
                page = r.read().decode()
    finally:
        stop(proc)
    args = json.loads(page.split("window.templateArgs = ", 1)[1].split("\n", 1)[0])
    shown = set(args["extra_options"])
    assert {"workload", "tenant_mix", "time_scale", "model"} <= shown and "shape" not in shown
    assert args["extra_options"]["tenant_mix"]["default_value"] == "single"


def test_distributed_master_and_two_workers(tmp_path: Path) -> None:
    prefix = tmp_path / "dist"
    port = free_port()
    with saga_simulated(tmp_path) as url:
        master_cmd = locust_cmd(url, prefix, "--master", "--headless", "--expect-workers", "2")
        master_cmd += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        master_cmd += ["-u", "8", "-r", "8", "-t", "12s", "--tenant-mix", "tiers", "WebArenaAgent"]
        worker_cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker"]
        worker_cmd += ["--master-host", "127.0.0.1", "--master-port", str(port)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for name, cmd in (("master", master_cmd), ("w1", worker_cmd), ("w2", worker_cmd)):
                with open(tmp_path / f"{name}.log", "wb") as log:
                    procs.append(
                        subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
                    )
            # --expect-workers 2: the master starts the run only once both workers have connected
            master_rc = procs[0].wait(timeout=180)
        finally:
            for proc in procs:
                stop(proc)
    master_log = (tmp_path / "master.log").read_text()
    assert master_rc == 0, master_log[-3000:]
    rows = stats_rows(prefix)
    assert count(rows, "agent_task") > 0, rows
    assert sum(int(r["Failure Count"]) for r in rows) == 0, rows
    # the master's own options reached the workers: tasks carry the master's tenant mix
    assert {r["Name"].split("/")[0] for r in rows} <= {"gold", "silver", "bronze"}
