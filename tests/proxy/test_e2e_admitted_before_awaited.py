"""End-to-end over loopback: a call admitted by the event right after its arrival, before its task ran.

A call that waits for admission is served by a task the fast server starts; the handler used to register for
its decision only once that task ran. An event in between (another call's end, a session's end, a tick) that
admitted it applied a decision no one waited for: the call was never sent, listed in flight at an idle
replica, and its client waited until its own timeout (a review's agents: 15 s, once 200 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from proxy import app as proxy_app
from proxy.context import DecisionGate
from proxy.scheduler import Decision, RequestInfo, SchedulerCore, build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, replica_app, serving

SMALL_KV = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="8"} 1\n'  # 128 tokens


class AdmittedAtOnceCore(SchedulerCore):
    """Ends session "a" in the loop's next callback after a call of "b" was made to wait, as an event that
    lands before the waiting call's task runs would: "a"'s room goes to "b"."""

    def __init__(self, replicas: list[str], gates: list[DecisionGate]) -> None:
        super().__init__(replicas, build_policy("saga"), time.monotonic)
        self.gates = gates
        self.raced = False

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        decisions = super().request_arrived(req)
        if req.session_id == "b" and not decisions:
            self.raced = True
            asyncio.get_running_loop().call_soon(lambda: self.gates[0].apply(self.session_ended("a")))
        return decisions


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_a_call_admitted_before_its_task_ran_is_sent(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates: list[DecisionGate] = []

    def recorded_gate() -> DecisionGate:
        gates.append(DecisionGate())
        return gates[-1]

    monkeypatch.setattr(proxy_app, "DecisionGate", recorded_gate)
    release, held = asyncio.Event(), asyncio.Event()

    async def chat(request: web.Request) -> web.Response:
        if b"hold me" in await request.read():
            held.set()
            await release.wait()
        return web.Response(body=OK_JSON, content_type="application/json")

    async def post(session: str, content: str) -> int:
        body = {"model": "fake", "messages": [{"role": "user", "content": content}]}
        async with http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-ID": session}) as r:
            await r.read()
            return r.status

    async with serving(replica_app(chat, metrics=SMALL_KV)) as replica:
        core = AdmittedAtOnceCore([replica], gates)
        async with running_proxy(config([replica], policy="saga"), core) as url:
            for _ in range(200):  # until the health loop has read the capacity (bounded)
                async with http.get(f"{url}/saga/v1/replicas") as r:
                    if (await r.json())["replicas"][0]["kv_capacity_tokens"]:
                        break
                await asyncio.sleep(0.02)
            first = asyncio.create_task(post("a", "hold me"))  # runs alone on the replica, its room reserved
            await asyncio.wait_for(held.wait(), 10)
            status = await asyncio.wait_for(post("b", "a second workflow"), 10)
            release.set()
            assert await first == 200
            async with http.get(f"{url}/saga/v1/state") as r:
                state = await r.json()
    assert core.raced and len(gates) == 1  # (the scenario happened: "b" waited, then "a"'s end admitted it)
    assert status == 200
    assert state["in_flight"] == 0
