"""Where a worker's CPU goes under the per-connection load (thirty-fourth session, docs/results/overhead.md).

    python3 docs/results/overhead-s34/profile_workers.py [--tree DIR] [--mode json|sse] [--seconds S]
        [-- saga serve flags]

Starts nginx and `saga serve --workers 2` from `--tree` as docs/results/overhead-s33/flood.py does, drives it
with wrk as `saga bench overhead --sessions per-connection` does (32 threads, one connection and one
session each), records `perf record -g` on the workers for `--seconds`, and prints wrk's figures and the
share of the samples under `sock_def_readable` (a socket write waking the process that reads it: nginx or a
wrk thread) and under `__tcp_transmit_skb` (the writes as a whole), from `perf report --no-children`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "overhead-s33"))
from flood import _bench, _processes, proxied, wrk_quantiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    parser.add_argument("--mode", choices=("json", "sse"), default="json")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    bench = _bench()
    import msgspec

    with (
        tempfile.TemporaryDirectory() as tmp,
        proxied(args.tree, args.mode, ["--workers", "2", *args.serve_args]) as (
            url,
            _,
            pid,
        ),
    ):
        request = msgspec.json.encode(
            {**bench.request_fields("plain"), "stream": args.mode == "sse"}
        ).decode()
        script = Path(tmp, "wrk.lua")
        script.write_text(bench.wrk_script(request, 32, None, "per-connection"))
        wrk = ["wrk", "-t32", "-c32", "--latency", "-s", str(script), url]
        subprocess.run([*wrk, "-d2s"], capture_output=True, check=True)
        load = subprocess.Popen([*wrk, f"-d{args.seconds + 2}s"], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        data = Path(tmp, "perf.data")
        workers = ",".join(str(p) for p in _processes(pid))
        record = ["perf", "record", "-F", "999", "-g", "-o", str(data), "-p", workers, "--", "sleep"]
        subprocess.run([*record, str(args.seconds)], capture_output=True, check=True)
        print("wrk:", wrk_quantiles(load.communicate()[0]))
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--stdio", "-G"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    for symbol in ("sock_def_readable", "__tcp_transmit_skb"):
        shares = [float(x) for x in re.findall(rf"--(\d+\.\d+)%--{symbol}\b", report)]
        print(f"under {symbol}: {max(shares, default=0.0):.1f}% of the workers' samples (the largest path)")


if __name__ == "__main__":
    main()
