"""Connections passed between workers over a Unix socket (proxy/connection_handoff.py), in one process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from proxy.connection_handoff import HandoffLinks, HandoffListener


async def test_a_connection_and_its_bytes_arrive_in_order(tmp_path: Path) -> None:
    adopted: list[tuple[socket.socket, bytes]] = []
    arrived = asyncio.Event()

    def adopt(sock: socket.socket, data: bytes) -> None:
        adopted.append((sock, data))
        if len(adopted) == 3:
            arrived.set()

    listener = HandoffListener(str(tmp_path / "handoff-1.sock"), adopt, max_frame=4 * 1024 * 1024)
    links = HandoffLinks(lambda index: str(tmp_path / f"handoff-{index}.sock"))
    pairs = [socket.socketpair() for _ in range(3)]
    frames = [b"GET / HTTP/1.1\r\n\r\n", b"x" * (2 * 1024 * 1024), b""]  # the middle one is over a buffer
    try:
        for (ours, _), data in zip(pairs, frames, strict=True):
            assert links.pass_now(1, ours.fileno(), data)
            ours.close()  # the owner's copy keeps the connection open
        await asyncio.wait_for(arrived.wait(), 30)
        assert [data for _, data in adopted] == frames
        for (sock, _), (_, client) in zip(adopted, pairs, strict=True):
            sock.setblocking(True)
            sock.sendall(b"answer")  # the adopted socket is the client's connection
            assert client.recv(16) == b"answer"
    finally:
        for sock, _ in adopted:
            sock.close()
        for _, client in pairs:
            client.close()
        links.close()
        listener.close()


async def test_an_owner_that_is_not_listening_is_reported_not_reached(tmp_path: Path) -> None:
    links = HandoffLinks(lambda index: str(tmp_path / f"handoff-{index}.sock"))
    ours, theirs = socket.socketpair()
    try:
        assert not links.pass_now(0, ours.fileno(), b"data")
        assert links.warned == {0}  # warned once; the caller serves the call itself
        assert not links.pass_now(0, ours.fileno(), b"data")
    finally:
        ours.close()
        theirs.close()
        links.close()


@pytest.mark.parametrize("max_frame", [64, 65])
async def test_a_frame_over_the_bound_closes_its_link_and_is_not_buffered(
    tmp_path: Path, max_frame: int
) -> None:
    adopted: list[bytes] = []
    listener = HandoffListener(str(tmp_path / "handoff-1.sock"), lambda s, d: adopted.append(d), max_frame)
    links = HandoffLinks(lambda index: str(tmp_path / f"handoff-{index}.sock"))
    ours, theirs = socket.socketpair()
    try:
        assert links.pass_now(1, ours.fileno(), b"x" * 65)
        for _ in range(100):  # accepted, then read: adopted (within the bound) or the link closed
            await asyncio.sleep(0.01)
            if adopted:
                break
        if max_frame < 65:
            assert adopted == [] and not listener.peers
        else:
            assert adopted == [b"x" * 65] and len(listener.peers) == 1
    finally:
        ours.close()
        theirs.close()
        links.close()
        listener.close()
