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
import re
import subprocess
import sys
import time
import urllib.parse
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
def saga_simulated(tmp_path: Path, replicas: int = 2, time_scale: float = TIME_SCALE) -> Iterator[str]:
    """`python3 -m proxy.cli serve --simulate N` on a free loopback port until the block exits."""
    port = free_port()
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", str(replicas)]
    cmd += ["--port", str(port), "--host", "127.0.0.1", "--time-scale", str(time_scale)]
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
    assert burst == [(4, 8, bg), (8, 8, ["BurstTenantAgent"]), (4, 8, bg)]


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


@pytest.mark.parametrize("named", [[], ["SweAgent"]])
def test_the_burst_shape_adds_its_own_users_to_a_steady_background(tmp_path: Path, named: list[str]) -> None:
    """`--shape burst -u 8`: 4 background users throughout, 4 `BurstTenantAgent` users in the middle third.
    Before the forty-fourth session's fix the middle third ran 2 burst users beside a background grown to 6,
    and with a class named on the command line (as the locustfile's docstring shows) no burst at all."""
    prefix = tmp_path / "run"
    with saga_simulated(tmp_path) as url:
        cmd = locust_cmd(url, prefix, *named, "--headless", "-u", "8", "-r", "8", "-t", "12s")
        cmd += ["--shape", "burst", "--no-stream", "--stop-timeout", "0"]
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=120)
    output = (done.stderr + done.stdout).decode()
    spawned = [json.loads(m) for m in re.findall(r"All users spawned: (\{.*?\})", output)]
    assert spawned, output[-3000:]
    peak = max(spawned, key=lambda counts: sum(counts.values()))
    background = {k: v for k, v in peak.items() if k != "BurstTenantAgent"}
    assert peak.get("BurstTenantAgent") == 4 and sum(background.values()) == 4, spawned
    assert all(sum(c.values()) == 4 and not c.get("BurstTenantAgent") for c in (spawned[0], spawned[-1]))
    if named:
        assert set(background) == {"SweAgent"}, spawned


@pytest.mark.parametrize("ended", [True, False])
def test_each_task_ends_its_session(tmp_path: Path, ended: bool) -> None:
    """The load generator never ended a session: every task's stayed on the proxy for its idle TTL (an hour)
    and `saga_task_completion_seconds`, the dashboard's task completion panel, stayed empty. Now each task's
    last call says `X-Session-End: true`, and a task stopped mid-way (`--stop-timeout 0`) ends its session
    through the session API; `--no-session-end` leaves them, as agents that never say so do."""
    prefix = tmp_path / "run"
    with saga_simulated(tmp_path) as url:
        cmd = locust_cmd(url, prefix, "--headless", "-u", "4", "-r", "4", "-t", "8s", "WebArenaAgent")
        cmd += ["--stop-timeout", "0", *([] if ended else ["--no-session-end"])]
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        time.sleep(1.0)  # the stopped users' last calls finish on the replicas
        with urllib.request.urlopen(f"{url}/saga/v1/sessions") as r:
            live = json.loads(r.read())["total"]
        with urllib.request.urlopen(f"{url}/metrics") as r:
            metrics = r.read().decode()
    tasks = count(stats_rows(prefix), "agent_task")
    counted = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("saga_task_completion_seconds_count")
    )
    assert tasks > 0
    if ended:
        assert live == 0 and counted >= tasks, (live, counted, tasks)
    else:
        assert live >= tasks and counted == 0, (live, counted, tasks)


def test_the_request_timeout_bounds_a_whole_streamed_call(tmp_path: Path) -> None:
    """`--request-timeout` was requests' timeout, which bounds each read alone: a stream whose tokens kept
    coming (every ~20 ms from a real-time simulated replica) ran for seconds past a 0.5 s limit and none
    failed. Now a call past it fails as a timeout."""
    prefix = tmp_path / "run"
    with saga_simulated(tmp_path, time_scale=1.0) as url:
        cmd = locust_cmd(url, prefix, "--headless", "-u", "2", "-r", "2", "-t", "4s", "WebArenaAgent")
        cmd = [c for c in cmd if c != str(TIME_SCALE) and c != "--time-scale"]
        cmd += ["--request-timeout", "0.5", "--stop-timeout", "5"]
        subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=120)  # failures: exit 1
    rows = stats_rows(prefix)
    chats = [r for r in rows if r["Type"] == "chat"]
    assert chats and max(float(r["Max Response Time"]) for r in chats) < 1500, chats  # cut near 0.5 s
    with open(f"{prefix}_failures.csv", newline="") as f:
        assert any("--request-timeout (0.5 s)" in r["Error"] for r in csv.DictReader(f))


@pytest.mark.parametrize(
    "option",
    [
        "--time-scale=nan",
        "--time-scale=0",
        "--time-scale=-2",
        "--request-timeout=0",
        "--tenant-mix=a:x",
        "--tenant-mix=a:1:platinum",
    ],
)
def test_a_bad_option_value_stops_locust_at_start(tmp_path: Path, option: str) -> None:
    """`--time-scale nan` hung past `-t` (every task raised), 0 raised on every task, -2 reported negative
    times, `--request-timeout 0` made no request: each is now argparse's one-line error, at start. A bad
    tenant mix stopped Locust with a traceback through its event hook, and an unknown SLO class was taken
    without a word (the forty-fourth session's review): now a one-line error too."""
    cmd = locust_cmd("http://127.0.0.1:9", tmp_path / "run", "--headless", "-u", "1", "-r", "1", "-t", "30s")
    cmd = [c for c in cmd if c != str(TIME_SCALE) and c != "--time-scale"] + [option]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2 and option.split("=")[0] in err and "Traceback" not in err, err[-2000:]


def test_failed_tasks_are_grouped_by_cause_not_listed_one_row_each(tmp_path: Path) -> None:
    """A task's failure is reported by its cause (the session id goes in the context): one row per task made
    Locust's failure table grow without bound and impossible to read. And on a row of its own,
    `agent_task_failed`: on the `agent_task` row a task refused at its first call put its few milliseconds
    into the completion times (the forty-fourth session's review: a median of 69 ms)."""
    prefix = tmp_path / "run"
    cmd = locust_cmd(f"http://127.0.0.1:{free_port()}", prefix, "--headless", "-u", "2", "-r", "2")
    cmd += ["-t", "3s", "--stop-timeout", "5", "WebArenaAgent"]
    subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=60)  # every call refused: exit 1
    stats = stats_rows(prefix)
    failed_tasks = sum(int(r["Failure Count"]) for r in stats if r["Type"] == "agent_task_failed")
    with open(f"{prefix}_failures.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Method"] == "agent_task_failed"]
    assert failed_tasks >= 4 and 1 <= len(rows) <= 2, rows
    assert count(stats, "agent_task") == 0, stats  # no task finished: no completion time


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


@pytest.mark.parametrize(
    "field",
    [{"time_scale": "0"}, {"tenant_mix": "a:x"}, {"tenant_mix": "a:1:platinum"}, {"request_timeout": "nan"}],
)
def test_a_bad_value_from_the_web_ui_stops_the_run_saying_why(tmp_path: Path, field: dict[str, str]) -> None:
    """The web UI's "Custom parameters" reach the options with Locust's own conversion alone: `time_scale=0`
    ran with every time 0 ms and a division by zero per task, `tenant_mix=a:x` ran no user at all, both
    shown as running. Now the run stops at once and the Exceptions tab says why."""
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "WebArenaAgent", "--web-host", "127.0.0.1"]
    cmd += ["--web-port", str(port), "--host", "http://127.0.0.1:9"]
    web = f"http://127.0.0.1:{port}"
    with open(tmp_path / "web.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{web}/", timeout=2):
                break
            time.sleep(0.5)
        form = {"user_count": "2", "spawn_rate": "2", "host": "http://127.0.0.1:9", **field}
        urllib.request.urlopen(f"{web}/swarm", urllib.parse.urlencode(form).encode(), timeout=10).close()
        state = ""
        while state != "stopped":
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
            with urllib.request.urlopen(f"{web}/stats/requests", timeout=10) as r:
                state = json.loads(r.read())["state"]
        with urllib.request.urlopen(f"{web}/exceptions", timeout=10) as r:
            messages = [e["msg"] for e in json.loads(r.read())["exceptions"]]
    finally:
        stop(proc)
    name = "--" + next(iter(field)).replace("_", "-")
    assert any(m.startswith("the run is stopped: ") and name in m for m in messages), messages


@pytest.mark.parametrize("shape", ["none", "burst"])
def test_distributed_master_and_two_workers(tmp_path: Path, shape: str) -> None:
    """`--shape burst`: the workers (their own `--shape` the default) dropped `BurstTenantAgent` and every
    spawn from the master failed with a KeyError, the background's too (the forty-fourth session's
    review of its fixes)."""
    prefix = tmp_path / "dist"
    port = free_port()
    with saga_simulated(tmp_path) as url:
        master_cmd = locust_cmd(url, prefix, "--master", "--headless", "--expect-workers", "2")
        master_cmd += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        master_cmd += ["-u", "8", "-r", "8", "-t", "12s", "--tenant-mix", "tiers", "WebArenaAgent"]
        master_cmd += ["--shape", shape]
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
    tenants = {r["Name"].split("/")[0] for r in rows}
    if shape == "burst":  # and the burst's own tenant ran beside them
        assert "burst" in tenants and count([r for r in rows if r["Name"].startswith("burst/")], "chat"), rows
        tenants.discard("burst")
    assert tenants <= {"gold", "silver", "bronze"}
