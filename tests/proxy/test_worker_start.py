"""A worker started by the supervisor takes clients only once every other worker takes hand-offs
(proxy/server.py `_peers_listening`), so the first calls reach their sessions' owners."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import msgspec
import pytest

from proxy import server
from proxy.server import running_proxy
from proxy.worker_set import COUNT_VAR, DIRECTORY_VAR, INDEX_VAR, WorkerSet
from tests.processes import free_port
from tests.proxy.fakes import config, fake_replica


def accepts(port: int) -> bool:
    with contextlib.closing(socket.socket()) as client:
        return client.connect_ex(("127.0.0.1", port)) == 0


def appear(*paths: str) -> None:
    for path in paths:
        Path(path).touch()


async def test_a_worker_takes_clients_once_its_peers_take_hand_offs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path  # the workers' directory
    monkeypatch.setattr(server, "server_kind", lambda config: "fast")
    monkeypatch.setenv(INDEX_VAR, "0")
    monkeypatch.setenv(COUNT_VAR, "2")
    monkeypatch.setenv(DIRECTORY_VAR, str(directory))
    peer = WorkerSet(1, 2, str(directory))
    port = free_port()
    async with fake_replica() as replica:
        started = asyncio.Event()

        async def worker_0() -> None:
            async with running_proxy(msgspec.structs.replace(config([replica.url]), port=port)):
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(worker_0())
        try:
            for _ in range(20):  # its own sockets appear, the port stays closed: worker 1 is not there
                await asyncio.sleep(0.02)
            assert (directory / "handoff-0.sock").exists() and not accepts(port) and not started.is_set()
            appear(peer.handoff_socket(1), str(directory / "calls-1.sock"))  # worker 1 takes hand-offs
            await asyncio.wait_for(started.wait(), 5)
            assert accepts(port)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
