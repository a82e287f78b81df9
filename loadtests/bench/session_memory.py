"""The proxy's memory per session, in process: what sizing `max_sessions` costs.

`python -m loadtests.bench.session_memory [--policy saga] [--sessions 300] [--calls 10] [--tool-lines 40]
[--anonymous]` drives the proxy through the call_cost harness (the fast server and the upstream pool on fake
transports, no sockets), one agent conversation after another, each `--calls` turns long and growing by a
tool result of `--tool-lines` lines a turn, its session named in `X-Session-Id` (or, `--anonymous`, inferred
from the conversation). It prints the Python memory still held once they are done, per session (tracemalloc,
after a collection), and the files holding most of it (by file only with `SAGA_PURE_PYTHON=1`: compiled
modules have no Python frames, so their allocations are filed under the harness that called them; the total
is the same kind of figure either way, and the compiled one is what `saga serve` holds). Bounded caches (the
prefix index's chunks per replica, the access log's batch) fill up to their limits and then stop growing, so
run enough sessions to see the per-session figure settle; the C allocator's own overhead
(docs/results/reliability.md, the soaks' RSS) is not in it.
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from typing import Any

from loadtests.bench.call_cost import (
    _AGENT_TOOLS,
    _ANSWER,
    answer_segments,
    chat_request,
    harness_like_serve,
    run_on_uvloop,
)


def request(session: str | None, task: int, turn: int, tool_lines: int) -> bytes:
    """Turn `turn` of agent task `task`: a system prompt, the task, and a tool result per earlier turn."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful software engineer. " * 64},
        {"role": "user", "content": f"Task {task}: fix the failing test."},
    ]
    for t in range(turn):
        messages.append({"role": "assistant", "content": "Hello there."})  # the harness's answer, as sent
        messages.append(
            {"role": "user", "content": f"tool output {task}/{t}:\n" + "a line of output\n" * tool_lines}
        )
    named = f"X-Session-Id: {session}\r\n" if session else ""
    return chat_request({"model": "m", "messages": messages, "tools": _AGENT_TOOLS[:4]}, named)


async def measure(policy: str, sessions: int, calls: int, tool_lines: int, anonymous: bool) -> dict[str, Any]:
    """Bytes held per session after `sessions` conversations of `calls` calls, and by file."""
    answer = answer_segments(False, "one")
    with harness_like_serve(policy) as harness:
        for task in range(20):  # warm-up: first-call lookups, the caches' first entries
            for turn in range(calls):
                name = None if anonymous else f"warm-{task}"
                await harness.call(request(name, 10**6 + task, turn, tool_lines), answer, _ANSWER)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for task in range(sessions):
                for turn in range(calls):
                    name = None if anonymous else f"s-{task}"
                    await harness.call(request(name, task, turn, tool_lines), answer, _ANSWER)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    by_file = after.compare_to(before, "filename")
    return {
        "policy": policy,
        "sessions": sessions,
        "calls": calls,
        "tool_lines": tool_lines,
        "anonymous": anonymous,
        "answered": harness.answered,
        "bytes_per_session": round(sum(d.size_diff for d in by_file) / sessions),
        "by_file": {d.traceback[0].filename: round(d.size_diff / sessions) for d in by_file[:8]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", default="saga")
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tool-lines", type=int, default=40)
    parser.add_argument(
        "--anonymous", action="store_true", help="no session ids: inferred by prefix chaining"
    )
    args = parser.parse_args(argv)
    result = run_on_uvloop(
        lambda: measure(args.policy, args.sessions, args.calls, args.tool_lines, args.anonymous)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
