"""`saga serve` on SIGTERM (a rolling update, `docker stop`): it stops accepting connections and lets the
calls in progress finish (`shutdown_grace_s`) before it exits 0. Before, a streamed answer in flight was cut
mid-way (the process died of the signal, exit -15), with workers too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.processes import start_saga_serve, stop_process

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--time-scale", "5", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    return start_saga_serve([*cmd, *extra], ROOT, env)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_lets_a_stream_in_progress_finish_and_takes_no_new_connection(
    tmp_path: Path, workers: str
) -> None:
    proc, url, output = start(tmp_path, "--workers", workers)
    try:
        body = {"model": "saga-sim", "messages": [{"role": "user", "content": "go"}], "max_tokens": 300}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/v1/chat/completions", json={**body, "stream": True}) as r,
        ):
            assert r.status == 200
            await r.content.readline()  # the answer has started
            proc.send_signal(signal.SIGTERM)
            for _ in range(100):  # until the listener is closed (a bounded wait, not a timing assertion)
                try:
                    async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/health") as probe:
                        await probe.read()
                except aiohttp.ClientConnectionError:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("a new connection was still taken after SIGTERM:\n" + "".join(output))
            text = await r.text()
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
    finally:
        stop_process(proc, 30)
