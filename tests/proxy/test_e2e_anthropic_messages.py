"""End-to-end over loopback: the Anthropic Messages API (`/v1/messages`, what Claude Code speaks to vLLM)
through the proxy: scheduled like any call, bytes unchanged, and what the scheduler learns (tokens, the
prefix-cache hit, why the answer stopped, the tools it called) read from whole answers and from streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler import Usage
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet
from tests.anthropic_tools import TOOLS
from tests.recording_core import RecordingCore

SYSTEM = "You are Claude Code, a coding agent in a terminal. " * 30


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=200.0)
    yield fleet
    await fleet.close()


def config(replicas: list[str], policy: str) -> ProxyConfig:
    return ProxyConfig(replicas=replicas, port=0, seed=1, policy=policy, access_log=False)


async def message(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]], stream: bool, **extra: Any
) -> tuple[dict[str, Any], str, str]:
    """(the answer, rebuilt from the events when streamed; the replica; the session id echoed)."""
    body = {"model": "saga-sim", "system": SYSTEM, "messages": messages, "stream": stream, **extra}
    headers = {"x-claude-code-session-id": "cc-session-1"}
    async with http.post(f"{url}/v1/messages", json=body, headers=headers) as r:
        raw = await r.text()
        assert r.status == 200, raw
        where = (r.headers["X-Saga-Replica"], r.headers["X-Session-ID"])
    if not stream:
        return json.loads(raw), *where
    data = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    start, delta = data[0]["message"], next(d for d in data if d["type"] == "message_delta")
    blocks = [d["content_block"] for d in data if d["type"] == "content_block_start"]
    return {
        **start,
        "content": blocks,
        "stop_reason": delta["delta"]["stop_reason"],
        "usage": delta["usage"],
    }, *where


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_claude_code_conversation_is_one_session_and_reports_its_usage(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, stream: bool
) -> None:
    core = RecordingCore(fleet.urls, "session-affinity")
    async with running_proxy(config(fleet.urls, "session-affinity"), core) as url:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the failing test."}]
        answer, home, session = await message(
            http, url, messages, stream, tools=TOOLS, tool_choice={"type": "any"}, max_tokens=40
        )
        (block,) = answer["content"]
        assert block["type"] == "tool_use" and answer["stop_reason"] == "tool_use"
        messages += [
            {"role": "assistant", "content": [{**block, "input": {"command": "pytest"}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "1 failed"}],
            },
        ]
        second, replica, again = await message(http, url, messages, stream, tools=TOOLS, max_tokens=6)
    assert session == again == "cc-session-1" and replica == home
    first_usage, second_usage = core.usages
    assert first_usage == Usage(
        answer["usage"]["input_tokens"], answer["usage"]["output_tokens"], 0, "tool_calls", ("Bash",)
    )
    assert second_usage is not None and second_usage.finish_reason in ("stop", "length")
    assert second_usage.prompt_tokens == second["usage"]["input_tokens"]
    # the conversation's head came from the prefix cache, and the scheduler heard so
    assert second_usage.cached_tokens == second["usage"]["cache_read_input_tokens"] > 0


async def test_the_official_anthropic_client_works_through_the_proxy(fleet: ReplicaFleet) -> None:
    anthropic = pytest.importorskip("anthropic")
    async with running_proxy(config(fleet.urls, "saga")) as url:

        def calls() -> tuple[Any, ...]:
            client = anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)
            kwargs: dict[str, Any] = {"model": "saga-sim", "max_tokens": 40, "system": SYSTEM}
            ask = [{"role": "user", "content": "Fix the failing test."}]
            whole = client.messages.create(**kwargs, messages=ask, tools=TOOLS, tool_choice={"type": "any"})
            with client.messages.stream(**kwargs, messages=ask) as stream:
                text = "".join(stream.text_stream)
                streamed = stream.get_final_message()
            with client.messages.stream(
                **kwargs, messages=ask, tools=TOOLS, tool_choice={"type": "any"}
            ) as stream:
                called = stream.get_final_message()
            counted = client.messages.count_tokens(model="saga-sim", system=SYSTEM, messages=ask)
            with pytest.raises(anthropic.BadRequestError) as bad:
                client.messages.create(
                    **kwargs, messages=ask, extra_headers={"x-claude-code-session-id": "a\tb"}
                )
            client.close()
            return whole, text, streamed, called, bad.value, counted

        whole, text, streamed, called, bad, counted = await asyncio.to_thread(calls)
    assert whole.stop_reason == "tool_use" and whole.content[0].name == "Bash"
    assert "command" in whole.content[0].input
    assert text and streamed.stop_reason == "max_tokens" and streamed.usage.output_tokens == 40
    assert called.stop_reason == "tool_use" and "command" in called.content[0].input  # rebuilt from deltas
    assert bad.status_code == 400 and "x-claude-code-session-id" in str(bad)
    assert counted.input_tokens == streamed.usage.input_tokens  # count_tokens: passed through to a replica


async def _dying_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Health and models answered; a /v1/messages stream cut after its first text delta."""
    head = await reader.read(65536)
    if head.startswith(b"GET /v1/models"):
        body = json.dumps({"object": "list", "data": [{"id": "saga-sim", "object": "model"}]}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
    elif head.startswith(b"GET"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    else:
        start = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "saga-sim"}
        usage = {"input_tokens": 5, "output_tokens": 0}
        events = [
            {"type": "message_start", "message": {**start, "stop_reason": None, "usage": usage}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "partial answ"},
            },
        ]
        payload = b"".join(
            b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events
        )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(payload), payload)
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # the replica dies mid-answer
        return
    await writer.drain()
    writer.close()


async def test_an_anthropic_client_is_told_when_the_replica_dies_mid_stream_and_gets_anthropic_errors() -> (
    None
):
    """Anthropic's clients read errors in Anthropic's shape only: an OpenAI-shaped error event at the end of a
    cut stream left the official client returning the truncated message as if it were whole."""
    anthropic = pytest.importorskip("anthropic")
    server = await asyncio.start_server(_dying_replica, "127.0.0.1", 0)
    replica = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with running_proxy(ProxyConfig(replicas=[replica], port=0, access_log=False)) as url:

            def calls() -> tuple[Any, Any]:
                client = anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)
                ask = [{"role": "user", "content": "hi"}]
                with (
                    pytest.raises(anthropic.APIStatusError) as cut,
                    client.messages.stream(model="saga-sim", max_tokens=8, messages=ask) as stream,
                ):
                    "".join(stream.text_stream)
                with pytest.raises(anthropic.BadRequestError) as refused:
                    client.messages.create(
                        model="saga-sim", max_tokens=8, messages=ask, extra_headers={"x-session-id": "a\tb"}
                    )
                client.close()
                return cut.value, refused.value

            cut, refused = await asyncio.to_thread(calls)
            async with aiohttp.ClientSession() as http:  # the proxy's own refusals: by route
                bad = {"x-session-id": "a\tb"}
                async with http.post(f"{url}/v1/messages", json={"messages": []}, headers=bad) as r:
                    anthropic_shape = await r.json()
                async with http.post(f"{url}/v1/chat/completions", json={"messages": []}, headers=bad) as r:
                    openai_shape = await r.json()
    finally:
        server.close()
    assert "failed mid-answer" in str(cut) and cut.body["error"]["type"] == "api_error"
    assert refused.status_code == 400 and refused.body["error"]["type"] == "invalid_request_error"
    assert anthropic_shape["type"] == "error" and "x-session-id" in anthropic_shape["error"]["message"]
    assert openai_shape["error"]["param"] == "x-session-id" and "type" not in openai_shape


async def test_claude_code_subagents_stay_in_the_session_that_spawned_them(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """Claude Code's subagents send their session's id and an `x-claude-code-agent-id`: their calls stay in
    that session, on its replica (a session each was measured slower: docs/results/subagents/README.md), and
    are told apart by their own system prompt as an agent type."""
    core = RecordingCore(fleet.urls, "saga")
    explorer = "You are a read-only search agent. Find files and report back. " * 20
    async with running_proxy(config(fleet.urls, "saga"), core) as url:

        async def ask(system: str, agent: str | None) -> tuple[str, str]:
            headers = {"x-claude-code-session-id": "cc-1"}
            if agent is not None:
                headers["x-claude-code-agent-id"] = agent
            go = [{"role": "user", "content": "go"}]
            body = {"model": "saga-sim", "system": system, "max_tokens": 4, "messages": go}
            async with http.post(f"{url}/v1/messages", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                return r.headers["X-Session-ID"], r.headers["X-Saga-Replica"]

        answers = [await ask(SYSTEM, None)]
        answers += await asyncio.gather(ask(explorer, "agent-a"), ask(explorer, "agent-b"))
    assert answers == [answers[0]] * 3 and answers[0][0] == "cc-1"
    assert [r.session_id for r in core.arrivals] == ["cc-1"] * 3
    main_type, *sub_types = [r.agent_type for r in core.arrivals]
    assert len(set(sub_types)) == 1 and main_type not in sub_types


async def exchange(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]], stream: bool, max_tokens: int
) -> tuple[list[dict[str, Any]], str]:
    """One call naming no session: (the answer's content blocks as a client rebuilds them, the session)."""
    body = {"model": "saga-sim", "system": SYSTEM, "messages": messages, "stream": stream}
    body["max_tokens"] = max_tokens
    async with http.post(f"{url}/v1/messages", json=body) as r:
        raw = await r.text()
        assert r.status == 200, raw
        session = r.headers["X-Session-ID"]
    if not stream:
        return json.loads(raw)["content"], session
    blocks: dict[int, dict[str, Any]] = {}
    for line in raw.splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event["type"] == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            blocks[event["index"]]["text"] += event["delta"]["text"]
    return [blocks[i] for i in sorted(blocks)], session


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_two_agents_with_one_opening_and_no_session_id_stay_apart_by_prefix_chaining(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, stream: bool
) -> None:
    """An Anthropic client that names no session (not Claude Code) is told apart by its conversation: each
    answer's text is remembered, and the next call that carries it continues that session, even when
    another agent started from the same system prompt and first message. (The simulated model answers a
    prompt the same way every time: the agents' answers differ by length, as a sampled model's would by
    content; two agents given the same answer cannot be told apart.)"""
    async with running_proxy(config(fleet.urls, "saga")) as url:
        talks: dict[str, list[dict[str, Any]]] = {
            agent: [{"role": "user", "content": "Fix the failing test."}] for agent in "ab"
        }
        sessions: dict[str, list[str]] = {"a": [], "b": []}
        for turn in range(3):
            for agent, messages in talks.items():
                content, session = await exchange(http, url, messages, stream, 6 if agent == "a" else 9)
                sessions[agent].append(session)
                messages += [
                    {"role": "assistant", "content": content},
                    {"role": "user", "content": f"{agent}: go on ({turn})"},
                ]
    assert len(set(sessions["a"])) == 1 and len(set(sessions["b"])) == 1, sessions
    assert sessions["a"][0] != sessions["b"][0]


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_refusals_before_the_body_is_read_are_in_anthropics_shape_on_its_routes(server: str) -> None:
    """A body too large (by its Content-Length, or read past the limit) or compressed is refused before the
    call is read; on /v1/messages the refusal still comes in Anthropic's shape, and the access log names the
    route (the fast server answered these in OpenAI's shape for a request it logged as "-")."""
    config = ProxyConfig(replicas=["http://127.0.0.1:9"], port=0, max_body_bytes=1024, server=server)
    too_big = json.dumps({"messages": [{"role": "user", "content": "x" * 4096}]}).encode()
    async with running_proxy(config) as url, aiohttp.ClientSession() as http:
        shapes = []
        for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions"):
            async with http.post(url + path, data=too_big, headers={"Content-Type": "application/json"}) as r:
                shapes.append((path, r.status, await r.json()))
            gzip = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            async with http.post(url + path, data=b"{}", headers=gzip) as r:
                shapes.append((path, r.status, await r.json()))

    def shape(body: dict[str, Any]) -> str:
        return "anthropic" if body.get("type") == "error" and "type" in body["error"] else "openai"

    assert [(path, status, shape(body)) for path, status, body in shapes] == [
        ("/v1/messages", 413, "anthropic"),
        ("/v1/messages", 415, "anthropic"),
        ("/v1/messages/count_tokens", 413, "anthropic"),
        ("/v1/messages/count_tokens", 415, "anthropic"),
        ("/v1/chat/completions", 413, "openai"),
        ("/v1/chat/completions", 415, "openai"),
    ]
