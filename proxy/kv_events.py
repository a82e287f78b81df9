"""Subscribes to every replica's vLLM KV-cache events and feeds proxy/kv_residency.py (optional: `kv_events`).

Contract:
- Each replica's publisher is vLLM's `--kv-events-config '{"enable_kv_cache_events": true, "publisher":
  "zmq", "endpoint": "tcp://*:5557"}'`, which binds; the proxy connects a SUB socket to each of the
  replica's endpoints, one per data-parallel rank (each its own view in proxy/kv_residency.py):
  `kv_events.endpoints[url]` if listed (rank 0); else, with `kv_events.discover` (the default), the ranks
  the replica's `GET /kv_event_sources` lists (proxy/kv_event_sources.py: asked in the background, so the
  loop never waits on HTTP; nothing is subscribed until the first answer); else, and while that answer is
  a 404 (vLLM before 0.32), an error or lists no rank, `tcp://<the replica URL's host>:<kv_events.port>`
  as rank 0 (none when `port` is None), asking again at most every DISCOVERY_RETRY_S.
- The loop follows the replica set (static, admin API, DNS discovery) once a second: a new replica is
  subscribed, a removed one's sockets closed and its views dropped, and a rank whose endpoint changed (a
  later answer) is subscribed afresh. ZMQ reconnects by itself, so a replica restarting needs nothing (its
  sequence numbers start again: the view starts afresh, proxy/kv_residency.py).
- At most MAX_SOCKETS ranks are subscribed, over all replicas: a rank past it, or one whose socket ZMQ
  will not open or connect, is left out (counted in the replica's `ranks_not_subscribed`, one warning
  naming the replica each time that count changes) and tried again at the next follow. Following one
  replica that fails (a defect) is logged at ERROR and the others are followed still; nothing ends the
  loop but its cancellation.
- A message that is not `[topic, seq, batch]` is counted (`bad`) and skipped, and a frame over
  `MAX_FRAME_BYTES` closes that connection (ZMQ reconnects); at most `RECEIVE_QUEUE_MESSAGES` wait unread
  per rank (the rest wait on the publisher's side, which drops past its own bound: a gap): nothing a replica
  sends can stop the loop or grow the proxy's memory past the index's bounds and these queues. Reading
  yields to the event loop every BLOCKS_PER_TURN blocks applied (a message counts as one more), so a burst
  of batches does not hold up the calls.
- The figures reach the scheduler through `RequestInfo.kv_resident` (proxy/calls.py): stealing and the
  prefix-cache scorer read them (docs/saga-policy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import aiohttp
import msgspec
import zmq
import zmq.asyncio

from proxy.config import KvEventsConfig
from proxy.kv_event_sources import MAX_ANSWER_BYTES, SourceBook, SourcesError, parse_sources
from proxy.kv_residency import KvResidency, ViewKey, decode_batch
from proxy.scheduler import SchedulerCore

log = logging.getLogger("saga.kv_events")
# vLLM batches a step's events (a few thousand blocks' token ids: well under a MiB); a publisher sending
# more per frame is not vLLM, and is cut off rather than buffered
MAX_FRAME_BYTES = 8 * 1024 * 1024
# Messages ZMQ holds for one rank until the proxy reads them; past it ZMQ stops reading that connection, and
# the rest wait on the publisher's side, which drops past its own bound (vLLM's queue: the sequence then
# skips, the view starts afresh and the gap is counted). With MAX_FRAME_BYTES it bounds what a rank's
# publisher can make the proxy hold: 64 of vLLM's batches are seconds of a busy engine's steps, while
# 100,000 of 64 MiB (before 2026-12-06) let a publisher sending valid batches faster than they are applied
# grow the proxy from 236 to 2,749 MB in 3 s (docs/results/reliability-s42/before-99890b6.txt).
RECEIVE_QUEUE_MESSAGES = 64
# a replica whose /kv_event_sources gave nothing usable is asked again at most this often; one call's limit
DISCOVERY_RETRY_S = 30.0
DISCOVERY_TIMEOUT_S = 5.0
# SUB sockets at most (ranks subscribed, over all replicas): 512 replicas of 8 ranks, four replicas listing
# every rank /kv_event_sources may (MAX_RANK); each holds two file descriptors. ZMQ's context holds 1,023
# by default, raised to twice this: a closed socket's slot is freed a moment later (ZMQ's reaper thread)
MAX_SOCKETS = 4096
# blocks applied (~0.5 us each) before the loop lets the calls run: a burst of batches waiting in the sockets
# is read in turns of a few ms (a receive that finds a message waiting does not yield by itself)
BLOCKS_PER_TURN = 10_000


def endpoint_for(replica: str, config: KvEventsConfig) -> str | None:
    """The ZMQ endpoint the config names for `replica` (listed, else the `port` rule), or None."""
    listed = config.endpoints.get(replica)
    if listed is not None:
        return listed
    if config.port is None:
        return None
    host = urlsplit(replica).hostname
    if not host:
        return None
    return f"tcp://[{host}]:{config.port}" if ":" in host else f"tcp://{host}:{config.port}"


async def fetch_sources(replica: str, timeout_s: float = DISCOVERY_TIMEOUT_S) -> dict[int, str]:
    """`replica`'s ranks and endpoints from its `GET /kv_event_sources`; {} when it has no such route (vLLM
    before 0.32). Raises SourcesError, aiohttp.ClientError or TimeoutError."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{replica.rstrip('/')}/kv_event_sources", allow_redirects=False) as r,
    ):
        if r.status == 404:
            return {}
        if r.status != 200:
            raise SourcesError(f"status {r.status}")
        body = bytearray()
        async for chunk in r.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise SourcesError(f"an answer over {MAX_ANSWER_BYTES} bytes")
        return parse_sources(bytes(body), replica)


class KvEventSubscriber:
    """The SUB sockets, one per (replica, rank), and the index they feed."""

    def __init__(self, config: KvEventsConfig, index: KvResidency) -> None:
        self.config = config
        self.index = index
        self.context = zmq.asyncio.Context()
        self.context.set(zmq.MAX_SOCKETS, 2 * MAX_SOCKETS)
        self.sockets: dict[ViewKey, zmq.asyncio.Socket] = {}
        self.poller = zmq.asyncio.Poller()  # every socket in `sockets`
        self.bad = 0  # frames that were not a batch
        self.book = SourceBook(DISCOVERY_RETRY_S)  # the replicas' /kv_event_sources answers
        self.asking: dict[str, asyncio.Task[None]] = {}  # replica -> its /kv_event_sources call in flight
        self.answered = False  # an answer came since the last follow: follow again now

    def follow(self, replicas: list[str]) -> None:
        """Subscribe to new replicas' (and ranks') endpoints, close those no longer wanted."""
        self.answered = False
        wanted: dict[str, tuple[dict[int, str], str]] = {}
        for replica in replicas:
            try:
                wanted[replica] = self._wanted(replica)
            except Exception:  # a defect, not the replica's doing: the others are still followed
                log.exception("KV events of %s: following it failed", replica)
                wanted[replica] = {}, ""
        for replica in [r for r in (*self.asking, *self.book.answers) if r not in wanted]:
            task = self.asking.pop(replica, None)
            if task is not None:
                task.cancel()
            self.book.forget(replica)
        for key in list(self.sockets):
            replica, rank = key
            endpoints = wanted.get(replica, ({}, ""))[0]
            if endpoints.get(rank) != self.index.replicas[replica][rank].endpoint:
                self._close(key)
        unsubscribed = self.index.unsubscribed
        for replica in [r for r in unsubscribed if r not in wanted]:
            del unsubscribed[replica]
        for replica, (endpoints, source) in wanted.items():
            try:
                self._subscribe(replica, endpoints, source)
            except Exception:  # a defect, not the replica's doing: the others are still followed
                log.exception("KV events of %s: following it failed", replica)

    def _subscribe(self, replica: str, endpoints: dict[int, str], source: str) -> None:
        """Open `replica`'s ranks not yet subscribed; count (and warn once of) those that cannot be."""
        left_out, why = 0, ""
        for rank, endpoint in endpoints.items():
            if (replica, rank) in self.sockets:
                self.index.view(replica, rank).source = source
            elif (error := self._open(replica, rank, endpoint, source)) is not None:
                left_out, why = left_out + 1, why or error
        unsubscribed = self.index.unsubscribed
        if left_out != unsubscribed.get(replica, 0):
            if left_out:
                log.warning(
                    "KV events of %s: %d of its %d ranks not subscribed (%s)",
                    replica,
                    left_out,
                    len(endpoints),
                    why,
                )
                unsubscribed[replica] = left_out
            else:
                del unsubscribed[replica]

    def _wanted(self, replica: str) -> tuple[dict[int, str], str]:
        """{rank: endpoint} to subscribe to for `replica`, and how it was found (module contract)."""
        listed = self.config.endpoints.get(replica)
        if listed is not None:
            return {0: listed}, "endpoints"
        if self.config.discover:
            if replica not in self.asking and self.book.due(replica, asyncio.get_running_loop().time()):
                self.asking[replica] = asyncio.create_task(self._ask(replica))
            ranks = self.book.ranks(replica)
            if ranks is None:
                return {}, ""  # the first answer is on its way
            if ranks:
                return ranks, "kv_event_sources"
        endpoint = endpoint_for(replica, self.config)
        return ({0: endpoint}, "port") if endpoint is not None else ({}, "")

    async def _ask(self, replica: str) -> None:
        why = ""
        try:
            ranks = await fetch_sources(replica)
        except Exception as e:  # whatever the replica or the network did, the port fallback holds
            ranks, why = {}, f"{type(e).__name__}: {e}"
        finally:
            self.asking.pop(replica, None)
        if self.book.ranks(replica) is None:  # its first answer is logged, the retries' only by what follows
            if why:
                log.warning("KV events of %s: GET /kv_event_sources failed (%s)", replica, why)
            else:
                log.info("KV events of %s: /kv_event_sources lists %s", replica, ranks or "no publisher")
        self.book.answered(replica, ranks, asyncio.get_running_loop().time())
        self.answered = True

    def _open(self, replica: str, rank: int, endpoint: str, source: str) -> str | None:
        """Subscribe to one rank; None when done, else why not."""
        if len(self.sockets) >= MAX_SOCKETS:
            return f"{MAX_SOCKETS} sockets open, the most subscribed"
        try:
            sock = self.context.socket(zmq.SUB)
        except zmq.ZMQError as e:  # ZMQ's own limit, or the process's on file descriptors
            return f"no socket: {e}"
        try:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE_MESSAGES)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)  # a larger frame drops the connection (ZMQ)
            sock.setsockopt(zmq.IPV6, 1)  # a replica's bracketed IPv6 address (IPv4 still works)
            sock.connect(endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            return f"cannot connect to {endpoint!r}: {e}"
        self.sockets[(replica, rank)] = sock
        self.poller.register(sock, zmq.POLLIN)
        view = self.index.view(replica, rank)
        view.endpoint, view.source = endpoint, source
        log.info("KV events of %s (rank %d): subscribed to %s", replica, rank, endpoint)
        return None

    def _close(self, key: ViewKey) -> None:
        sock = self.sockets.pop(key)
        self.poller.unregister(sock)
        sock.close(linger=0)
        self.index.forget_view(*key)

    def take(self, replica: str, frames: list[bytes], rank: int = 0) -> int:
        """One received message of `replica`'s rank `rank`: `[topic, seq, payload]`; the blocks it named."""
        if len(frames) != 3 or len(frames[1]) != 8:
            self.bad += 1
            return 0
        try:
            events, skipped = decode_batch(frames[2])
        except msgspec.DecodeError:
            self.bad += 1
            return 0
        return self.index.apply(replica, int.from_bytes(frames[1], "big"), events, skipped, rank)

    async def poll(self, timeout_s: float) -> None:
        """Drain every socket with something to read, waiting up to `timeout_s` for the first."""
        if not self.sockets:
            await asyncio.sleep(timeout_s)
            return
        by_socket = {sock: key for key, sock in self.sockets.items()}
        spent = 0  # blocks applied since the loop last ran something else
        for sock, _ in await self.poller.poll(timeout_s * 1000):
            replica, rank = by_socket[sock]
            for _ in range(1000):  # a busy rank cannot starve the others
                try:
                    frames = await sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    spent += 1 + self.take(replica, frames, rank)
                except Exception:  # a defect: the rest are read, the view starts afresh (it may have evicted)
                    log.exception("KV events of %s (rank %d): a batch failed", replica, rank)
                    self.index.view(replica, rank).reset()
                if spent >= BLOCKS_PER_TURN:
                    spent = 0
                    await asyncio.sleep(0)

    def close(self) -> None:
        for task in self.asking.values():
            task.cancel()
        self.asking.clear()
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()
        self.context.term()


async def kv_events_loop(core: SchedulerCore, subscriber: KvEventSubscriber, follow_s: float = 1.0) -> None:
    """Runs until cancelled: follows the replica set every `follow_s` (and as soon as a replica has said
    where it publishes) and reads the events between."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                subscriber.follow(list(core.replicas))
            except Exception:  # a defect: the sockets already open are still read
                log.exception("KV events: following the replicas failed")
            until = loop.time() + follow_s
            while (left := until - loop.time()) > 0 and not subscriber.answered:
                try:
                    await subscriber.poll(min(left, 0.25))
                except zmq.ZMQError as e:  # a socket closed under the poller: follow again
                    log.warning("KV events: %s", e)
                    break
    finally:
        with contextlib.suppress(zmq.ZMQError):
            subscriber.close()
