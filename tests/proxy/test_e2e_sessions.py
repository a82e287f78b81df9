"""End-to-end over loopback: session inference by prefix chaining and explicit session ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from proxy.sessions import MAX_SESSIONS_PAGE
from simulator.server import ReplicaFleet, start_fleet


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=200.0)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def config(replicas: list[str]) -> ProxyConfig:
    return ProxyConfig(replicas=replicas, port=0, seed=1, health_interval_s=0.2)


OPENING = [
    {"role": "system", "content": "You are a coding agent. " * 20},
    {"role": "user", "content": "Fix the failing test in module alpha."},
]


async def chat(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]], stream: bool, **headers: str
) -> tuple[str, str]:
    """Returns the session the proxy assigned and the assistant's text."""
    body = {"model": "saga-sim", "messages": messages, "max_tokens": 6, "ignore_eos": True, "stream": stream}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        session = r.headers["X-Session-ID"]
        if not stream:
            return session, (await r.json())["choices"][0]["message"]["content"]
        raw = (await r.read()).decode()
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: {")]
    text = "".join(c["delta"].get("content") or "" for e in events for c in json.loads(e)["choices"])
    return session, text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_calls_extending_an_earlier_call_continue_its_session(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, stream: bool
) -> None:
    async with running_proxy(config(fleet.urls)) as url:
        messages = list(OPENING)
        first, text = await chat(http, url, messages, stream)
        sessions = [first]
        for turn in range(3):
            messages.append({"role": "assistant", "content": text})
            messages.append({"role": "tool", "content": f"result {turn}"})
            session, text = await chat(http, url, messages, stream)
            sessions.append(session)
        # Another agent given the same task is not merged into the first one.
        other, _ = await chat(http, url, list(OPENING), stream)
    assert text and sessions == [first] * 4
    assert other != first


async def test_two_agents_given_one_task_at_once_stay_apart(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """The thirteenth review: an opening became a live session only once its first call was answered, so
    two agents given the same task at the same moment (a best-of-N fan-out) were filed as one session, and
    their later calls chained into it. A first call whose opening's session is running is another agent's.
    (Two agents answered alike word for word, as the simulated replica answers one prompt, cannot be told
    apart once they go on: one answer key names one session.)"""
    async with running_proxy(config(fleet.urls)) as url:
        bodies = [
            {"model": "saga-sim", "messages": OPENING, "max_tokens": n, "ignore_eos": True} for n in (48, 40)
        ]

        async def start(body: dict[str, Any]) -> tuple[str, str]:
            async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                return r.headers["X-Session-ID"], (await r.json())["choices"][0]["message"]["content"]

        first = await asyncio.gather(*(start(body) for body in bodies))  # both in flight at once
        later = []
        for i, (_, text) in enumerate(first):
            messages = [*OPENING, {"role": "assistant", "content": text}, {"role": "user", "content": f"{i}"}]
            later.append((await chat(http, url, messages, False))[0])
    assert first[0][0] != first[1][0] and [s for s, _ in first] == later


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "number"}},
                "required": ["path", "limit"],
            },
        },
    }
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_arguments_a_client_rebuilds_still_continue_its_session(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, stream: bool
) -> None:
    """A LangChain-style agent parses each tool call's arguments and sends them back written its own way
    (here compact, where the replica writes spaces); two such agents sharing their opening each keep their
    own session over four calls. Before the fix the second agent's later calls fell back to the opening and
    joined the first agent's session."""

    async def turn(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        body = {
            "model": "saga-sim",
            "messages": messages,
            "tools": TOOLS,
            "max_tokens": 24,
            "stream": stream,
            "vllm_xargs": {"saga_sim_tool_turns": 9},
        }
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            session = r.headers["X-Session-ID"]
            if not stream:
                return session, (await r.json())["choices"][0]["message"]
            raw = (await r.read()).decode()
        calls: dict[int, dict[str, Any]] = {}
        text = ""
        for line in raw.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
                    for piece in choice["delta"].get("tool_calls") or ():
                        call = calls.setdefault(piece["index"], {"function": {"arguments": ""}})
                        call.update({k: v for k, v in piece.items() if k in ("id", "type")})
                        function = call["function"]
                        function["name"] = piece["function"].get("name") or function.get("name")
                        function["arguments"] += piece["function"].get("arguments") or ""
        return session, {"role": "assistant", "content": text or None, "tool_calls": list(calls.values())}

    def rebuilt(message: dict[str, Any]) -> dict[str, Any]:
        calls = message["tool_calls"]
        for call in calls:
            parsed = json.loads(call["function"]["arguments"])
            call["function"]["arguments"] = json.dumps(parsed, separators=(",", ":"))
        return {"role": "assistant", "content": message["content"], "tool_calls": calls}

    async with running_proxy(config(fleet.urls)) as url:
        # the same opening; b's first call adds a hint, so the two agents' answers differ from the first
        agents = {"a": list(OPENING), "b": [*OPENING, {"role": "user", "content": "Start with the parser."}]}
        sessions: dict[str, list[str]] = {"a": [], "b": []}
        for step in range(4):
            for name, messages in agents.items():
                session, answer = await turn(messages)
                sessions[name].append(session)
                assert answer["tool_calls"] and " " in answer["tool_calls"][0]["function"]["arguments"]
                call_id = answer["tool_calls"][0]["id"]
                messages += [rebuilt(answer), {"role": "tool", "tool_call_id": call_id, "content": f"{step}"}]
    assert sessions["a"] == [sessions["a"][0]] * 4
    assert sessions["b"] == [sessions["b"][0]] * 4
    assert sessions["a"][0] != sessions["b"][0]


async def test_sessions_end_by_header_or_admin_call(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    async def listed(url: str) -> set[str]:
        async with http.get(f"{url}/saga/v1/sessions") as r:
            return {s["session_id"] for s in (await r.json())["sessions"]}

    async with running_proxy(config(fleet.urls)) as url:
        await chat(http, url, list(OPENING), False, **{"X-Session-ID": "kept"})
        await chat(http, url, list(OPENING), False, **{"X-Session-ID": "done", "X-Session-End": "true"})
        after_header = await listed(url)
        async with http.post(f"{url}/saga/v1/sessions/kept/end") as r:
            ended = (r.status, await r.json())
        after_admin = await listed(url)
        async with http.post(f"{url}/saga/v1/sessions/kept/end") as r:
            again = (r.status, await r.json())
        async with http.get(f"{url}/saga/v1/queue") as r:
            queue = await r.json()
    assert "kept" in after_header and "done" not in after_header
    assert ended == (200, {"session_id": "kept", "ended": True}) and "kept" not in after_admin
    assert again[0] == 404 and again[1]["error"]["code"] == "unknown_session"
    assert queue["in_flight"] == 0 and queue["calls"] == []


async def test_the_session_listing_is_paged_with_bounded_limits(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """`limit` is 0 to MAX_SESSIONS_PAGE (one page is built in one step of the event loop: a listing of
    100,000 sessions stalled every call for half a second), `offset` pages on; bad values are a 400 naming
    the parameter, not taken as 0 (an empty listing that looks like no sessions)."""
    async with running_proxy(config(fleet.urls)) as url:
        for name in ("one", "two", "three"):
            await chat(http, url, list(OPENING), False, **{"X-Session-ID": name})
        answers = {}
        queries = [("limit", v) for v in ("2", "0", str(MAX_SESSIONS_PAGE), str(MAX_SESSIONS_PAGE + 1))]
        queries += [("limit", v) for v in ("99999999999999999999", "-1", "abc", "1.5")]
        queries += [("offset", v) for v in ("-1", "x")]
        for name, value in queries:
            async with http.get(f"{url}/saga/v1/sessions", params={name: value}) as r:
                answers[name, value] = (r.status, await r.json())
        pages = []
        offset: int | None = 0
        while offset is not None:
            async with http.get(f"{url}/saga/v1/sessions", params={"limit": "2", "offset": offset}) as r:
                page = await r.json()
            pages.append([s["session_id"] for s in page["sessions"]])
            offset = page["next_offset"]
    assert [len(answers["limit", k][1]["sessions"]) for k in ("2", "0")] == [2, 0]
    assert answers["limit", "0"][1]["total"] == 3 and answers["limit", "0"][1]["next_offset"] is None
    assert answers["limit", "2"][1]["total"] == 3 and answers["limit", "2"][1]["next_offset"] == 2
    assert len(answers["limit", str(MAX_SESSIONS_PAGE)][1]["sessions"]) == 3
    assert answers["limit", str(MAX_SESSIONS_PAGE)][1]["next_offset"] is None
    assert pages == [["one", "two"], ["three"]]
    for name, value in answers:
        if (name, value) in {("limit", "2"), ("limit", "0"), ("limit", str(MAX_SESSIONS_PAGE))}:
            continue
        status, body = answers[name, value]
        assert status == 400 and body["error"]["param"] == name, (name, value)


async def test_a_stream_longer_than_max_answer_bytes_is_relayed_whole_but_not_kept_for_chaining(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """Streams are relayed as they come; what the proxy keeps of one to chain the next call is bounded by
    `max_answer_bytes`. Past it the answer is not kept: the conversation's next call still finds its session
    from the conversation's opening, but a second agent given the same task is no longer told apart from the
    first (the first test above, within the limit, tells them apart)."""
    limit = 8
    bounded = msgspec.structs.replace(config(fleet.urls), max_answer_bytes=limit)
    async with running_proxy(bounded) as url:
        messages = list(OPENING)
        first, text = await chat(http, url, messages, stream=True)
        assert len(text) > limit  # the client got all of it
        messages += [{"role": "assistant", "content": text}, {"role": "tool", "content": "result"}]
        second, _ = await chat(http, url, messages, stream=True)
        other, _ = await chat(http, url, list(OPENING), stream=True)
    assert second == first
    assert other == first


async def test_a_flood_of_one_shot_calls_past_max_sessions_keeps_an_agents_inferred_session(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    async def listed(url: str) -> set[str]:
        async with http.get(f"{url}/saga/v1/sessions") as r:
            return {s["session_id"] for s in (await r.json())["sessions"]}

    settings = msgspec.structs.replace(config(fleet.urls), max_sessions=20)
    async with running_proxy(settings) as url:
        messages = list(OPENING)
        agent, text = await chat(http, url, messages, False)
        messages += [{"role": "assistant", "content": text}, {"role": "tool", "content": "3 tests failed"}]
        assert (await chat(http, url, messages, False))[0] == agent  # its second call: no longer a one-shot
        for n in range(60):  # while it runs a tool: one-shot calls naming no session, each a session
            await chat(http, url, [{"role": "user", "content": f"one-shot question {n}"}], False)
        kept = await listed(url)
    assert agent in kept and len(kept) <= 20
