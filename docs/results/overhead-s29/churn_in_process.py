"""A call's CPU in process when every call is a new session, with one system prompt for all or one each.

The fast server and the upstream pool driven through their callbacks with fake transports
(`loadtests.bench.call_cost`'s harness, as `saga serve` sets it up, the `saga` policy): 500 warm-up calls,
then N calls, each naming a new session; the least `time.process_time` a call over three rounds.

    python3 docs/results/overhead-s29/churn_in_process.py [N]

Against another tree: its modules built in place, `PYTHONPATH=<tree>` (the script finds the harness there).
"""

from __future__ import annotations

import sys
import time

from loadtests.bench.call_cost import (
    _ANSWER,
    answer_segments,
    chat_request,
    harness_like_serve,
    run_on_uvloop,
)


async def cost_us(calls: int, unique: bool) -> float:
    answer = answer_segments(False, "one")
    requests = [
        chat_request(
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": f"You are the agent of user {i if unique else 0}."},
                    {"role": "user", "content": f"hello {i}"},
                ],
            },
            f"X-Session-Id: s{i}\r\n",
        )
        for i in range(500 + 3 * calls)
    ]
    best = float("inf")
    with harness_like_serve("saga") as harness:
        for request in requests[:500]:
            await harness.call(request, answer, _ANSWER)
        for r in range(3):
            started = time.process_time()
            for request in requests[500 + r * calls : 500 + (r + 1) * calls]:
                await harness.call(request, answer, _ANSWER)
            best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


async def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for unique in (False, True):
        label = "a prompt each" if unique else "one prompt"
        print(f"{label:>13}: {await cost_us(calls, unique):.0f} µs a call")


if __name__ == "__main__":
    run_on_uvloop(main)
