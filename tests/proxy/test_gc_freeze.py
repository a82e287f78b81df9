"""`saga serve` freezes its start-up heap out of the cyclic GC (the full collections over it were the p99),
and leaves the process's loggers as it found them when it stops."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from proxy import server
from proxy.config import ProxyConfig
from proxy.server import FULL_COLLECTION_AFTER, serve_forever


async def _listening() -> asyncio.Task[None]:
    """`saga serve` (serve_forever) running, once it is listening (its start-up heap frozen)."""
    config = ProxyConfig(replicas=["http://127.0.0.1:9"], port=0, seed=1, health_interval_s=60.0)
    task = asyncio.create_task(serve_forever(config))
    for _ in range(200):  # bounded: ~10 s
        if gc.get_freeze_count() > 0 or task.done():
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    return task


async def test_serve_forever_freezes_the_start_up_heap_once_listening(capsys: object) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    task = await _listening()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (*thresholds[:2], FULL_COLLECTION_AFTER)  # full passes rarer
        frozen = gc.get_freeze_count()
        await asyncio.sleep(0.5)  # a few access-log flushes later: frozen once, not on every loop round
        assert gc.get_freeze_count() <= frozen  # frozen objects may still be freed; none are added
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()  # the rest of the suite runs with an ordinary GC
        gc.set_threshold(*thresholds)


async def test_serve_forever_runs_a_full_collection_every_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full collections by count alone came about once a day in a soak (net allocations fill the generations
    slowly): `saga serve` also runs one every FULL_COLLECTION_PERIOD_S, so garbage in cycles is bounded."""
    monkeypatch.setattr(server, "FULL_COLLECTION_PERIOD_S", 0.3, raising=False)
    thresholds = gc.get_threshold()
    task = await _listening()
    try:
        gc.set_threshold(thresholds[0], thresholds[1], 10**9)  # none by count: only the period's
        before = gc.get_stats()[2]["collections"]
        for _ in range(200):  # until two have run (bounded: ~20 s on a loaded machine)
            if gc.get_stats()[2]["collections"] - before >= 2:
                break
            await asyncio.sleep(0.1)
        after = gc.get_stats()[2]["collections"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert after - before >= 2


async def test_serve_forever_leaves_the_access_logger_as_it_found_it() -> None:
    """Each start used to add a batching handler to `saga.access` and stop it propagating, for good: a proxy
    started again in one process wrote every access line once per earlier start, and pytest's log capture
    (9.2) then kept a record of every call a later test made."""
    access = logging.getLogger("saga.access")
    before = (list(access.handlers), access.propagate)
    thresholds = gc.get_threshold()
    for _ in range(2):
        task = await _listening()
        try:
            assert len(access.handlers) == len(before[0]) + 1 and not access.propagate  # batched meanwhile
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        assert (access.handlers, access.propagate) == before
