"""End-to-end over loopback: one `prompt_cache_key` sent with the calls of concurrent conversations.

OpenAI's key groups calls sharing a prefix; apps send one per app or user as often as one per conversation.
Read as a session, it bound every call of an app to one replica while the other idled (0.61x round-robin's
calls on two replicas: the forty-eighth session's review). A call naming the key while its session has a call
in flight is another conversation's: it is identified as if no key were sent, and goes where the policy
puts a new conversation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, replica_app, serving


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


class GatedReplica:
    """Answers a chat call once `release` is set; keeps the session each call was sent under."""

    def __init__(self, anywhere: asyncio.Event | None = None) -> None:
        self.release = asyncio.Event()
        self.sessions: list[str] = []
        self.arrived = asyncio.Event()
        self.anywhere = anywhere  # set by a call arriving at this replica or another

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.sessions.append(request.headers.get("X-Session-ID", ""))
        self.arrived.set()
        if self.anywhere is not None:
            self.anywhere.set()
        await self.release.wait()
        return web.Response(body=OK_JSON, content_type="application/json")


def body(question: str) -> dict[str, object]:
    return {
        "model": "fake",
        "max_tokens": 4,
        "prompt_cache_key": "my-app",
        "messages": [{"role": "user", "content": f"{question} " + "words " * 200}],
    }


async def test_a_key_named_by_concurrent_conversations_names_none_and_spreads_them(
    http: aiohttp.ClientSession,
) -> None:
    anywhere = asyncio.Event()
    a, b = GatedReplica(anywhere), GatedReplica(anywhere)
    async with (
        serving(replica_app(a.chat)) as url_a,
        serving(replica_app(b.chat)) as url_b,
        running_proxy(config([url_a, url_b])) as url,
    ):

        async def call(question: str) -> str:
            async with http.post(f"{url}/v1/chat/completions", json=body(question)) as r:
                assert r.status == 200, await r.text()
                return r.headers["X-Session-ID"]

        first = asyncio.create_task(call("first question"))
        await asyncio.wait_for(anywhere.wait(), 10)
        busy, idle = (a, b) if a.sessions else (b, a)
        second = asyncio.create_task(call("second question"))
        await asyncio.wait_for(idle.arrived.wait(), 10)  # not queued behind the first on its replica
        a.release.set()
        b.release.set()
        assert await first == "my-app"
        assert (await second).startswith("conv-")
        assert (busy.sessions, idle.sessions) == (["my-app"], [await second])
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
        assert state["shared_cache_keys"] == 1 and state["in_flight"] == 0
        # the session the key named is gone with its call (its conversation comes back under an inferred id)
        async with http.get(f"{url}/saga/v1/sessions") as r:
            listed = {s["session_id"] for s in (await r.json())["sessions"]}
        assert listed == {await second}
        # from then on the key names no session: a later call alone is inferred too
        assert (await call("third question")).startswith("conv-")


async def test_a_key_sent_with_one_conversations_calls_in_turn_stays_its_session(
    http: aiohttp.ClientSession,
) -> None:
    """As many agents send it (their thread or session id): one key per conversation, its calls in turn."""
    a = GatedReplica()
    a.release.set()
    async with serving(replica_app(a.chat)) as url_a, running_proxy(config([url_a])) as url:
        for turn in range(3):
            async with http.post(f"{url}/v1/chat/completions", json=body(f"turn {turn}")) as r:
                assert r.status == 200 and r.headers["X-Session-ID"] == "my-app"
        async with http.get(f"{url}/saga/v1/state") as r:
            assert (await r.json())["shared_cache_keys"] == 0
    assert a.sessions == ["my-app"] * 3
