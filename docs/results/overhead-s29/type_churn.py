"""`saga serve` under wrk when every call is a new session, with one system prompt for all or one each.

An agent type is a hash of the head of the system prompt (proxy/prompt_shape.py), so a system prompt that
names its user or task makes every session an agent type of its own. This runs `saga serve` (every default
but the access log) in front of the overhead bench's nginx backend, sends `--duration` seconds of calls from
wrk (32 connections), each with a new `X-Session-Id` and either the same system prompt (`--prompts same`) or
one of its own (`unique`), and prints calls a second, latency percentiles, the proxy's resident memory at the
end and its cyclic-GC collections that took over 20 ms (logged by a callback installed before the proxy
starts).

    python3 docs/results/overhead-s29/type_churn.py --prompts unique --duration 45
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from loadtests.bench.overhead import CHAT_JSON, _free_port, _nginx_conf, _wait_http, parse_wrk  # noqa: E402

# The proxy, with a callback that logs every collection over 20 ms (generation, ms, objects collected).
BOOT = """
import gc, runpy, sys, time
started = {}
def log(phase, info):
    if phase == "start":
        started["t"] = time.perf_counter()
        return
    ms = (time.perf_counter() - started["t"]) * 1000
    if ms > 20:
        print(f"GC{info['generation']} {ms:.0f} ms, {info['collected']} objects", file=sys.stderr, flush=True)
gc.callbacks.append(log)
sys.argv = ["proxy.cli", *sys.argv[1:]]
runpy.run_module("proxy.cli", run_name="__main__")
"""

WRK_SCRIPT = """
counter = 0
unique = %s
request = function()
  counter = counter + 1
  local prompt = "You are a helpful agent."
  if unique then prompt = "You are the agent of user " .. math.random(1, 2147483647) .. "." end
  local body = '{"model":"m","messages":[{"role":"system","content":"' .. prompt .. '"},' ..
    '{"role":"user","content":"hello ' .. counter .. '"}]}'
  local session = "s" .. math.random(1, 2147483647) .. "-" .. counter
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["X-Session-Id"] = session}, body)
end
"""


def rss_mb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", choices=("same", "unique"), required=True)
    parser.add_argument("--duration", type=int, default=45)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    backend_port, port = _free_port(), _free_port()
    conf = _nginx_conf(work, backend_port, CHAT_JSON, "application/json")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
    backend = f"http://127.0.0.1:{backend_port}"
    log = (work / "proxy.err").open("w")
    serve = [sys.executable, "-c", BOOT, "serve", "--replica", backend, "--port", str(port)]
    serve.append("--no-access-log")
    proxy = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    try:
        _wait_http(backend + "/health")
        _wait_http(f"http://127.0.0.1:{port}/health")
        script = work / "calls.lua"
        script.write_text(WRK_SCRIPT % ("true" if args.prompts == "unique" else "false"))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk = ["wrk", "-t1", "-c32", "--timeout", "30s", "--latency", f"-d{args.duration}s"]
        wrk += ["-s", str(script)]
        started = time.time()
        out = subprocess.run([*wrk, url], capture_output=True, text=True, check=True).stdout
        rps, p50, p99, non_2xx, total = parse_wrk(out)
        # calls that got no answer (connect, read, write errors, timeouts) are not in `total`: say so
        socket_errors = re.search(r"Socket errors: (.*)", out)
        longest = out.split("Latency", 1)[1].split()[2]
        logged = (work / "proxy.err").read_text().splitlines()
        collections = [line for line in logged if line.startswith("GC")]
        print(
            f"prompts {args.prompts}: {rps:,.0f} calls/s ({total:,} calls, {non_2xx} not 2xx, socket errors: "
            f"{socket_errors.group(1) if socket_errors else 'none'}) in "
            f"{time.time() - started:.0f} s; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {longest}; "
            f"proxy RSS at the end {rss_mb(proxy.pid)} MB; collections over 20 ms: {len(collections)}"
        )
        for line in collections:
            print("  " + line)
    finally:
        proxy.terminate()
        proxy.wait()
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
