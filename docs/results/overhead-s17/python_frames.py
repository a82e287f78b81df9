"""The interpreted Python frames a proxied call enters, counted per function while the in-process per-call
harness runs (compiled code enters no frame, so what is listed still runs in the interpreter).

    python3 docs/results/overhead-s17/python_frames.py [--policy saga] [--mode json] [--calls 5000]

Prints the functions entered at least once per call, most often first (the counts include the harness's own
fake transports: loadtests/bench/call_cost.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import runpy
import sys
from types import FrameType
from typing import Any

parser = argparse.ArgumentParser()
parser.add_argument("--policy", default="saga")
parser.add_argument("--mode", default="json")
parser.add_argument("--calls", type=int, default=5000)
args = parser.parse_args()
counts: collections.Counter[str] = collections.Counter()


def entered(frame: FrameType, event: str, _arg: Any) -> None:
    if event == "call":
        code = frame.f_code
        counts[f"{code.co_filename}:{code.co_name}"] += 1


sys.argv = [
    *("call_cost", "--policy", args.policy, "--mode", args.mode),
    *("--repeats", "1", "--calls", str(args.calls)),
]
sys.setprofile(entered)
with contextlib.suppress(SystemExit):
    runpy.run_module("loadtests.bench.call_cost", run_name="__main__")
sys.setprofile(None)
for name, count in counts.most_common():
    if count >= args.calls:
        print(f"{count / args.calls:6.2f} a call  {name}")
