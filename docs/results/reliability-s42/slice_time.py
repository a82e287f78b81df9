"""The longest step `health.read_load` takes the event loop on a 4 MiB page (the read bound) of the worst
sample lines `parse_time.py` found, against `parse_load`'s one step on the same page.

    python3 docs/results/reliability-s42/slice_time.py   (SAGA_ROOT picks the tree)
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.environ.get("SAGA_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", "..")))
from proxy import health

LINES = {
    "cache_config_info, 200 labels": "vllm:cache_config_info{"
    + ",".join(f'a{i}="x"' for i in range(200))
    + "} 1\n",
    "an unclosed brace run": "vllm:num_requests_waiting{" + "} x " * 200 + "y z\n",
    "plain samples": 'vllm:num_requests_waiting{model_name="m",engine="0"} 1\n',
}


async def longest_step(page: str) -> tuple[float, float]:
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await health.read_load(page)
    total = time.perf_counter() - start
    done = True
    await task
    return max(gaps), total


for name, line in LINES.items():
    page = line * (health.MAX_PROBE_BYTES // len(line))
    start = time.perf_counter()
    health.parse_load(page)
    one_step = time.perf_counter() - start
    step, total = asyncio.run(longest_step(page))
    print(
        f"{name:32s} {len(page) / 2**20:.1f} MiB: parse_load one step {one_step * 1000:6.1f} ms; "
        f"read_load {total * 1000:6.1f} ms in all, its longest step {step * 1000:5.2f} ms"
    )
