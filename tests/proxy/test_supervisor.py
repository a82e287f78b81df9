"""The supervisor's restart limit (proxy/supervisor.py), with stand-in worker processes."""

from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
import signal
from pathlib import Path

import pytest

from proxy.supervisor import Supervisor, supervise
from tests.proxy.fakes import config


class _Worker:
    """A worker process that dies of SIGBUS at once (`dies`), or runs until the supervisor stops."""

    def __init__(self, dies: bool) -> None:
        self.dies = dies
        self.returncode: int | None = None

    async def wait(self) -> int:
        if not self.dies:
            await asyncio.Event().wait()
        self.returncode = -signal.SIGBUS
        return self.returncode


@pytest.mark.parametrize(
    ("workers", "deaths", "stopped"), [(5, 1, False), (8, 1, False), (5, 2, True), (2, 3, True)]
)
async def test_one_shared_fault_that_kills_every_worker_once_is_survived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, deaths: int, stopped: bool
) -> None:
    """A truncated `load.table` kills every worker at once: with 5 workers that was 5 exits within the window,
    the fixed limit, and the whole proxy stopped. Each worker here dies `deaths` times in a row."""
    supervisor = Supervisor(config(["http://a:1"], workers=workers), [], {})
    supervisor.directory, supervisor.started = str(tmp_path), True
    starts: collections.Counter[int] = collections.Counter()
    settled = asyncio.Event()  # every worker started after its last death

    async def start(index: int) -> _Worker:
        starts[index] += 1
        if starts.total() == workers * (deaths + 1):
            settled.set()
        return _Worker(dies=starts[index] <= deaths)

    monkeypatch.setattr(supervisor, "_start", start)
    keepers = [asyncio.create_task(supervisor._keep(i)) for i in range(workers)]
    waits = [asyncio.create_task(settled.wait()), asyncio.create_task(supervisor.stopping.wait())]
    try:
        async with asyncio.timeout(30):
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*keepers, *waits]:
            task.cancel()
        await asyncio.gather(*keepers, *waits, return_exceptions=True)
    assert supervisor.stopping.is_set() == stopped, supervisor.failure
    if stopped:
        assert f"workers exited {max(5, 2 * workers)} times within 30 s" in supervisor.failure
    else:
        assert starts == dict.fromkeys(range(workers), 2)


async def test_the_supervisors_own_lines_follow_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `log_format: json` the supervisor's lines (a worker exited and is restarted) are JSON objects
    like the workers', not text lines in the middle of a JSON stream."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    formatters = [(h, h.formatter) for h in root.handlers]

    async def run(self: Supervisor) -> int:
        logging.getLogger("saga.proxy").warning("worker 0 exited with code -9; restarting it in 0.1 s")
        return 0

    monkeypatch.setattr(Supervisor, "run", run)
    try:
        assert await supervise(config(["http://a:1"], workers=2, log_format="json"), [], {}) == 0
    finally:
        root.removeHandler(handler)
        for h, formatter in formatters:
            h.setFormatter(formatter)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "WARNING" and entry["message"].startswith("worker 0 exited")
