"""Client connections passed between worker processes (`saga serve --workers N`), with the bytes read so far.

A worker that reads a call whose session another worker owns (proxy/worker_set.py) sends the connection's
socket (SCM_RIGHTS) and every byte it read from the client since the start of that request to the owner's
hand-off socket, then closes its own descriptor: the owner's copy keeps the TCP connection open (no FIN, no
RST), so the client sees one connection answering in order. proxy/fast_server.py decides when; this module
moves connections.

Wire format on a worker-to-worker Unix stream socket, one frame per connection: a 4-byte big-endian length,
then that many bytes (what the client sent); the socket travels as ancillary data with the frame's first
byte, so the receiver pairs frames with descriptors in arrival order.

Contract:
- `HandoffLinks.pass_now(owner, fd, data)`: True once the owner holds the connection (or will: a frame
  too big for the link's buffer is finished in the background); False when the owner cannot be reached
  now (not listening, restarting, its link full): the caller then serves the request itself. Warns once
  per owner.
- `HandoffListener`: accepts links from the other workers and calls `adopt(sock, data)` for each frame. A
  frame announcing more than `max_frame` bytes (senders never send more than what a connection keeps for a
  move) closes its link, with the descriptors it carried: nothing is buffered past the bound.
- `HandoffCounts` (`app[HANDOFF_COUNTS]` in a worker of several): connections sent and received, calls
  relayed, calls served here because their owner could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger("saga.proxy")
_LENGTH = struct.Struct("!I")
_READ_BYTES = 256 * 1024
_MAX_FDS = 16  # descriptors one read may carry (the kernel delivers each frame's with its first byte)


class HandoffCounts:
    """One worker's counts of connections moved and calls relayed between workers (for /metrics: the app
    holds them under `HANDOFF_COUNTS` in a worker of several)."""

    def __init__(self) -> None:
        self.sent = 0  # connections handed to the worker that owns their call's session
        self.received = 0  # connections handed to this worker
        self.relayed = 0  # calls sent to their owner on a connection that had moved once already
        self.failed = 0  # calls served here because their owner could not be reached


HANDOFF_COUNTS = web.AppKey("handoff_counts", HandoffCounts)


def _rights(fd: int) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]


class _Link:
    """One worker's stream socket to another's hand-off socket; frames in order, never interleaved."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self.loop = sock, loop
        self.queue: deque[tuple[int | None, memoryview]] = deque()  # (descriptor to send, bytes left)
        self.broken = False

    def send(self, fd: int, frame: bytes) -> bool:
        """Sends a frame now if the link is idle; True once its descriptor is sent or queued behind others."""
        if self.queue:  # earlier frames are still going out: this one follows them (its own dup'ed fd)
            self.queue.append((os.dup(fd), memoryview(frame)))
            return True
        try:
            sent = self.sock.sendmsg([frame], _rights(fd))
        except BlockingIOError:
            return False
        if sent < len(frame):  # the descriptor went with the first byte; the rest follows when writable
            self.queue.append((None, memoryview(frame)[sent:]))
            self.loop.add_writer(self.sock.fileno(), self._writable)
        return True

    def _writable(self) -> None:
        try:
            while self.queue:
                fd, rest = self.queue[0]
                if fd is None:
                    sent = self.sock.send(rest)
                else:
                    sent = self.sock.sendmsg([rest], _rights(fd))
                    os.close(fd)  # the owner holds it now
                    self.queue[0] = (None, rest)
                if sent < len(rest):
                    self.queue[0] = (None, rest[sent:])
                    return
                self.queue.popleft()
        except BlockingIOError:
            return
        except OSError as e:
            log.error("a worker's hand-off link failed with %d connections queued: %s", len(self.queue), e)
            self.close()
            return
        self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.sock.fileno())
        for fd, _ in self.queue:
            if fd is not None:
                os.close(fd)
        self.queue.clear()
        self.sock.close()


class HandoffLinks:
    """This worker's links to the other workers' hand-off sockets, made on first use and remade if broken."""

    def __init__(self, socket_of: Callable[[int], str]) -> None:
        self.socket_of = socket_of
        self.links: dict[int, _Link] = {}
        self.warned: set[int] = set()

    def pass_now(self, owner: int, fd: int, data: bytes) -> bool:
        frame = _LENGTH.pack(len(data)) + data
        for _ in range(2):  # a link broken by the owner's restart is remade once
            link = self.links.get(owner)
            try:
                if link is None or link.broken:
                    link = self.links[owner] = self._connect(owner)
                return self._sent(owner, link.send(fd, frame))
            except OSError as e:
                if link is not None:
                    link.close()
                self.links.pop(owner, None)
                error = e
        self._warn(owner, f"{error}")
        return False

    def _connect(self, owner: int) -> _Link:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.connect(self.socket_of(owner))  # a Unix socket connects at once or fails
        except OSError:
            sock.close()
            raise
        return _Link(sock, asyncio.get_running_loop())

    def _sent(self, owner: int, sent: bool) -> bool:
        if sent:
            self.warned.discard(owner)
        else:
            self._warn(owner, "its hand-off link is full")
        return sent

    def _warn(self, owner: int, why: str) -> None:
        if owner not in self.warned:
            self.warned.add(owner)
            log.warning("cannot hand a connection to worker %d (%s): serving its calls here", owner, why)

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()


class HandoffListener:
    """Accepts the other workers' links on `path` and adopts each connection they send."""

    def __init__(self, path: str, adopt: Callable[[socket.socket, bytes], None], max_frame: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by this worker's previous run
        self.loop = asyncio.get_running_loop()
        self.adopt, self.max_frame = adopt, max_frame
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.peers: dict[int, _Receiver] = {}
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            peer.setblocking(False)
            self.peers[peer.fileno()] = _Receiver(peer, self)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for peer in list(self.peers.values()):
            peer.close()


class _Receiver:
    """One other worker's link: frames in, each paired with the descriptor that came with its first byte."""

    def __init__(self, sock: socket.socket, listener: HandoffListener) -> None:
        self.sock, self.listener = sock, listener
        self.buffer = bytearray()
        self.fds: deque[int] = deque()
        self.fileno = sock.fileno()
        listener.loop.add_reader(self.fileno, self._readable)

    def _readable(self) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, _READ_BYTES, _MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.error("a worker's hand-off link failed: %s", e)
            self.close()
            return
        self.fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            log.error("a hand-off read lost descriptors; closing the link")
            self.close()
            return
        if not data:
            self.close()
            return
        self.buffer += data
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > self.listener.max_frame:
                log.error("a hand-off frame of %d bytes is over the bound; closing the link", length)
                self.close()
                return
            end = _LENGTH.size + length
            if len(buffer) < end:
                return
            if not self.fds:
                log.error("a hand-off frame came without its connection; closing the link")
                self.close()
                return
            data = bytes(buffer[_LENGTH.size : end])
            del buffer[:end]
            sock = socket.socket(fileno=self.fds.popleft())
            sock.setblocking(False)
            try:
                self.listener.adopt(sock, data)
            except Exception:
                log.exception("adopting a handed-off connection failed")
                sock.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.listener.loop.remove_reader(self.fileno)
        self.listener.peers.pop(self.fileno, None)
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.sock.close()
