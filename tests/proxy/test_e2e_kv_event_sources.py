"""End to end: the proxy finds where each replica publishes its KV-cache events by asking it (vLLM 0.32's
`GET /kv_event_sources`), subscribes to every data-parallel rank, and falls back to `kv_events.port` where a
replica cannot say."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import zmq
import zmq.asyncio

from proxy.config import KvEventsConfig, ProxyConfig
from proxy.kv_events import KvEventSubscriber
from proxy.kv_residency import KvResidency
from proxy.server import running_proxy
from simulator.kv_events import KvEvent, block_removed, block_stored, encode_message
from simulator.server import start_fleet
from tests.proxy.fakes import FakeReplica, fake_replica

BS = 16
WAIT_S = 10.0


class Rank:
    """A raw ZMQ publisher standing in for one data-parallel rank's engine: its own sequence numbers."""

    def __init__(self, context: zmq.asyncio.Context, rank: int) -> None:
        self.rank = rank
        self.sock = context.socket(zmq.XPUB)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.seq = 0

    async def subscribed(self) -> None:
        assert await asyncio.wait_for(self.sock.recv(), WAIT_S) == b"\x01"

    async def publish(self, *events: KvEvent, seq: int | None = None) -> None:
        self.seq = self.seq if seq is None else seq
        await self.sock.send_multipart(list(encode_message(b"", self.seq, 0.0, list(events), self.rank)))
        self.seq += 1


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


def vllm_sources(*ports: int) -> bytes:
    """vLLM 0.32's answer for a server whose `--kv-events-config` endpoint is `tcp://*:PORT`."""
    sources = {
        str(rank): {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{port}",
            "replay_endpoint": None,
            "buffer_steps": 10000,
            "hwm": 100000,
            "max_queue_size": 100000,
            "topic": "",
        }
        for rank, port in enumerate(ports)
    }
    return json.dumps(sources).encode()


def stored(hashes: list[int], parent: int | None = None, session: str = "s") -> KvEvent:
    return block_stored(hashes, parent, [1] * (len(hashes) * BS), BS, session)


async def _resident(http: aiohttp.ClientSession, url: str, session: str) -> dict[str, int]:
    async with http.get(f"{url}/saga/v1/sessions") as r:
        for s in (await r.json())["sessions"]:
            if s["session_id"] == session:
                resident: dict[str, int] = s["kv_resident"]
                return resident
    raise AssertionError(f"no session {session}")


async def _until(
    http: aiohttp.ClientSession, url: str, check: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    resident: dict[str, int] = {}
    for _ in range(int(WAIT_S / 0.05)):
        resident = await _resident(http, url, "s")
        if check(resident):
            return resident
        await asyncio.sleep(0.05)
    raise AssertionError(resident)


async def _kv_events(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/replicas") as r:
        (row,) = (await r.json())["replicas"]
    events: dict[str, Any] = row["kv_events"]
    return events


async def _chat(
    http: aiohttp.ClientSession, url: str, replica: FakeReplica, body_session: str | None = None
) -> str | None:
    """One call of the session; the `X-data-parallel-rank` the replica got with it."""
    body: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    if body_session is not None:
        body["session_id"] = body_session
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": "s"}) as r:
        assert r.status == 200, await r.text()
    ranks = [v for k, v in replica.headers[-1].items() if k.lower() == "x-data-parallel-rank"]
    assert len(ranks) <= 1
    return ranks[0] if ranks else None


@contextlib.asynccontextmanager
async def two_rank_proxy(ranks: list[Rank]) -> AsyncIterator[tuple[FakeReplica, str]]:
    """A fake replica listing `ranks` at its `/kv_event_sources`, and the proxy subscribed to each."""
    async with fake_replica() as replica:
        replica.kv_event_sources = vllm_sources(*(r.port for r in ranks))
        config = ProxyConfig(
            replicas=[replica.url], port=0, health_interval_s=0.2, kv_events=KvEventsConfig()
        )
        async with running_proxy(config) as url:
            for rank in ranks:
                await rank.subscribed()
            yield replica, url


async def test_two_ranks_found_by_asking_each_followed_apart(
    http: aiohttp.ClientSession, zctx: zmq.asyncio.Context
) -> None:
    ranks = [Rank(zctx, 0), Rank(zctx, 1)]
    async with two_rank_proxy(ranks) as (replica, url):
        assert await _chat(http, url, replica) is None  # the session, known to the proxy; no rank yet
        # the same blocks on both ranks: two caches, nothing shared
        await ranks[0].publish(stored([1, 2]))
        await ranks[1].publish(stored([1, 2, 3, 4]))
        assert await _until(http, url, lambda r: r.get(replica.url) == 4 * BS) == {replica.url: 4 * BS}
        assert await _chat(http, url, replica) == "1"  # vLLM sends it to the rank caching its KV
        events = await _kv_events(http, url)
        assert events["source"] == "kv_event_sources"
        assert {rank: shown["endpoint"] for rank, shown in events["ranks"].items()} == {
            "0": f"tcp://127.0.0.1:{ranks[0].port}",
            "1": f"tcp://127.0.0.1:{ranks[1].port}",
        }
        # rank 0 evicts its copy, then rank 1 loses a batch (a gap: its view starts afresh)
        await ranks[0].publish(block_removed([1]))
        await ranks[1].publish(seq=5)
        assert await _until(http, url, lambda r: r.get(replica.url) == 0) == {replica.url: 0}
        events = await _kv_events(http, url)
        assert (events["ranks"]["0"]["gaps"], events["ranks"]["1"]["gaps"]) == (0, 1)
        # rank 0's view went on through rank 1's gap: its next batch is no gap
        await ranks[0].publish(stored([7, 8, 9]))
        assert await _until(http, url, lambda r: r.get(replica.url) == 3 * BS) == {replica.url: 3 * BS}
        assert await _chat(http, url, replica) == "0"
        assert (await _kv_events(http, url))["gaps"] == 1
        assert replica.kv_event_sources_asked == 1  # a usable answer is not asked again
    for rank in ranks:
        rank.sock.close(linger=0)


async def test_a_body_session_id_is_made_the_session_scheduled_so_vllm_files_the_blocks_there(
    http: aiohttp.ClientSession, zctx: zmq.asyncio.Context
) -> None:
    """A body `session_id` differing from the `X-Session-ID` the client sends: the proxy schedules the
    header's (its precedence) and sends the body's as that one, since vLLM files a call's blocks under the
    body's first; the rank named is the one caching the session scheduled. Before, vLLM filed the blocks
    under the body's id, apart from the session the proxy scheduled (and with client API keys, two tenants'
    equal body ids together)."""
    ranks = [Rank(zctx, 0), Rank(zctx, 1)]
    async with two_rank_proxy(ranks) as (replica, url):
        assert await _chat(http, url, replica) is None
        await ranks[0].publish(stored([1, 2]))  # the session "s", on rank 0
        await ranks[1].publish(stored([11, 12, 13, 14, 15], session="b"))  # a longer chain of "b", on rank 1
        await _until(http, url, lambda r: r.get(replica.url) == 2 * BS)
        for _ in range(int(WAIT_S / 0.05)):
            if (await _kv_events(http, url))["ranks"]["1"]["cached_blocks"] == 5:
                break
            await asyncio.sleep(0.05)
        assert await _chat(http, url, replica) == "0"
        assert await _chat(http, url, replica, body_session="b") == "0"
    assert replica.session_ids == [None, None, "s"]
    for rank in ranks:
        rank.sock.close(linger=0)


async def test_an_older_vllm_without_the_route_falls_back_to_the_port(
    http: aiohttp.ClientSession, zctx: zmq.asyncio.Context
) -> None:
    rank = Rank(zctx, 0)
    async with fake_replica() as replica:  # GET /kv_event_sources: 404
        config = ProxyConfig(
            replicas=[replica.url], port=0, health_interval_s=0.2, kv_events=KvEventsConfig(port=rank.port)
        )
        async with running_proxy(config) as url:
            await rank.subscribed()
            await _chat(http, url, replica)
            await rank.publish(stored([1, 2]))
            assert await _until(http, url, lambda r: bool(r)) == {replica.url: 2 * BS}
            assert await _chat(http, url, replica) is None  # one rank: no rank to name
            events = await _kv_events(http, url)
            assert events["source"] == "port"
            assert events["ranks"]["0"]["endpoint"] == f"tcp://127.0.0.1:{rank.port}"
            assert replica.kv_event_sources_asked == 1
    rank.sock.close(linger=0)


async def test_with_discovery_off_the_replica_is_not_asked(
    http: aiohttp.ClientSession, zctx: zmq.asyncio.Context
) -> None:
    rank, elsewhere = Rank(zctx, 0), Rank(zctx, 0)
    async with fake_replica() as replica:
        replica.kv_event_sources = vllm_sources(elsewhere.port)
        kv_events = KvEventsConfig(port=rank.port, discover=False)
        config = ProxyConfig(replicas=[replica.url], port=0, health_interval_s=0.2, kv_events=kv_events)
        async with running_proxy(config) as url:
            await rank.subscribed()
            assert (await _kv_events(http, url))["source"] == "port"
            assert replica.kv_event_sources_asked == 0
    rank.sock.close(linger=0)
    elsewhere.sock.close(linger=0)


async def test_simulated_replicas_are_subscribed_by_asking_them(http: aiohttp.ClientSession) -> None:
    """`saga serve --simulate` style replicas publishing on `tcp://*:<ephemeral>`, each its own port; the
    proxy is told neither ports nor endpoints."""
    fleet = await start_fleet(2, time_scale=200.0, kv_events_endpoint="tcp://*:*")
    try:
        config = ProxyConfig(
            replicas=fleet.urls,
            port=0,
            health_interval_s=0.2,
            policy="session-affinity",
            kv_events=KvEventsConfig(port=None),
        )
        async with running_proxy(config) as url:
            for _ in range(int(WAIT_S / 0.02)):
                if all(
                    r.kv_publisher is not None and r.kv_publisher.has_subscriber() for r in fleet.replicas
                ):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the proxy never subscribed to the simulated replicas")
            body = {"model": "saga-sim", "messages": [{"role": "user", "content": "lorem ipsum " * 200}]}
            async with http.post(
                f"{url}/v1/chat/completions", json={**body, "max_tokens": 4}, headers={"X-Session-ID": "s"}
            ) as r:
                assert r.status == 200
                served_by = r.headers["X-Replica"]
                usage = (await r.json())["usage"]
            computed = usage["prompt_tokens"] + usage["completion_tokens"] - 1
            (replica,) = [
                u for u, rep in zip(fleet.urls, fleet.replicas, strict=True) if rep.name == served_by
            ]
            held = computed // BS * BS  # (the answer's blocks may come a batch after the prompt's)
            assert await _until(http, url, lambda r: r.get(replica) == held) == {replica: held}
            async with http.get(f"{url}/saga/v1/replicas") as r:
                rows = (await r.json())["replicas"]
            for row, rep in zip(rows, fleet.replicas, strict=True):
                assert rep.kv_publisher is not None
                port = rep.kv_publisher.endpoint.rpartition(":")[2]
                assert row["kv_events"]["source"] == "kv_event_sources"
                assert row["kv_events"]["ranks"]["0"]["endpoint"] == f"tcp://127.0.0.1:{port}"
    finally:
        await fleet.close()


async def test_a_replica_that_later_lists_its_ranks_is_subscribed_to_them_instead(
    zctx: zmq.asyncio.Context,
) -> None:
    """Down or too old at first: the port fallback; once it lists its ranks (asked again after `retry_s`),
    those replace the fallback, whose view is dropped."""
    fallback, ranks = Rank(zctx, 0), [Rank(zctx, 0), Rank(zctx, 1)]
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=fallback.port), kv)

    async def follow_until(check: Callable[[], bool]) -> None:
        for _ in range(int(WAIT_S / 0.02)):
            subscriber.follow([replica.url])
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(kv.replicas)

    async with fake_replica() as replica:  # a 404 at first
        try:
            await follow_until(lambda: (replica.url, 0) in subscriber.sockets)
            await fallback.subscribed()
            kv.apply(replica.url, 0, [stored([1])])
            assert kv.report(replica.url)["source"] == "port"  # type: ignore[index]
            subscriber.book.retry_s = 0.0
            replica.kv_event_sources = vllm_sources(*(r.port for r in ranks))
            await follow_until(lambda: len(subscriber.sockets) == 2)
            for rank in ranks:
                await rank.subscribed()
            report = kv.report(replica.url)
            assert report is not None and report["source"] == "kv_event_sources"
            assert [shown["endpoint"] for shown in report["ranks"].values()] == [
                f"tcp://127.0.0.1:{r.port}" for r in ranks
            ]
            assert report["batches"] == 0 and kv.resident_tokens("s") == {}  # the fallback's view is gone
            assert replica.kv_event_sources_asked >= 2
            subscriber.follow([])  # the replica left: its sockets and views go
            assert subscriber.sockets == {} and kv.replicas == {} and subscriber.book.answers == {}
        finally:
            subscriber.close()
            for rank in (fallback, *ranks):
                rank.sock.close(linger=0)
