"""End-to-end over loopback: the conversations under one `prompt_cache_key` are told apart.

Apps send OpenAI's cache key once per app or user as often as once per conversation. Read as one session,
twelve agents sharing a key were admitted, retained and bound as one workflow (the fifty-first session). A
call under a key whose first user message is not that of the key's own conversation now goes to a session of
its own, `key~<digest>`, when a call of the key's session is in flight or the key was found shared; the
key's own conversation keeps the key's session whatever it sends (a retry, a side call beside it: the
forty-ninth session's review C), and a session a header named is never split.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import start_fleet
from tests.proxy.fakes import OK_JSON, config, replica_app, serving


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


class GatedReplica:
    """Answers a chat call once `release` is set; keeps the session each call was sent under."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sessions: list[str] = []
        self.arrived = asyncio.Event()
        self.second = asyncio.Event()  # a second call arrived
        self.changed = asyncio.Condition()

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.sessions.append(request.headers.get("X-Session-ID", ""))
        self.arrived.set()
        if len(self.sessions) >= 2:
            self.second.set()
        async with self.changed:
            self.changed.notify_all()
        await self.release.wait()
        return web.Response(body=OK_JSON, content_type="application/json")

    async def until(self, calls: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.sessions) >= calls), 10)


def body(task: str, turn: str = "", key: str | None = "my-app") -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"You are an agent. It is turn {turn or 0}."},  # changes every turn
        {"role": "user", "content": f"{task} " + "words " * 50},
    ]
    if turn:
        messages += [{"role": "assistant", "content": "hi"}, {"role": "user", "content": turn}]
    out: dict[str, Any] = {"model": "fake", "max_tokens": 4, "messages": messages}
    if key is not None:
        out["prompt_cache_key"] = key
    return out


async def call(
    http: aiohttp.ClientSession, url: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    async with http.post(f"{url}/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Session-ID"]


async def state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/saga/v1/state") as r:
        answer: dict[str, Any] = await r.json()
        return answer


async def beside(
    http: aiohttp.ClientSession,
    url: str,
    replica: GatedReplica,
    running: dict[str, Any],
    other: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[str, str]:
    """`other` sent while `running` (with `headers`) is at the replica, both answered once both are there:
    the sessions they were filed under."""
    first = asyncio.create_task(call(http, url, running, headers))
    await asyncio.wait_for(replica.arrived.wait(), 10)
    second = asyncio.create_task(call(http, url, other))
    await asyncio.wait_for(replica.second.wait(), 10)
    replica.release.set()
    return await first, await second


async def test_another_conversation_under_a_busy_key_gets_a_session_of_its_own(
    http: aiohttp.ClientSession,
) -> None:
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first, other = await beside(http, url, replica, body("Task A"), body("Task B"))
        assert first == "my-app"
        assert other.startswith("my-app~") and len(other) == len("my-app~") + 16
        shown = await state(http, url)
        assert shown["cache_keys"] == {"shared": 0, "split_calls": 1} and shown["in_flight"] == 0
        # each conversation keeps its session with no call beside it; Task B going on makes the key shared
        assert await call(http, url, body("Task B", turn="go on")) == other
        assert await call(http, url, body("Task A", turn="go on")) == "my-app"
        assert await call(http, url, body("Task C")) not in ("my-app", other)
        assert (await state(http, url))["cache_keys"] == {"shared": 1, "split_calls": 3}
    assert replica.sessions[:2] == ["my-app", other]


async def test_the_keys_own_conversation_keeps_its_session_with_calls_beside_it(
    http: aiohttp.ClientSession,
) -> None:
    """A retry of its call while it runs, then its next turns (a system prompt that changes each turn): one
    session, and nothing found shared."""
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        assert await beside(http, url, replica, body("Task A"), body("Task A")) == ("my-app", "my-app")
        for turn in ("one", "two"):
            assert await call(http, url, body("Task A", turn=turn)) == "my-app"
        assert (await state(http, url))["cache_keys"] == {"shared": 0, "split_calls": 0}


async def test_a_side_call_beside_the_conversation_never_takes_its_session_away(
    http: aiohttp.ClientSession,
) -> None:
    """A side call of another first user message (a title) goes to a session of its own; the conversation's
    later calls, one at a time, stay in the key's session."""
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        main, side = await beside(http, url, replica, body("Task A"), body("Give this conversation a title"))
        assert main == "my-app" and side.startswith("my-app~")
        for turn in ("one", "two", "three"):
            assert await call(http, url, body("Task A", turn=turn)) == "my-app"


async def test_starting_again_from_a_summary_after_a_side_call_keeps_the_key(
    http: aiohttp.ClientSession,
) -> None:
    """A conversation sending its own key asks a title beside its call once (split off), then compacts: its
    summary, a first call of system and user messages, comes while its key's session is idle and stays in
    it (the fifty-second session's third review: it went to a session of its own for good)."""
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        main, side = await beside(http, url, replica, body("Task A"), body("Give this conversation a title"))
        assert main == "my-app" and side.startswith("my-app~")
        assert await call(http, url, body("Task A", turn="go on")) == "my-app"
        summary = body("Summary of the work so far: the parser is fixed.")
        assert await call(http, url, summary) == "my-app"
        assert (
            await call(http, url, body("Summary of the work so far: the parser is fixed.", turn="next"))
            == "my-app"
        )
        assert (await state(http, url))["cache_keys"]["shared"] == 0


async def test_a_header_named_session_is_never_split(http: aiohttp.ClientSession) -> None:
    """A call naming only the key of a session a header named, while that session's call runs, with another
    first user message: the header's session, as before (the forty-ninth session's review C, d05)."""
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        named = {"X-Session-ID": "task-7"}
        task, helper = body("Task A", key=None), body("Helper task", key="task-7")
        assert await beside(http, url, replica, task, helper, named) == ("task-7", "task-7")
        assert await call(http, url, body("Task A", turn="go on", key=None), named) == "task-7"
        assert (await state(http, url))["cache_keys"]["shared"] == 0


async def test_an_apps_one_shot_calls_under_one_key_are_sessions_of_their_own() -> None:
    """16 clients of one app, one `prompt_cache_key`, each its own question at once, on two simulated
    replicas: a session each (the key's own and the others' of their own), spread over both replicas."""
    fleet = await start_fleet(2, profile="tiny-cpu")
    try:
        async with (
            running_proxy(ProxyConfig(replicas=list(fleet.urls), port=0, seed=1, policy="saga")) as url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        ):

            async def ask(n: int) -> tuple[str, str]:
                question = {"role": "user", "content": f"client {n} asks: " + "word " * 300}
                payload = {"model": "saga-sim", "prompt_cache_key": "my-app", "max_tokens": 64}
                async with http.post(
                    f"{url}/v1/chat/completions", json={**payload, "messages": [question]}
                ) as r:
                    assert r.status == 200, await r.text()
                    return r.headers["X-Session-ID"], r.headers["X-Saga-Replica"]

            answered = await asyncio.gather(*(ask(n) for n in range(16)))
            shown = await state(http, url)
    finally:
        await fleet.close()
    sessions = {session for session, _ in answered}
    split = shown["cache_keys"]["split_calls"]  # 15 but for a call sent after the first was answered
    assert split >= 8 and len(sessions) == 1 + split and "my-app" in sessions
    assert {replica for _, replica in answered} == set(fleet.urls)
    assert shown["cache_keys"]["shared"] == 1 and shown["in_flight"] == 0  # found shared: several split off


async def test_a_conversation_whose_first_user_message_changes_keeps_its_key(
    http: aiohttp.ClientSession,
) -> None:
    """A conversation sending its own key that keeps a sliding window (its first user message changes every
    turn) and sends two calls at once each turn: every call is the key's session (the fifty-second session's
    review: from its first pair on, each turn went to a new session and replica)."""
    replica = GatedReplica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        turns: list[dict[str, Any]] = []
        for turn in range(8):
            turns += [
                {"role": "user", "content": f"turn {turn}: go on " + "x " * 30},
                {"role": "assistant", "content": "hi"},
            ]
            window = [{"role": "system", "content": "You code."}, *turns[-4:]]
            pair = [
                {**body("", key="conv-a"), "messages": [*window, {"role": "user", "content": ask}]}
                for ask in "ab"
            ]
            replica.release.clear()
            both = asyncio.gather(*(call(http, url, payload) for payload in pair))
            await replica.until(2 * turn + 2)  # both at the replica at once
            replica.release.set()
            assert await both == ["conv-a", "conv-a"], turn
        assert (await state(http, url))["cache_keys"] == {"shared": 0, "split_calls": 0}
