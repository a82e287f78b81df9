"""Subscribes to every replica's vLLM KV-cache events and feeds proxy/kv_residency.py (optional: `kv_events`).

Contract:
- Each replica's publisher is vLLM's `--kv-events-config '{"enable_kv_cache_events": true, "publisher":
  "zmq", "endpoint": "tcp://*:5557"}'`, which binds; the proxy connects a SUB socket to the replica's
  endpoint: `kv_events.endpoints[url]` if listed, else `tcp://<the replica URL's host>:<kv_events.port>`.
- The loop follows the replica set (static, admin API, DNS discovery) once a second: a new replica is
  subscribed, a removed one's socket closed and its view dropped. ZMQ reconnects by itself, so a replica
  restarting needs nothing (its sequence numbers start again: the view starts afresh, proxy/kv_residency.py).
- A message that is not `[topic, seq, batch]` is counted (`bad`) and skipped, and a frame over
  `MAX_FRAME_BYTES` closes that connection (ZMQ reconnects): nothing a replica sends can stop the loop or
  grow the proxy's memory past the index's bounds.
- The figures reach the scheduler through `RequestInfo.kv_resident` (proxy/calls.py): stealing and the
  prefix-cache scorer read them (docs/saga-policy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import msgspec
import zmq
import zmq.asyncio

from proxy.config import KvEventsConfig
from proxy.kv_residency import KvResidency, decode_batch
from proxy.scheduler import SchedulerCore

log = logging.getLogger("saga.kv_events")
# vLLM batches a step's events (a few thousand blocks' token ids: well under a MiB); a publisher sending
# more per frame is not vLLM, and is cut off rather than buffered
MAX_FRAME_BYTES = 64 * 1024 * 1024


def endpoint_for(replica: str, config: KvEventsConfig) -> str | None:
    """The ZMQ endpoint of `replica`'s KV events, or None when the config names none."""
    listed = config.endpoints.get(replica)
    if listed is not None:
        return listed
    if config.port is None:
        return None
    host = urlsplit(replica).hostname
    if not host:
        return None
    return f"tcp://[{host}]:{config.port}" if ":" in host else f"tcp://{host}:{config.port}"


class KvEventSubscriber:
    """The SUB sockets, one per replica, and the index they feed."""

    def __init__(self, config: KvEventsConfig, index: KvResidency) -> None:
        self.config = config
        self.index = index
        self.context = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self.poller = zmq.asyncio.Poller()  # every socket in `sockets`
        self.bad = 0  # frames that were not a batch

    def follow(self, replicas: list[str]) -> None:
        """Subscribe to new replicas, close removed ones."""
        wanted = set(replicas)
        for replica in list(self.sockets):
            if replica not in wanted:
                sock = self.sockets.pop(replica)
                self.poller.unregister(sock)
                sock.close(linger=0)
                self.index.forget_replica(replica)
        for replica in replicas:
            if replica in self.sockets:
                continue
            endpoint = endpoint_for(replica, self.config)
            if endpoint is None:
                continue
            sock = self.context.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)  # a larger frame drops the connection (ZMQ)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as e:
                sock.close(linger=0)
                log.warning("KV events of %s: cannot connect to %r: %s", replica, endpoint, e)
                continue
            self.sockets[replica] = sock
            self.poller.register(sock, zmq.POLLIN)
            self.index.replica(replica).endpoint = endpoint
            log.info("KV events of %s: subscribed to %s", replica, endpoint)

    def take(self, replica: str, frames: list[bytes]) -> None:
        """One received message: `[topic, seq, payload]`."""
        if len(frames) != 3 or len(frames[1]) != 8:
            self.bad += 1
            return
        try:
            events, skipped = decode_batch(frames[2])
        except msgspec.DecodeError:
            self.bad += 1
            return
        self.index.apply(replica, int.from_bytes(frames[1], "big"), events, skipped)

    async def poll(self, timeout_s: float) -> None:
        """Drain every socket with something to read, waiting up to `timeout_s` for the first."""
        if not self.sockets:
            await asyncio.sleep(timeout_s)
            return
        by_socket = {sock: replica for replica, sock in self.sockets.items()}
        for sock, _ in await self.poller.poll(timeout_s * 1000):
            replica = by_socket[sock]
            for _ in range(1000):  # a busy replica cannot starve the others
                try:
                    frames = await sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.take(replica, frames)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()
        self.context.term()


async def kv_events_loop(core: SchedulerCore, subscriber: KvEventSubscriber, follow_s: float = 1.0) -> None:
    """Runs until cancelled: follows the replica set every `follow_s` and reads the events between."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            subscriber.follow(list(core.replicas))
            until = loop.time() + follow_s
            while (left := until - loop.time()) > 0:
                try:
                    await subscriber.poll(min(left, 0.25))
                except zmq.ZMQError as e:  # a socket closed under the poller: follow again
                    log.warning("KV events: %s", e)
                    break
    finally:
        with contextlib.suppress(zmq.ZMQError):
            subscriber.close()
