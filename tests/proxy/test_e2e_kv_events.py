"""End to end: the proxy subscribes to simulated replicas' vLLM KV-cache events (ZMQ, vLLM's wire format)
and knows which part of each session's context every replica still caches, and what it evicted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq
import zmq.asyncio

from proxy import kv_events
from proxy.config import KvEventsConfig, ProxyConfig
from proxy.kv_events import KvEventSubscriber, kv_events_loop
from proxy.kv_residency import KvResidency
from proxy.scheduler import ConfigError
from proxy.server import running_proxy
from simulator.kv_events import block_stored, encode_message
from simulator.server import ReplicaFleet, start_fleet

BS = 16  # the simulated replica's block size (vLLM's on a GPU)
WAIT_S = 10.0
ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    # 250 blocks: 4,000 tokens of KV, so two long sessions cannot both stay cached
    fleet = await start_fleet(1, time_scale=200.0, kv_events_endpoint="tcp://127.0.0.1:*", num_gpu_blocks=250)
    try:
        yield fleet
    finally:
        await fleet.close()


def _config(fleet: ReplicaFleet) -> ProxyConfig:
    endpoints = {}
    for url, replica in zip(fleet.urls, fleet.replicas, strict=True):
        assert replica.kv_publisher is not None
        endpoints[url] = replica.kv_publisher.endpoint
    kv_events = KvEventsConfig(port=None, endpoints=endpoints)
    return ProxyConfig(
        replicas=fleet.urls,
        port=0,
        seed=1,
        health_interval_s=0.2,
        policy="session-affinity",
        kv_events=kv_events,
    )


async def _subscribed(fleet: ReplicaFleet) -> None:
    for _ in range(int(WAIT_S / 0.02)):
        if all(r.kv_publisher is not None and r.kv_publisher.has_subscriber() for r in fleet.replicas):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the proxy never subscribed to the replicas' KV events")


async def _call(http: aiohttp.ClientSession, url: str, session: str, words: int) -> dict[str, Any]:
    body = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": f"{session} " + "lorem ipsum " * words}],
        "max_tokens": 8,
    }
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
        assert r.status == 200, await r.text()
        usage: dict[str, Any] = (await r.json())["usage"]
        return usage


async def _resident(http: aiohttp.ClientSession, url: str, session: str) -> dict[str, int]:
    async with http.get(f"{url}/saga/v1/sessions") as r:
        assert r.status == 200
        for s in (await r.json())["sessions"]:
            if s["session_id"] == session:
                resident: dict[str, int] = s["kv_resident"]
                return resident
    raise AssertionError(f"no session {session}")


async def _until(http: aiohttp.ClientSession, url: str, session: str, check: Any) -> dict[str, int]:
    """The session's residency once `check` holds (events arrive after the answer)."""
    resident: dict[str, int] = {}
    for _ in range(int(WAIT_S / 0.05)):
        resident = await _resident(http, url, session)
        if check(resident):
            return resident
        await asyncio.sleep(0.05)
    raise AssertionError(f"{session}: {resident}")


async def _kv_events_row(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/replicas") as r:
        (row,) = (await r.json())["replicas"]
    events: dict[str, Any] = row["kv_events"]
    return events


async def test_the_proxy_knows_what_each_replica_caches_of_a_session_and_what_it_evicts(
    http: aiohttp.ClientSession, fleet: ReplicaFleet
) -> None:
    replica = fleet.urls[0]
    async with running_proxy(_config(fleet)) as url:
        await _subscribed(fleet)
        usage = await _call(http, url, "s-1", 600)
        computed = usage["prompt_tokens"] + usage["completion_tokens"] - 1  # the last token has no KV yet
        resident = await _until(http, url, "s-1", lambda r: r.get(replica, 0) > 0)
        assert resident == {replica: computed // BS * BS}
        # another session's long prompt needs most of the KV: the replica evicts s-1's blocks
        await _call(http, url, "s-2", 1_500)
        evicted = await _until(http, url, "s-1", lambda r: r.get(replica, 0) < computed // BS * BS)
        assert evicted[replica] < computed // BS * BS
        assert (await _resident(http, url, "s-2"))[replica] > 0
        for _ in range(int(WAIT_S / 0.05)):  # events arriving between the two reads move the count
            events = await _kv_events_row(http, url)
            async with http.get(f"{url}/metrics") as r:
                scraped = await r.text()
            if (await _kv_events_row(http, url))["cached_blocks"] == events["cached_blocks"]:
                break
            await asyncio.sleep(0.05)
        assert events["source"] == "endpoints" and list(events["ranks"]) == ["0"]
        assert events["ranks"]["0"]["endpoint"] == fleet.replicas[0].kv_publisher.endpoint  # type: ignore[union-attr]
        assert events["batches"] > 0 and events["gaps"] == 0 and events["cached_blocks"] > 0
        blocks = float(events["cached_blocks"])
        assert f'saga_kv_events_cached_blocks{{replica="{replica}"}} {blocks}' in scraped
        assert f'saga_kv_events_gaps_total{{replica="{replica}"}} 0.0' in scraped
        # the replica drops its whole prefix cache: the proxy's view of it goes too
        async with http.post(f"{replica}/reset_prefix_cache") as r:
            assert (await r.json())["success"] is True
        await _until(http, url, "s-2", lambda r: r == {})


async def test_a_proxy_without_kv_events_reports_none(
    http: aiohttp.ClientSession, fleet: ReplicaFleet
) -> None:
    config = ProxyConfig(replicas=fleet.urls, port=0, health_interval_s=0.2)
    async with running_proxy(config) as url:
        await _call(http, url, "s-1", 10)
        async with http.get(f"{url}/saga/v1/sessions") as r:
            (session,) = (await r.json())["sessions"]
        assert "kv_resident" not in session
        async with http.get(f"{url}/saga/v1/replicas") as r:
            (row,) = (await r.json())["replicas"]
        assert row["kv_events"] is None


@pytest.mark.parametrize(
    ("kv_events", "message"),
    [
        (KvEventsConfig(port=70_000), "kv_events.port"),
        (KvEventsConfig(max_blocks=0), "kv_events.max_sessions and kv_events.max_blocks"),
        (KvEventsConfig(endpoints={"http://r:8000": "http://r:5557"}), "kv_events.endpoints"),
    ],
)
def test_bad_kv_events_settings_are_refused_by_name(kv_events: KvEventsConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxyConfig(replicas=["http://r:8000"], kv_events=kv_events).validate()


async def test_a_publisher_sending_garbage_is_counted_and_does_not_stop_the_subscriber() -> None:
    """A raw ZMQ publisher (not vLLM): malformed messages, then a real batch, which still arrives."""
    context = zmq.asyncio.Context()
    pub = context.socket(zmq.XPUB)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=None, endpoints={"http://r:1": endpoint}), kv)
    try:
        subscriber.follow(["http://r:1"])
        assert await asyncio.wait_for(pub.recv(), WAIT_S) == b"\x01"  # the subscription reached it
        garbage: list[list[bytes]] = [
            [b"only one frame"],
            [b"", b"short", b"payload"],  # a sequence number is 8 bytes
            [b"", (0).to_bytes(8, "big"), b"\xc1 not msgpack"],
            [b"", (1).to_bytes(8, "big"), b"\x91" * 100_000],  # deeply nested arrays
            # a batch whose one event nests past the decoder's depth (a RecursionError, were it not caught)
            [b"", (2).to_bytes(8, "big"), b"\x93\xcb" + bytes(8) + b"\x91" + b"\x91" * 100_000 + b"\xc0\x00"],
        ]
        for frames in garbage:
            await pub.send_multipart(frames)
        await pub.send_multipart(
            list(encode_message(b"", 3, 0.0, [block_stored([5, 6], None, [1] * 32, 16, "s")]))
        )
        for _ in range(int(WAIT_S / 0.05)):
            await subscriber.poll(0.05)
            if kv.resident_tokens("s"):
                break
        assert subscriber.bad == len(garbage)
        assert kv.resident_tokens("s") == {"http://r:1": 32}
    finally:
        subscriber.close()
        pub.close(linger=0)
        context.term()


async def test_the_proxys_figure_is_what_the_replica_then_finds_cached(
    http: aiohttp.ClientSession, fleet: ReplicaFleet
) -> None:
    """Five agents sharing a system prompt take turns on one replica whose KV holds about two of their
    contexts, so it keeps evicting; before each call the proxy says how much of the session's context the
    replica caches, and the replica's answer says how much of the call's prompt it found cached: the same
    (agents whose own blocks were all evicted still find the shared system prompt, and the proxy says so)."""
    replica = fleet.urls[0]
    system = {"role": "system", "content": "You are a careful coding agent. " * 40}
    conversations = {
        f"agent-{i}": [system, {"role": "user", "content": f"task {i}: " + "fix it " * 150}] for i in range(5)
    }
    compared = []
    async with running_proxy(_config(fleet)) as url:
        await _subscribed(fleet)
        for turn in range(4):
            for session, messages in conversations.items():
                await _settled(http, url)
                said = (await _resident(http, url, session)).get(replica, 0) if turn else None
                body = {"model": "saga-sim", "messages": messages, "max_tokens": 8}
                headers = {"X-Session-ID": session}
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    answer = await r.json()
                found = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
                if said is not None:
                    compared.append((session, turn, said, found))
                messages += [
                    {"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
                    {"role": "user", "content": f"turn {turn}: " + "and then " * 120},
                ]
    before = {(session, turn): found for session, turn, _, found in compared}
    # evictions happened: some sessions found less than the turn before
    assert any(found < before.get((session, turn - 1), 0) for session, turn, _, found in compared)
    assert all(said == found for _, _, said, found in compared), compared


async def _settled(http: aiohttp.ClientSession, url: str) -> None:
    """Until the proxy has read every batch the replica published (its count stops moving)."""
    last = -1
    for _ in range(int(WAIT_S / 0.05)):
        async with http.get(f"{url}/saga/v1/replicas") as r:
            batches = sum(row["kv_events"]["batches"] for row in (await r.json())["replicas"])
        if batches == last:
            return
        last = batches
        await asyncio.sleep(0.05)


class _Core:
    """What kv_events_loop reads of the scheduler core: the replica set."""

    def __init__(self, *replicas: str) -> None:
        self.replicas = dict.fromkeys(replicas)


async def _read(kv: KvResidency, replica: str, batches: int) -> None:
    for _ in range(int(WAIT_S / 0.02)):
        report = kv.report(replica)
        if report is not None and report["batches"] >= batches:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{replica}: {kv.report(replica)}")


async def test_a_replica_whose_ranks_cannot_all_be_opened_stops_no_other_replicas_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Replica A lists more ranks than ZMQ will open sockets for (its per-context limit, 1,023 by default:
    here 4); B, subscribed before, is still read, A's ranks past the limit are counted and warned of once."""
    context = zmq.asyncio.Context()
    pub = context.socket(zmq.XPUB)
    endpoint = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    a, b = "http://a:1", "http://b:1"
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=None, endpoints={b: endpoint}), kv)
    subscriber.context.set(zmq.MAX_SOCKETS, 4)
    core = _Core(b)
    loop = asyncio.create_task(kv_events_loop(core, subscriber, follow_s=0.05))  # type: ignore[arg-type]
    try:
        assert await asyncio.wait_for(pub.recv(), WAIT_S) == b"\x01"
        await pub.send_multipart(
            list(encode_message(b"", 0, 0.0, [block_stored([1], None, [1] * BS, BS, "s")]))
        )
        await _read(kv, b, 1)
        # A said where its ten ranks publish (as its GET /kv_event_sources would): B and three of them fit
        ranks = {rank: f"tcp://127.0.0.1:{1 + rank}" for rank in range(10)}
        subscriber.book.answered(a, ranks, asyncio.get_running_loop().time())
        core.replicas[a] = None
        for seq in range(1, 6):  # several follows later, B's events are still read
            await pub.send_multipart(
                list(encode_message(b"", seq, 0.0, [block_stored([1 + seq], seq, [1] * BS, BS, "s")]))
            )
            await _read(kv, b, 1 + seq)
        assert not loop.done()
        assert kv.resident_tokens("s") == {b: 6 * BS}
        report = kv.report(a)
        assert report is not None and len(report["ranks"]) == 3 and report["ranks_not_subscribed"] == 7
        warned = [r for r in caplog.records if r.levelname == "WARNING" and a in r.getMessage()]
        assert len(warned) == 1, warned
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        pub.close(linger=0)
        context.term()


async def test_ranks_past_the_bound_on_sockets_are_not_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_events, "MAX_SOCKETS", 5)
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=None), kv)
    # the context holds more than the bound: the bound, not ZMQ, refuses the rest
    assert subscriber.context.get(zmq.MAX_SOCKETS) > kv_events.MAX_SOCKETS
    now = asyncio.get_running_loop().time()
    for replica in ("http://a:1", "http://b:1"):
        subscriber.book.answered(replica, {rank: f"tcp://127.0.0.1:{1 + rank}" for rank in range(4)}, now)
    try:
        subscriber.follow(["http://a:1", "http://b:1"])
        assert len(subscriber.sockets) == 5
        assert [kv.report(r)["ranks_not_subscribed"] for r in ("http://a:1", "http://b:1")] == [0, 3]  # type: ignore[index]
        subscriber.follow(["http://b:1"])  # A leaves: B's ranks fit now
        assert len(subscriber.sockets) == 4 and kv.report("http://b:1")["ranks_not_subscribed"] == 0  # type: ignore[index]
        assert kv.report("http://a:1") is None
    finally:
        subscriber.close()


async def test_a_replica_that_cannot_be_followed_is_logged_and_the_others_still_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica URL the port rule cannot take apart (the defect of following it raises) is logged at
    ERROR; the loop follows the others."""
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=5557, discover=False), kv)
    bad, good = "http://[::1:8000", "http://127.0.0.1:8000"
    loop = asyncio.create_task(kv_events_loop(_Core(bad, good), subscriber, follow_s=0.05))  # type: ignore[arg-type]
    try:
        for _ in range(int(WAIT_S / 0.02)):
            if kv.report(good) is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a few follows more
        assert not loop.done()
        assert kv.report(good) is not None and kv.report(bad) is None
        assert any(r.levelname == "ERROR" and bad in r.getMessage() for r in caplog.records)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_a_burst_of_batches_is_read_in_turns_that_let_the_event_loop_run() -> None:
    """Batches waiting in a socket are applied a bounded number of blocks at a time, and other tasks (the
    calls) run between the turns: an awaited receive that finds a message waiting does not yield."""
    context = zmq.asyncio.Context()
    pub = context.socket(zmq.XPUB)
    endpoint = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    kv = KvResidency()
    subscriber = KvEventSubscriber(KvEventsConfig(port=None, endpoints={"http://r:1": endpoint}), kv)
    ticks = 0  # turns another task had

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    applied: list[tuple[int, int]] = []  # (ticks then, blocks) of each batch applied
    apply = kv.apply

    def recording(replica: str, seq: int, events: list[Any], skipped: int = 0, rank: int = 0) -> Any:
        applied.append((ticks, sum(len(e.block_hashes) for e in events)))
        return apply(replica, seq, events, skipped, rank)

    kv.apply = recording  # type: ignore[method-assign]
    other = asyncio.create_task(other_task())
    per_batch, batches = 2_000, 40
    try:
        subscriber.follow(["http://r:1"])
        assert await asyncio.wait_for(pub.recv(), WAIT_S) == b"\x01"
        for seq in range(batches):
            hashes = list(range(seq * per_batch, (seq + 1) * per_batch))
            await pub.send_multipart(
                list(encode_message(b"", seq, 0.0, [block_stored(hashes, None, [], BS)]))
            )
        await asyncio.sleep(0.1)  # ZMQ queues them: the subscriber finds them waiting
        for _ in range(int(WAIT_S / 0.05)):
            if len(applied) == batches:
                break
            await subscriber.poll(0.05)
        assert len(applied) == batches
        # blocks applied while no other task ran: at most a turn's budget and the batch that spent it
        most = run = 0
        for i, (at, blocks) in enumerate(applied):
            run = run + blocks if i and at == applied[i - 1][0] else blocks
            most = max(most, run)
        assert most <= kv_events.BLOCKS_PER_TURN + per_batch, (most, applied)
    finally:
        other.cancel()
        subscriber.close()
        pub.close(linger=0)
        context.term()


def test_a_publisher_faster_than_the_proxy_cannot_grow_the_proxy_past_its_receive_queue() -> None:
    """A publisher sending valid batches faster than the proxy applies them grew the proxy without bound:
    ZMQ held up to 100,000 messages of up to 64 MiB for one rank (236 to 2,749 MB in 3 s:
    docs/results/reliability-s42/before-99890b6.txt). Now a rank's queue holds `RECEIVE_QUEUE_MESSAGES`, and
    what the proxy cannot take yet waits on the publisher's side (vLLM's queue, which drops past its own
    bound: the proxy then sees a gap and starts the view afresh)."""
    publisher = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert publisher.stdout is not None
        endpoint = publisher.stdout.readline().strip()
        kv = KvResidency()
        subscriber = KvEventSubscriber(KvEventsConfig(port=None, endpoints={"http://r:1": endpoint}), kv)
        error = subscriber._open("http://r:1", 0, endpoint, "endpoints")  # the proxy's socket, as it sets it
        assert error is None
        before = _rss_mib()
        publisher.stdout.readline()  # it saw the subscription and sends 240 batches of ~0.9 MB at once
        time.sleep(5.0)  # the proxy's loop reads nothing meanwhile (busy); ZMQ's own thread receives
        grown = _rss_mib() - before
        assert grown < 120, f"the proxy grew {grown:.0f} MiB while it read nothing"  # 100,000: ~205
        subscriber.close()
    finally:
        publisher.kill()
        publisher.wait()


# A publisher of valid batches as fast as it can: 240 of ~0.9 MB (100,000 blocks), all kept on its side
_PUBLISHER = """
import sys, time, zmq
from simulator.kv_events import block_stored, encode_message
context = zmq.Context()
pub = context.socket(zmq.XPUB)
pub.setsockopt(zmq.SNDHWM, 0)
print(f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}", flush=True)
pub.recv()
print("subscribed", flush=True)
for seq in range(240):
    hashes = list(range(2**60 + seq * 100_000, 2**60 + (seq + 1) * 100_000))  # 9 bytes each in msgpack
    pub.send_multipart(list(encode_message(b"", seq, 0.0, [block_stored(hashes, None, [], 16)])))
time.sleep(60)
"""


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
