"""The supervisor's restart limit (proxy/supervisor.py), with stand-in worker processes."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest

from proxy.supervisor import Supervisor
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
