"""`saga bench faults`: agent load through SAGA while faults are injected into the replicas on a schedule.

Contract: the proxy runs as its own process (`python -m proxy.cli serve`, so its memory is measured alone) in
front of simulated replicas that serve faults through their admin API (simulator.faults). Agents run a
mixed workload, half streaming, each retrying a failed call as the OpenAI client does. Every call ends in
exactly one outcome and the report counts them:
- completed: a whole answer;
- failed_clear: an error status with an OpenAI-style error body, or an error event in a stream;
- lost: no answer at all (the connection dropped, or a stream ended without its end event);
- hung: no answer within `hang_after_s` (the proxy's own timeouts plus a margin);
- bad_answer: an answer that does not parse.
`retried_by_proxy` is the proxy's own retry counter where it exports one. The aim is zero lost and zero
hung, whatever the faults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec
import yaml
from rich.console import Console
from rich.table import Table

from loadtests.agent_client import AgentClient
from loadtests.tasks import AgentTask, TaskRecord
from proxy.arg_types import at_least, non_negative, output_file, positive
from proxy.scheduler import PRESETS
from simulator.faults import Fault
from simulator.server import ReplicaFleet, start_fleet


class FaultEvent(msgspec.Struct, frozen=True):
    at_s: float  # wall seconds after the load starts
    replica: int
    fault: Fault


def default_schedule(replicas: int, spacing_s: float = 4.0) -> list[FaultEvent]:
    """Each kind of fault once, on replicas in turn, one at a time: every fault ends before the next."""
    kinds = [
        Fault(kind="error", status=503, duration_s=spacing_s * 0.75),
        Fault(kind="die_mid_stream", after_chunks=2, duration_s=spacing_s * 0.75),
        Fault(kind="hang", duration_s=spacing_s * 0.75),
        Fault(kind="crash", duration_s=spacing_s * 0.75),
        Fault(kind="slow", factor=20.0, duration_s=spacing_s * 0.75),
        Fault(kind="flap_health", period_s=0.5, duration_s=spacing_s * 0.75),
        Fault(kind="error", status=500, duration_s=spacing_s * 0.75),
    ]
    return [FaultEvent(spacing_s * (i + 1), i % replicas, f) for i, f in enumerate(kinds)]


class FaultBenchConfig(msgspec.Struct, kw_only=True):
    replicas: int = 4
    tasks: int = 48
    concurrency: int = 24
    workload: str = "mixed"
    seed: int = 0
    time_scale: float = 50.0
    policy: str = "session-affinity"
    workers: int = 1  # `saga serve --workers`: its processes' memory is summed
    # The proxy's timeouts (wall seconds): short, so that hangs resolve within the run.
    connect_timeout_s: float = 1.0
    first_byte_timeout_s: float = 3.0
    stream_idle_timeout_s: float = 3.0
    health_interval_s: float = 0.5
    client_retries: int = 2
    hang_margin_s: float = 10.0
    max_run_s: float = 180.0
    schedule: list[FaultEvent] | None = None


class FaultReport(msgspec.Struct, kw_only=True):
    config: FaultBenchConfig
    schedule: list[FaultEvent]
    calls_sent: int
    completed: int
    failed_clear: int
    lost: int
    hung: int
    bad_answer: int
    retried_by_client: int
    retried_by_proxy: int | None
    tasks_ok: int
    tasks_failed: int
    failure_reasons: dict[str, int]
    proxy_peak_rss_mb: float
    proxy_rss_start_mb: float
    proxy_rss_end_mb: float
    wall_s: float
    faults_injected: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """`field` of `pid` and every process under it (a proxy with workers is a supervisor and its children),
    summed: for `VmHWM` that is the sum of each process's own peak, an upper bound of the tree's."""
    total = 0
    for each in _process_tree(pid):
        try:
            text = Path(f"/proc/{each}/status").read_text()
        except OSError:  # gone between the listing and the read
            continue
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        total += int(match.group(1)) if match else 0
    return total / 1024


def _process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        each = todo.pop()
        tree.append(each)
        try:
            for task in Path(f"/proc/{each}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return tree


async def _wait_ready(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited with status {proc.returncode} before it was ready")
        try:
            async with http.get(f"{url}/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the proxy never became ready")


def start_proxy(
    config: FaultBenchConfig, replicas: Sequence[str], workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    settings = {
        "replicas": list(replicas),
        "policy": config.policy,
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout_s": config.connect_timeout_s,
        "first_byte_timeout_s": config.first_byte_timeout_s,
        "stream_idle_timeout_s": config.stream_idle_timeout_s,
        "health_interval_s": config.health_interval_s,
        "workers": config.workers,
        # the core's clock runs at the replicas' speed, as `saga serve --simulate N --time-scale K` runs it:
        # learned gaps, holds and retention TTLs in the replicas' seconds (the timeouts above stay wall time)
        "time_scale": config.time_scale,
    }
    path = workdir / "saga.yaml"
    path.write_text(yaml.safe_dump(settings))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = (workdir / "proxy.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


async def _inject(http: aiohttp.ClientSession, fleet: ReplicaFleet, schedule: Sequence[FaultEvent]) -> int:
    start = time.monotonic()
    injected = 0
    for event in schedule:
        await asyncio.sleep(max(0.0, start + event.at_s - time.monotonic()))
        url = fleet.urls[event.replica % len(fleet.urls)]
        async with http.post(f"{url}/saga/v1/faults", data=msgspec.json.encode(event.fault)) as r:
            if r.status != 200:
                raise RuntimeError(f"fault {event.fault} refused: {await r.text()}")
            injected += 1
    return injected


async def _proxy_retries(http: aiohttp.ClientSession, url: str) -> int | None:
    """The proxy's retry counter, if it exports one (`saga_retries_total`)."""
    try:
        async with http.get(f"{url}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    values = re.findall(r"^saga_retries_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(sum(float(v) for v in values)) if values else None


def tally(records: Sequence[TaskRecord]) -> dict[str, int]:
    """Outcome counts over every call attempt of `records`."""
    kinds = Counter(c.error_kind or "completed" for r in records for c in r.calls)
    attempts = sum(len(r.calls) for r in records)
    return {
        "calls_sent": attempts,
        "completed": kinds["completed"],
        "failed_clear": kinds["http"] + kinds["stream_error"],
        "lost": kinds["disconnected"],
        "hung": kinds["timeout"],
        "bad_answer": kinds["bad_answer"],
        "retried_by_client": sum(len(r.calls) - len({c.step for c in r.calls}) for r in records),
    }


class FaultRig:
    """Simulated replicas and a SAGA proxy process in front of them, for as many rounds of load as wanted."""

    def __init__(self, config: FaultBenchConfig) -> None:
        self.config = config
        self.fleet: ReplicaFleet | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="saga-faults-")
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FaultRig:
        self.fleet = await start_fleet(self.config.replicas, time_scale=self.config.time_scale)
        self.proc, self.url = start_proxy(self.config, self.fleet.urls, Path(self._tmp.name))
        self._http = aiohttp.ClientSession()
        await _wait_ready(self._http, self.url, self.proc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.fleet is not None:
            await self.fleet.close()
        self._tmp.cleanup()

    @property
    def proxy_log(self) -> Path:
        """The proxy's output (its log), while the rig is open."""
        return Path(self._tmp.name) / "proxy.log"

    def rss_mb(self, field: str = "VmRSS") -> float:
        assert self.proc is not None
        return _rss_mb(self.proc.pid, field)

    async def round(
        self, tasks: Sequence[AgentTask], schedule: Sequence[FaultEvent]
    ) -> tuple[list[TaskRecord], int, float]:
        """Run `tasks` while `schedule` plays; returns the records, faults injected and the peak RSS seen."""
        config, http = self.config, self._http
        assert http is not None and self.fleet is not None
        hang_after = (
            config.connect_timeout_s
            + config.first_byte_timeout_s
            + config.stream_idle_timeout_s
            + config.hang_margin_s
        )
        clients = [
            AgentClient(
                http,
                self.url,
                time_scale=config.time_scale,
                stream=stream,
                retries=config.client_retries,
                call_timeout_s=hang_after,
            )
            for stream in (False, True)
        ]
        limit = asyncio.Semaphore(config.concurrency)

        async def run(i: int, task: AgentTask) -> TaskRecord:
            async with limit:
                return await clients[i % 2].run_task(task)

        peak = self.rss_mb()
        injector = asyncio.create_task(_inject(http, self.fleet, schedule))
        load = asyncio.gather(*(run(i, t) for i, t in enumerate(tasks)))
        deadline = time.monotonic() + config.max_run_s
        while not load.done() and time.monotonic() < deadline:
            await asyncio.wait([load], timeout=0.5)
            peak = max(peak, self.rss_mb())
        if not load.done():
            load.cancel()
            injector.cancel()
            raise RuntimeError(f"the load did not finish within {config.max_run_s} s")
        return load.result(), await injector, peak

    async def proxy_retries(self) -> int | None:
        assert self._http is not None
        return await _proxy_retries(self._http, self.url)


async def run_fault_bench(config: FaultBenchConfig, tasks: Sequence[AgentTask]) -> FaultReport:
    schedule = config.schedule if config.schedule is not None else default_schedule(config.replicas)
    began = time.monotonic()
    async with FaultRig(config) as rig:
        rss_start = rig.rss_mb()
        records, injected, peak = await rig.round(tasks, schedule)
        retried_by_proxy = await rig.proxy_retries()
        rss_end = rig.rss_mb()
        peak = max(peak, rss_end, rig.rss_mb("VmHWM"))
    failed = [r for r in records if r.calls and r.calls[-1].error is not None]
    reasons = Counter((r.calls[-1].error or "")[:80] for r in failed)
    return FaultReport(
        config=config,
        schedule=list(schedule),
        **tally(records),
        retried_by_proxy=retried_by_proxy,
        tasks_ok=len(records) - len(failed),
        tasks_failed=len(failed),
        failure_reasons=dict(reasons),
        proxy_peak_rss_mb=round(peak, 1),
        proxy_rss_start_mb=round(rss_start, 1),
        proxy_rss_end_mb=round(rss_end, 1),
        wall_s=round(time.monotonic() - began, 1),
        faults_injected=injected,
    )


# -- the command -------------------------------------------------------------------------------------------


def add_faults_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("faults", help="agent load through SAGA while replicas fail on a schedule")
    defaults = FaultBenchConfig()
    p.add_argument("--replicas", type=at_least(1), default=defaults.replicas, help="simulated replicas")
    p.add_argument("--tasks", type=at_least(1), default=defaults.tasks, help="agent tasks to run")
    p.add_argument(
        "--concurrency", type=at_least(1), default=defaults.concurrency, help="agents running at once"
    )
    p.add_argument("--workload", default=defaults.workload, help="the agent workload")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the tasks")
    p.add_argument(
        "--time-scale", type=positive, default=defaults.time_scale, help="simulated time runs K times faster"
    )
    p.add_argument("--policy", choices=sorted(PRESETS), default=defaults.policy, help="the proxy's policy")
    p.add_argument(
        "--workers", type=at_least(1), default=defaults.workers, help="the proxy's worker processes"
    )
    p.add_argument("--spacing", type=non_negative, default=4.0, help="wall seconds between scheduled faults")
    p.add_argument(
        "--max-run-s", type=positive, default=defaults.max_run_s, help="wall seconds the load may take"
    )
    p.add_argument("--json", type=output_file, help="write the report as JSON here")


def run_faults(args: argparse.Namespace, console: Console) -> int:
    """Run the bench; exit status 1 when any call was lost or hung."""
    from loadtests.workloads.catalog import generate

    config = FaultBenchConfig(
        replicas=args.replicas,
        tasks=args.tasks,
        concurrency=args.concurrency,
        workload=args.workload,
        seed=args.seed,
        time_scale=args.time_scale,
        policy=args.policy,
        workers=args.workers,
        max_run_s=args.max_run_s,
        schedule=default_schedule(args.replicas, args.spacing),
    )
    tasks = generate(config.workload, config.tasks, seed=config.seed)
    report = asyncio.run(run_fault_bench(config, tasks))
    table = Table(
        title=f"SAGA under injected faults: {report.faults_injected} faults, {len(tasks)} agent tasks"
    )
    for column in (
        "calls sent",
        "completed",
        "failed (clear error)",
        "lost",
        "hung",
        "retried (client)",
        "retried (proxy)",
        "tasks ok",
        "proxy RSS start/peak/end MB",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.calls_sent),
        str(report.completed),
        str(report.failed_clear),
        str(report.lost),
        str(report.hung),
        str(report.retried_by_client),
        "n/a" if report.retried_by_proxy is None else str(report.retried_by_proxy),
        f"{report.tasks_ok}/{len(tasks)}",
        f"{report.proxy_rss_start_mb:.0f}/{report.proxy_peak_rss_mb:.0f}/{report.proxy_rss_end_mb:.0f}",
    )
    console.print(table)
    for reason, n in sorted(report.failure_reasons.items(), key=lambda kv: -kv[1]):
        console.print(f"  task failed x{n}: {reason}")
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
        console.print(f"results: {args.json}")
    return 1 if report.lost or report.hung else 0
