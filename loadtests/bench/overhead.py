"""`saga bench overhead`: what a router adds in front of a backend that is never the bottleneck.

SAGA, vllm-router (`round_robin`), sglang-router (`round_robin`) and no router at all ("direct") stand in
front of nginx answering a fixed OpenAI chat completion (JSON) or a fixed SSE stream, on loopback. One load
generator (wrk, one thread, `--connections` connections) drives every target in alternating rounds, so
drift on the machine hits all of them alike. Per round and target: requests/s, p50/p99 latency, non-2xx
answers and the router process's CPU time per request (utime + stime from /proc/<pid>/stat, all threads).
Reported: medians over rounds, latency added over direct, and throughput ratios against vllm-router.
`saga-aiohttp` (SAGA with `--server aiohttp`, not run by default) compares SAGA's two client-facing servers;
`saga-workers` (not run by default) is SAGA with `--workers N` (`--saga-workers`; its CPU is the supervisor's
and its workers'). `--sessions` says whether the load carries session ids: none (every call repeats one
conversation opening, so N workers would hand every call to one owner), per-connection (an agent per
connection, as agents hold theirs) or pooled (sessions rotating over connections per request: the worst
case for hand-offs).
`--backend paced` streams as vLLM does instead (loadtests/bench/paced_backend.py: one event per write, a few
ms apart), so a router's per-chunk cost shows; its non-streaming answers are nginx's.
`--rate R` paces the load below saturation: each connection waits `connections / R` seconds after each
answer before its next request (wrk's `delay()`), so every target sees about the same offered load and the
latency columns say what a router adds when it is not the bottleneck (closed loop with a fixed think time:
the achieved rate is a little under R, by each answer's own latency, and is reported).

Contract: `run_overhead(args)` writes the results to `--json` (and prints a table); a router whose package is
missing is skipped with the reason recorded; nginx and wrk are required (`apt-get install -y nginx wrk`).
Every process it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec

from loadtests.bench.peers import RouterSpec, peer_command, unavailable
from loadtests.bench.report import recorded_command
from proxy.arg_types import at_least, non_negative, output_file, positive
from saga_native import build_description

CHAT_JSON = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
)
_CHUNK = (
    '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    '"delta":{"content":"%s"}}]}'
)
CHAT_SSE = (
    "".join(
        "data: " + _CHUNK % word + "\\n\\n" for word in ("Hello", "!", " How", " can", " I", " help", "?")
    )
    + 'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    '"delta":{},"finish_reason":"stop"}]}\\n\\n'
    + 'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    '"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}\\n\\n' + "data: [DONE]\\n\\n"
)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
# `--request`: the body each call sends: `plain` (the line above), or a coding agent's call
# (loadtests/bench/call_cost.py: `agent`, 24 KB; `long`, the same agent 160 turns later, ~470 KB)
REQUEST_KINDS = ("plain", "agent", "long")
TARGETS = ("direct", "saga", "saga-workers", "saga-aiohttp", "vllm-router", "sglang-router")
SESSION_LOADS = ("none", "per-connection", "pooled")
DEFAULT_TARGETS = ("direct", "saga", "vllm-router", "sglang-router")


class Round(msgspec.Struct):
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_us_per_request: float | None


class TargetResult(msgspec.Struct):
    rounds: list[Round] = msgspec.field(default_factory=list)
    skipped: str | None = None
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    cpu_us_per_request: float | None = None
    rps_vs_vllm_router: float | None = None


class OverheadReport(msgspec.Struct):
    date: str
    machine: str
    command: str
    connections: int
    duration_s: float
    rounds: int
    backend: str
    load_generator: str
    modes: dict[str, dict[str, TargetResult]]
    rate: float | None = None  # paced: requests/s offered over all connections; None: as fast as answered
    sessions: str = "none"  # how the load names sessions (`--sessions`)
    request: str = "plain"  # the body each call sends (`--request`)
    saga_workers: int | None = None  # the `saga-workers` target's `--workers`


def wrk_script(request_body: str, connections: int, rate: float | None, sessions: str = "none") -> str:
    """wrk's Lua script: POST `request_body`; paced at `rate` requests/s over `connections` when given.

    `sessions`: none (no session id: every call repeats one conversation opening), per-connection (as agents
    holding their connections: wrk runs a thread per connection, each sending its own `X-Session-Id`), or
    pooled (a client pooling connections across agents: the session rotates over `connections` ids per
    request, so a connection carries every session in turn)."""
    script = (
        f'wrk.method = "POST"\nwrk.body = {msgspec.json.encode(request_body).decode()}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    # `setup` runs once per wrk thread, in the main Lua state; `init` in the thread's own state, before wrk
    # formats the thread's one request
    setup, init = [], []
    if sessions == "per-connection":
        setup.append('thread:set("session", "agent-" .. threads)')
        init.append('wrk.headers["X-Session-Id"] = session')
    if rate is not None:  # each thread's own random sequence: threads seeded alike would pause in step
        setup.append('thread:set("seed", threads + 1)')
        init.append("math.randomseed(seed)")
    if setup:
        script += "local threads = 0\nfunction setup(thread)\n"
        script += "".join(f"  {line}\n" for line in setup) + "  threads = threads + 1\nend\n"
        script += "function init(args)\n" + "".join(f"  {line}\n" for line in init) + "end\n"
    if sessions == "pooled":
        script += (
            "local sent = 0\n"
            "function request()\n  sent = sent + 1\n"
            f'  wrk.headers["X-Session-Id"] = "agent-" .. (sent % {connections})\n'
            "  return wrk.format()\nend\n"
        )
    if rate is not None:
        # A pause drawn between 0 and twice the mean, not the mean itself: with one fixed pause the
        # connections, all started at once, stay in step and send in bursts of `connections` calls, which a
        # router serves one after another (the latency added is then half a burst's service time, not what
        # it adds when it is not the bottleneck); + 0.5 since wrk truncates the pause to whole milliseconds
        mean_ms = 1000.0 * connections / rate
        script += f"function delay()\n  return math.random() * {2.0 * mean_ms:.3f} + 0.5\nend\n"
    return script


def add_overhead_parser(modes: Any) -> None:
    p = modes.add_parser("overhead", help="router overhead: SAGA vs vllm-router vs sglang-router vs direct")
    p.add_argument("--json", type=output_file, help="write the results as JSON here")
    p.add_argument(
        "--rounds", type=at_least(1), default=3, help="alternating rounds per mode (default: %(default)s)"
    )
    p.add_argument(
        "--duration", type=positive, default=5.0, help="seconds per target per round (default: %(default)s)"
    )
    p.add_argument(
        "--connections", type=at_least(1), default=32, help="wrk connections (default: %(default)s)"
    )
    p.add_argument(
        "--modes", default="json,sse", help="json (non-streaming), sse (streaming); default: %(default)s"
    )
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated subset of "
        + ", ".join(TARGETS)
        + " (saga-workers: SAGA with `--workers N`; saga-aiohttp: SAGA with `--server aiohttp`); "
        "default: %(default)s",
    )
    p.add_argument(
        "--saga-workers",
        type=at_least(1),
        default=2,
        metavar="N",
        help="worker processes of the saga-workers target (default: %(default)s)",
    )
    p.add_argument(
        "--sessions",
        choices=SESSION_LOADS,
        default="none",
        help="session ids the load carries: none; per-connection (one agent per connection, wrk with a "
        "thread per connection); pooled (sessions rotating over the connections per request); "
        "default: %(default)s",
    )
    p.add_argument(
        "--rate",
        type=positive,
        default=None,
        help="pace the load at about this many requests/s over all connections, below saturation "
        "(default: as fast as answered)",
    )
    p.add_argument(
        "--request",
        choices=REQUEST_KINDS,
        default="plain",
        help="the body each call sends: plain (a one-line chat call), agent (a coding agent's call, 24 KB), "
        "long (the same agent 160 turns later, ~470 KB); default: %(default)s",
    )
    p.add_argument("--saga-args", default="", help="extra `saga serve` flags, e.g. '--policy round-robin'")
    p.add_argument(
        "--backend",
        choices=("nginx", "paced"),
        default="nginx",
        help="nginx: the whole stream in one write; paced: one event per write, like vLLM "
        "(loadtests/bench/paced_backend.py); default: %(default)s",
    )
    p.add_argument(
        "--paced-events", type=at_least(1), default=16, help="content events per paced stream (default: 16)"
    )
    p.add_argument(
        "--paced-interval-ms",
        type=non_negative,
        default=2.0,
        help="between a paced stream's events (default: 2)",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotStarted(RuntimeError):
    """A router or backend did not come up: it exited (its own error in the message) or never answered."""


def _wait_http(
    url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:  # exited: say why at once, not after the timeout
            said = log.read_text(errors="replace").strip().splitlines()[-3:] if log is not None else []
            command = " ".join(str(a) for a in cast(list[str], proc.args))
            raise NotStarted(f"{command} exited with status {proc.returncode}: {' '.join(said)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise NotStarted(f"{url} did not come up within {timeout_s:g} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _nginx_conf(workdir: Path, port: int, body: str, content_type: str) -> Path:
    conf = workdir / f"nginx-{port}.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {workdir}/nginx-{port}.pid;
error_log {workdir}/nginx-{port}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body-{port};
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{ return 200 ''; }}
        location = /metrics {{ default_type text/plain; return 200 ''; }}
        location = /get_load {{ default_type application/json; return 200 '{{"load": 0}}'; }}
        location / {{ default_type {content_type}; return 200 '{body}'; }}
    }}
}}
"""
    )
    return conf


@contextlib.contextmanager
def _started(cmd: list[str], health_url: str, env: dict[str, str] | None = None) -> Iterator[int]:
    with tempfile.NamedTemporaryFile(prefix="saga-overhead-", suffix=".log") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            _wait_http(health_url, proc=proc, log=Path(log.name))
            yield proc.pid
        finally:
            _stop(proc)


def _cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live child processes (`saga serve --workers N`'s workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                seconds += _cpu_seconds(int(child))
    return seconds


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """Requests/s, p50 ms, p99 ms, non-2xx answers and total requests from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    return (
        rps,
        pct("50"),
        pct("99"),
        int(non_2xx.group(1)) if non_2xx else 0,
        int(total.group(1)) if total else 0,
    )


def _wrk(url: str, script: Path, connections: int, duration_s: float, threads: int = 1) -> str:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else None


def run_overhead(args: argparse.Namespace) -> int:
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install -y nginx wrk)", file=sys.stderr)
            return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        print(f"error: unknown or no targets {unknown}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("json", "sse") for m in modes):
        print(f"error: --modes {args.modes!r}: a comma-separated list of json and sse", file=sys.stderr)
        return 2
    report = OverheadReport(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, {build_description()}",
        command=recorded_command(joined=("--saga-args",)),
        connections=args.connections,
        duration_s=args.duration,
        rounds=args.rounds,
        backend="nginx (1 worker, fixed body)"
        if args.backend == "nginx"
        else f"paced ({args.paced_events} events {args.paced_interval_ms:g} ms apart; JSON as nginx)",
        load_generator=f"wrk -t{args.connections if _sessions(args) == 'per-connection' else 1} --latency",
        modes={},
        rate=getattr(args, "rate", None),
        sessions=_sessions(args),
        request=_request_kind(args),
        saga_workers=getattr(args, "saga_workers", 2) if "saga-workers" in targets else None,
    )
    with tempfile.TemporaryDirectory(prefix="saga-overhead-") as tmp:
        workdir = Path(tmp)
        for mode in modes:
            report.modes[mode] = _run_mode(args, mode, targets, workdir)
    _print(report)
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 0


def _sessions(args: argparse.Namespace) -> str:
    return str(getattr(args, "sessions", "none"))


def _request_kind(args: argparse.Namespace) -> str:
    return str(getattr(args, "request", "plain"))


def request_fields(kind: str) -> dict[str, Any]:
    """The body's fields of `--request kind` (its session, if any, comes from `--sessions`)."""
    if kind == "plain":
        return REQUEST
    from loadtests.bench.call_cost import REQUESTS  # the in-process harness's calls (imports the proxy)

    return REQUESTS[kind][0]


def _run_mode(
    args: argparse.Namespace, mode: str, targets: list[str], workdir: Path
) -> dict[str, TargetResult]:
    stream = mode == "sse"
    body = CHAT_SSE if stream else CHAT_JSON
    backend_port = _free_port()
    conf = _nginx_conf(workdir, backend_port, body, "text/event-stream" if stream else "application/json")
    backend = f"http://127.0.0.1:{backend_port}"
    script = workdir / f"wrk-{mode}.lua"
    request = msgspec.json.encode({**request_fields(_request_kind(args)), "stream": stream}).decode()
    sessions = _sessions(args)
    script.write_text(wrk_script(request, args.connections, getattr(args, "rate", None), sessions))
    threads = args.connections if sessions == "per-connection" else 1
    results = {t: TargetResult() for t in targets}
    with contextlib.ExitStack() as stack:
        if stream and getattr(args, "backend", "nginx") == "paced":
            paced = [sys.executable, "-m", "loadtests.bench.paced_backend", "--port", str(backend_port)]
            paced += ["--events", str(args.paced_events), "--interval-ms", str(args.paced_interval_ms)]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            stack.enter_context(_started(paced, backend + "/health", env))
        else:
            nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])
            stack.callback(_stop, nginx)
            _wait_http(backend + "/health")
        urls: dict[str, tuple[str, int | None]] = {}
        for target in targets:
            port = _free_port()
            if target == "direct":
                urls[target] = (backend, None)
                continue
            if target in ("saga", "saga-workers", "saga-aiohttp"):
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
                cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", backend, "--port", str(port)]
                cmd += args.saga_args.split()
                if target == "saga-aiohttp":
                    cmd += ["--server", "aiohttp"]
                if target == "saga-workers":
                    cmd += ["--workers", str(getattr(args, "saga_workers", 2))]
                pid = stack.enter_context(_started(cmd, f"http://127.0.0.1:{port}/health", env))
            else:
                spec = RouterSpec(target, "round_robin")
                why = unavailable(spec)
                if why is not None:
                    results[target].skipped = why
                    continue
                cmd = peer_command(spec, [backend], port=port, metrics_port=_free_port(), time_scale=1.0)
                pid = stack.enter_context(_started(cmd, f"http://127.0.0.1:{port}/health"))
            urls[target] = (f"http://127.0.0.1:{port}", pid)
        for url, _ in urls.values():  # warm-up: connections, caches, JITs
            _wrk(url + "/v1/chat/completions", script, args.connections, 1.0, threads)
        for _ in range(args.rounds):
            for name, (url, router_pid) in urls.items():
                cpu_before = _cpu_seconds(router_pid) if router_pid else 0.0
                out = _wrk(url + "/v1/chat/completions", script, args.connections, args.duration, threads)
                cpu = _cpu_seconds(router_pid) - cpu_before if router_pid else None
                rps, p50, p99, non_2xx, total = parse_wrk(out)
                per_request = cpu / total * 1e6 if cpu is not None and total else None
                results[name].rounds.append(Round(rps, p50, p99, non_2xx, per_request))
    _summarise(results)
    return results


def _summarise(results: dict[str, TargetResult]) -> None:
    for r in results.values():
        if r.rounds:
            r.rps = _median([x.rps for x in r.rounds])
            r.p50_ms = _median([x.p50_ms for x in r.rounds])
            r.p99_ms = _median([x.p99_ms for x in r.rounds])
            cpu = [x.cpu_us_per_request for x in r.rounds if x.cpu_us_per_request is not None]
            r.cpu_us_per_request = _median(cpu) if cpu else None
    direct, vllm = results.get("direct"), results.get("vllm-router")
    for r in results.values():
        if r.rps is None:
            continue
        if (
            direct is not None
            and direct.p50_ms is not None
            and r.p50_ms is not None
            and direct.p99_ms is not None
        ):
            r.added_p50_ms = r.p50_ms - direct.p50_ms
            r.added_p99_ms = (r.p99_ms or 0.0) - direct.p99_ms
        if vllm is not None and vllm.rps:
            r.rps_vs_vllm_router = r.rps / vllm.rps


def _print(report: OverheadReport) -> None:
    for mode, results in report.modes.items():
        paced = "" if report.rate is None else f", paced at {report.rate:g} requests/s"
        workers = "" if report.saga_workers is None else f", saga-workers: {report.saga_workers}"
        print(
            f"\n{mode} ({report.connections} connections{paced}, sessions {report.sessions}{workers}, "
            f"{report.rounds} x {report.duration_s:g} s, medians)"
        )
        head = ("target", "req/s", "p50 ms", "p99 ms", "+p50", "+p99", "CPU us/req", "vs vllm-r")
        print("{:15} {:>9} {:>8} {:>8} {:>7} {:>7} {:>10} {:>9}".format(*head))
        for name, r in results.items():
            if r.skipped:
                print(f"{name:15} skipped: {r.skipped}")
                continue

            def f(v: float | None, spec: str) -> str:
                return "-" if v is None else format(v, spec)

            print(
                f"{name:15} {f(r.rps, '9.0f')} {f(r.p50_ms, '8.2f')} {f(r.p99_ms, '8.2f')} "
                f"{f(r.added_p50_ms, '7.2f')} {f(r.added_p99_ms, '7.2f')} {f(r.cpu_us_per_request, '10.0f')} "
                f"{f(r.rps_vs_vllm_router, '9.2f')}"
            )
