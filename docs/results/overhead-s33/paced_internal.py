"""Below saturation, where the latency SAGA adds goes (thirty-third session, docs/results/overhead.md).

    python3 docs/results/overhead-s33/paced_internal.py [--tree DIR] [--rate R] [--seconds S] [--runs N]
        [--no-gc] [-- saga serve flags]

Per run: nginx answering the overhead bench's fixed chat completion, `saga serve` from `--tree` in front of
it, and wrk paced at `--rate` calls/s over 32 connections (the bench's `--rate` script), first through the
proxy, then straight to nginx. Prints wrk's p50/p90/p99 for both and, from the proxy's access log (each
call's duration from its request's head read to its answer's last byte written), the proxy's own p50, p90,
p99 and p99.9 over the paced round's calls. `--rate 0`: wrk unpaced (saturating the proxy). `--no-gc` runs
the proxy with the cyclic GC disabled (a `sitecustomize` calling `gc.disable()`), to see whether its pauses
are the tail.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from flood import proxied, wrk_quantiles, wrk_script


def _quantiles(durations: list[float]) -> str:
    durations = sorted(durations)
    n = len(durations)
    at = {
        name: durations[min(n - 1, int(n * q))] * 1e3
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))
    }
    return f"n={n} " + " ".join(f"{name} {ms:.3f}" for name, ms in at.items()) + " ms"


def _wrk(url: str, script: Path, seconds: int) -> str:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    parser.add_argument(
        "--rate", type=float, default=3000.0, help="calls/s (0: not paced, wrk at saturation)"
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-gc", action="store_true", help="the proxy with the cyclic GC disabled")
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text("import gc\ngc.disable()\n")
        for run in range(1, args.runs + 1):
            log = Path(tmp, f"access-{run}.log")
            with proxied(args.tree, "json", args.serve_args, tmp if args.no_gc else "", log) as (
                url,
                direct,
                _,
            ):
                script = wrk_script("json", args.rate or None)
                _wrk(url, script, 1)  # warm-up
                warm = log.stat().st_size
                through = _wrk(url, script, args.seconds)
                straight = _wrk(direct, script, args.seconds)
            with log.open() as f:
                f.seek(warm)
                durations = [float(line.split()[-1]) for line in f if '"POST /v1/chat/completions' in line]
            print(f"run {run}: through SAGA {wrk_quantiles(through)}; direct {wrk_quantiles(straight)}")
            print(f"  inside the proxy (access log): {_quantiles(durations)}", flush=True)


if __name__ == "__main__":
    main()
