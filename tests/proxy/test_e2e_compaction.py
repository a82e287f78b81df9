"""End-to-end over loopback: an agent naming no session that compacts its history keeps its session.

Found by the forty-ninth session's review A: such an agent was a new workflow after each compaction, its
next call waiting for admission (p50 1.12-1.26 s against 0.13-0.14 s naming its session) while the session it
left held its reservation. Coding agents compact by asking the model for a summary, then starting again from
a user message holding it; the proxy now takes a conversation quoting a session's latest answer as that
session's (proxy/quoted_answers.py), once, and not while that session has a call running.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.server import running_proxy
from tests.proxy.fakes import config, replica_app, serving

SUMMARY = "\n".join(
    [
        "## Summary",
        *(f"{n}. The parser dropped the last field of row {n}; fixed in io.py, tested." for n in range(6)),
    ]
)


def answer(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    usage = {"prompt_tokens": 9, "completion_tokens": 9}
    return json.dumps(
        {"id": "c", "object": "chat.completion", "model": "fake", "choices": [choice], "usage": usage}
    ).encode()


class Replica:
    """Answers a summary when asked for one, else "ok"; holds calls while `hold` is clear."""

    def __init__(self) -> None:
        self.hold = asyncio.Event()
        self.hold.set()
        self.held: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]  # one, then two calls held
        self.holding = 0

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self.hold.is_set():
            self.holding += 1
            self.held[min(self.holding, 2) - 1].set()
            await self.hold.wait()
        asked = body["messages"][-1]["content"]
        text = SUMMARY if "Summarize" in asked else "ok"
        return web.Response(body=answer(text), content_type="application/json")


SYSTEM = {"role": "system", "content": "You are a coding agent."}
TASK = {"role": "user", "content": "Fix the parser."}
ASK = {"role": "user", "content": "Summarize the work so far."}
HISTORY = [SYSTEM, TASK, {"role": "assistant", "content": "ok"}, ASK]  # the summary asked in the conversation


def started_again(summary: str = SUMMARY) -> list[dict[str, Any]]:
    """A compacted history: the system prompt, then a user message holding the summary's text."""
    return [SYSTEM, {"role": "user", "content": f"Earlier work, summarized:\n{summary}\nGo on from there."}]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def session_of(http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]]) -> str:
    async with http.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": messages}) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Session-ID"]


async def summarized(http: aiohttp.ClientSession, url: str) -> str:
    """A conversation's first call, then the summary asked in it: its session."""
    first = await session_of(http, url, [SYSTEM, TASK])
    assert await session_of(http, url, HISTORY) == first  # its answer: the summary
    return first


async def test_the_conversation_started_again_from_the_summary_is_the_same_session(
    http: aiohttp.ClientSession,
) -> None:
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first = await summarized(http, url)
        assert await session_of(http, url, started_again()) == first
        # and it goes on from there, by prefix chaining
        after = [
            *started_again(),
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "next"},
        ]
        assert await session_of(http, url, after) == first
        # taken up once: another conversation quoting the same summary is one of its own
        assert await session_of(http, url, started_again()) != first
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
        assert state["quoted_answers"] == {"taken_up": 1} and state["in_flight"] == 0


async def test_no_session_is_taken_up_while_its_call_runs(http: aiohttp.ClientSession) -> None:
    """A conversation quoting a session's answer while that session has a call running (a subagent given its
    parent's plan) is one of its own."""
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first = await summarized(http, url)
        replica.hold.clear()
        busy = [*HISTORY, {"role": "assistant", "content": SUMMARY}, {"role": "user", "content": "go on"}]
        running = asyncio.create_task(session_of(http, url, busy))
        await asyncio.wait_for(replica.held[0].wait(), 10)
        quoting = asyncio.create_task(session_of(http, url, started_again()))
        await asyncio.wait_for(replica.held[1].wait(), 10)  # identified while the session's call runs
        replica.hold.set()
        assert await running == first
        assert await quoting != first


async def test_a_first_calls_answer_is_not_looked_for(http: aiohttp.ClientSession) -> None:
    """Only an answer to a conversation going on from an earlier one is filed: one-shot calls (a load test's,
    a flood naming no session) file nothing, so their calls look for no quote (proxy/quoted_answers.py)."""
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first = await session_of(http, url, [SYSTEM, ASK])  # a one-shot call answered with the summary
        assert await session_of(http, url, started_again()) != first
        async with http.get(f"{url}/saga/v1/state") as r:
            assert (await r.json())["quoted_answers"] == {"taken_up": 0}


async def test_another_agent_given_the_answer_is_not_taken_for_its_author(
    http: aiohttp.ClientSession,
) -> None:
    """A reviewer agent started with a coder's output (its own system prompt) is a session of its own, and
    the coder's compaction still goes on in its session (the fifty-second session's second review: a fresh
    agent quoting an idle agent's answer joined its session for good)."""
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        coder = await summarized(http, url)
        reviewer = [{"role": "system", "content": "You review code."}, *started_again()[1:]]
        assert await session_of(http, url, reviewer) != coder
        assert await session_of(http, url, started_again()) == coder


async def test_the_new_conversations_first_call_sent_again_after_the_client_gave_up_keeps_the_session(
    http: aiohttp.ClientSession,
) -> None:
    """A client that gives up on the new conversation's first call (a timeout, a dropped stream) and sends it
    again: the second attempt continues the session as the first did (the fifty-third session's second
    review: it started a session of its own, the session it left holding its reservation); another
    conversation quoting the same summary is still one of its own."""
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first = await summarized(http, url)
        replica.hold.clear()
        body = {"model": "fake", "messages": started_again()}
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with http.post(f"{url}/v1/chat/completions", json=body, timeout=timeout) as r:
                await r.read()
        await asyncio.wait_for(replica.held[0].wait(), 10)
        replica.hold.set()
        for _ in range(100):  # the proxy sees the hang-up and ends the call
            async with http.get(f"{url}/saga/v1/state") as r:
                if (await r.json())["in_flight"] == 0:
                    break
            await asyncio.sleep(0.05)
        assert await session_of(http, url, started_again()) == first  # sent again
        other = [SYSTEM, {"role": "user", "content": f"Review this summary:\n{SUMMARY}"}]
        assert await session_of(http, url, other) != first
        async with http.get(f"{url}/saga/v1/state") as r:
            assert (await r.json())["quoted_answers"] == {"taken_up": 1}


async def test_the_new_conversation_sent_again_after_its_answer_is_one_of_its_own(
    http: aiohttp.ClientSession,
) -> None:
    """Only a call sent again before the first attempt was answered continues the session (a retry): once
    the new conversation's first call is answered, that answer is the session's latest, and the same
    conversation sent again (best-of-n, an orchestrator re-sending it) is one of its own (the fifty-third
    session's third review: it joined the session at any later time)."""
    replica = Replica()
    async with serving(replica_app(replica.chat)) as url_r, running_proxy(config([url_r])) as url:
        first = await summarized(http, url)
        assert await session_of(http, url, started_again()) == first
        assert await session_of(http, url, started_again()) != first
