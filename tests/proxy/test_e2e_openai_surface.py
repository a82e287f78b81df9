"""End-to-end over loopback: the OpenAI surface through the proxy (usage, tools, Responses, passthrough,
the official `openai` client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler import Usage
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet
from tests.proxy.fakes import fake_replica
from tests.recording_core import RecordingCore

MESSAGES = [{"role": "user", "content": "run the tests"}]


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=200.0)
    yield fleet
    await fleet.close()


def config(replicas: list[str]) -> ProxyConfig:
    return ProxyConfig(replicas=replicas, port=0, seed=1, health_interval_s=0.2)


def data_events(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


async def streamed_by_tools_replica(
    http: aiohttp.ClientSession, body: dict[str, Any], crlf: bool = False
) -> tuple[list[str], list[dict[str, object]], RecordingCore]:
    """A streamed chat call through the proxy to a replica answering with a tool call: the client's data
    events, the bodies the replica got and the core that recorded the call's usage."""
    async with fake_replica("tools") as replica:
        replica.crlf = crlf
        core = RecordingCore([replica.url])
        async with (
            running_proxy(config([replica.url]), core) as url,
            http.post(f"{url}/v1/chat/completions", json=body) as r,
        ):
            raw = await r.read()
    return data_events(raw), replica.bodies, core


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("asked", [False, True], ids=["usage-not-asked", "usage-asked"])
async def test_streams_report_usage_and_tools_to_the_core_and_the_client_gets_what_it_asked(
    http: aiohttp.ClientSession, asked: bool, crlf: bool
) -> None:
    """Whether the replica ends its SSE lines in LF (vLLM) or CRLF (legal SSE too): the usage event the proxy
    asked for itself is read, and kept from a client that did not ask for it."""
    body: dict[str, Any] = {"model": "fake", "messages": MESSAGES, "stream": True}
    if asked:
        body["stream_options"] = {"include_usage": True}
    events, bodies, core = await streamed_by_tools_replica(http, body, crlf)
    usage_events = [e for e in events if e != "[DONE]" and json.loads(e).get("usage")]
    assert events[-1] == "[DONE]" and len(usage_events) == (1 if asked else 0)
    assert bodies[0]["stream_options"] == {"include_usage": True}  # asked upstream either way
    assert core.usages == [Usage(9, 4, 0, "tool_calls", ("run_tests",))]


async def test_continuous_usage_without_include_usage_gives_the_client_no_usage(
    http: aiohttp.ClientSession,
) -> None:
    """vLLM reports continuous usage only with `include_usage`: a client asking for the first alone gets no
    usage from vLLM, so it must get none through the proxy, which asks for `include_usage` itself."""
    body = {
        "model": "fake",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"continuous_usage_stats": True},
    }
    events, _, core = await streamed_by_tools_replica(http, body)
    assert events[-1] == "[DONE]" and len(events) > 2
    assert [e for e in events if e != "[DONE]" and "usage" in json.loads(e)] == []
    assert core.usages == [Usage(9, 4, 0, "tool_calls", ("run_tests",))]


async def test_whole_answers_report_finish_reason_and_tool_names(http: aiohttp.ClientSession) -> None:
    async with fake_replica("tools") as replica:
        core = RecordingCore([replica.url])
        async with (
            running_proxy(config([replica.url]), core) as url,
            http.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": MESSAGES}) as r,
        ):
            answer = await r.json()
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "run_tests"
    assert core.usages == [Usage(9, 4, 0, "tool_calls", ("run_tests",))]
    assert "stream_options" not in replica.bodies[0]  # a whole answer is forwarded as sent


async def test_a_null_stream_is_a_whole_answer_as_openai_and_vllm_read_it(
    http: aiohttp.ClientSession,
) -> None:
    """`"stream": null` is the API's default (vLLM: `Optional[bool]`); the proxy refused it with a 400."""
    async with fake_replica("tools") as replica:
        core = RecordingCore([replica.url])
        body = {"model": "fake", "messages": MESSAGES, "stream": None}
        async with (
            running_proxy(config([replica.url]), core) as url,
            http.post(f"{url}/v1/chat/completions", json=body) as r,
        ):
            status, answer = r.status, await r.json()
    assert status == 200 and answer["choices"][0]["finish_reason"] == "tool_calls", answer
    assert (
        replica.bodies[0]["stream"] is None and "stream_options" not in replica.bodies[0]
    )  # sent as it came


@pytest.mark.parametrize(
    ("fields", "streamed"),
    [
        ({"stream": "true"}, True),
        ({"stream": 1, "stream_options": {"include_usage": 1}}, True),
        ({"stream": 0}, False),
        ({"stream": "yes"}, True),  # (pydantic's, which msgspec refuses: the forty-seventh review)
        ({"stream": "On", "stream_options": {"include_usage": "y"}}, True),
        ({"stream": 1.0}, True),
        ({"model": None}, False),
        ({"prompt_cache_key": 5}, False),
        ({"prompt_cache_key": [1, {"a": None}]}, False),
    ],
)
async def test_bodies_vllm_reads_loosely_are_served_not_refused(
    http: aiohttp.ClientSession, fields: dict[str, Any], streamed: bool
) -> None:
    """vLLM reads a body with pydantic's lax mode: `"stream": "true"` or `1` is a boolean, `"model": null`
    its default model, and chat ignores a `prompt_cache_key` of another type. The proxy answered each with
    its own 400 (`Expected bool | null, got str`), refusing calls a replica serves (fourth review)."""
    async with fake_replica("tools") as replica:
        body = {"model": "fake", "messages": MESSAGES, **fields}
        async with (
            running_proxy(config([replica.url])) as url,
            http.post(f"{url}/v1/chat/completions", json=body) as r,
        ):
            status, kind, text = r.status, r.headers.get("Content-Type", ""), await r.text()
    assert status == 200, text
    assert kind.startswith("text/event-stream") == streamed, (kind, text)
    assert ("data: [DONE]" in text) == streamed


@pytest.mark.parametrize("stream", [False, True])
async def test_a_body_behind_a_byte_order_mark_is_served_and_forwarded_without_it(
    http: aiohttp.ClientSession, stream: bool
) -> None:
    """vLLM reads past a UTF-8 BOM (some Windows tools write one); the proxy refused the body as not JSON."""
    async with fake_replica("tools") as replica:
        body = (
            b"\xef\xbb\xbf" + json.dumps({"model": "fake", "messages": MESSAGES, "stream": stream}).encode()
        )
        headers = {"Content-Type": "application/json"}
        async with (
            running_proxy(config([replica.url])) as url,
            http.post(f"{url}/v1/chat/completions", data=body, headers=headers) as r,
        ):
            status, text = r.status, await r.text()
    assert status == 200, text
    assert replica.bodies[0]["messages"] == MESSAGES  # it read the forwarded body as JSON


async def test_responses_calls_continue_the_session_of_their_previous_response(
    http: aiohttp.ClientSession,
) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        async with http.post(f"{url}/v1/responses", json={"model": "fake", "input": "hello"}) as r:
            first = (r.status, r.headers["X-Session-ID"], await r.json())
        follow_up = {"model": "fake", "input": "and then?", "previous_response_id": first[2]["id"]}
        async with http.post(f"{url}/v1/responses", json=follow_up) as r:
            second = (r.status, r.headers["X-Session-ID"])
    assert first[0] == second[0] == 200
    assert second[1] == first[1]


async def test_tokenize_and_detokenize_are_passed_through(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    body = {"model": "saga-sim", "prompt": "hello there, general"}
    async with running_proxy(config(fleet.urls)) as url:
        async with http.post(f"{url}/tokenize", json=body) as r:
            via_proxy = (r.status, await r.json())
        async with http.post(f"{fleet.urls[0]}/tokenize", json=body) as r:
            direct = await r.json()
        tokens = {"model": "saga-sim", "tokens": direct["tokens"]}
        async with http.post(f"{url}/detokenize", json=tokens) as r:
            text = (r.status, await r.json())
        async with http.get(f"{url}/saga/v1/state") as r:
            state = await r.json()
    assert via_proxy == (200, direct)
    assert text[0] == 200 and "prompt" in text[1]
    assert state["sessions"] == 0  # not scheduled as calls


async def test_the_official_openai_client_works_through_the_proxy(fleet: ReplicaFleet) -> None:
    openai = pytest.importorskip("openai")
    async with running_proxy(config(fleet.urls)) as url:
        kwargs = {"model": "saga-sim", "messages": MESSAGES, "max_tokens": 5}

        def sync_calls() -> tuple[str, str, list[str]]:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
            whole = client.chat.completions.create(**kwargs)
            completion = client.completions.create(model="saga-sim", prompt="hi", max_tokens=3)
            stream = client.chat.completions.create(**kwargs, stream=True)
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            client.close()
            return whole.choices[0].message.content or "", completion.choices[0].text, pieces

        whole, completion, pieces = await asyncio.to_thread(sync_calls)
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        async_whole = await client.chat.completions.create(**kwargs)
        stream = await client.chat.completions.create(**kwargs, stream=True)
        async_pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        models = await client.models.list()
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(**kwargs, extra_body={"session_id": "a\nb"})
        await client.close()
    assert whole and completion and "".join(pieces)
    assert async_whole.choices[0].message.content and "".join(async_pieces)
    assert [m.id for m in models.data] == ["saga-sim"]
    assert bad.value.status_code == 400 and "session_id" in str(bad.value)


async def test_calls_go_to_the_replicas_serving_their_model(http: aiohttp.ClientSession) -> None:
    async with (
        fake_replica(model="llama") as llama,
        fake_replica(model="qwen") as qwen,
        running_proxy(config([llama.url, qwen.url])) as url,
    ):
        # until the health loop has read both replicas' model lists
        known = {r: v["models"] for r, v in (await _replicas_once(http, url, lambda _: True)).items()}
        async with http.get(f"{url}/v1/models") as r:
            listed = sorted(m["id"] for m in (await r.json())["data"])
        routed = []
        for i in range(6):
            model = "qwen" if i % 2 else "llama"
            body = {"model": model, "messages": MESSAGES}
            headers = {"X-Session-ID": f"s{i}"}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                routed.append((model, r.headers["X-Saga-Replica"]))
    assert known == {llama.url: ["llama"], qwen.url: ["qwen"]}
    assert listed == ["llama", "qwen"]
    assert all(replica == (qwen.url if model == "qwen" else llama.url) for model, replica in routed)


async def _replicas_once(
    http: aiohttp.ClientSession, url: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`GET /saga/v1/replicas` by replica, once every replica's models are known and `ready` holds."""
    seen: dict[str, Any] = {}
    for _ in range(100):
        async with http.get(f"{url}/saga/v1/replicas") as r:
            seen = {v["replica_id"]: v for v in (await r.json())["replicas"]}
        if all(v["models"] for v in seen.values()) and ready(seen):
            break
        await asyncio.sleep(0.05)
    return seen


async def test_a_backlogged_replica_keeps_its_models_calls_under_saga(http: aiohttp.ClientSession) -> None:
    """Work stealing moves a call off a replica with a long engine queue to an idle one, but never to an idle
    replica serving another model (an embedding replica beside a chat one is idle to the scheduler)."""
    backlog = "vllm:num_requests_waiting 40\nvllm:num_requests_running 4\n"
    config = ProxyConfig(replicas=[], port=0, policy="saga", health_interval_s=0.2)
    async with fake_replica(model="llama", metrics=backlog) as llama, fake_replica(model="embed") as embed:
        config = msgspec.structs.replace(config, replicas=[llama.url, embed.url])
        async with running_proxy(config) as url:
            # until the health loop has read the models and the backlog
            seen = await _replicas_once(http, url, lambda seen: seen[llama.url]["waiting"] == 40)
            routed = []
            for _ in range(6):
                body = {"model": "llama", "messages": MESSAGES}
                headers = {"X-Session-ID": "a"}
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    routed.append(r.headers["X-Saga-Replica"])
    assert seen[llama.url]["waiting"] == 40
    assert routed == [llama.url] * 6


async def test_a_workflow_of_another_model_is_admitted_past_one_waiting_for_its_own(
    http: aiohttp.ClientSession,
) -> None:
    """Under saga's admission, a new llama workflow waits for room on the llama replica; a qwen workflow
    arriving after it goes at once to the qwen replica, which has room (before: it waited behind)."""
    small_kv = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="64"} 1\n'  # 1,024 tokens
    config = ProxyConfig(replicas=[], port=0, policy="saga", health_interval_s=0.2)
    async with fake_replica(model="llama", metrics=small_kv) as llama, fake_replica(model="qwen") as qwen:
        config = msgspec.structs.replace(config, replicas=[llama.url, qwen.url])
        async with running_proxy(config) as url:
            # until the health loop has read the models and the capacity
            await _replicas_once(http, url, lambda seen: bool(seen[llama.url]["kv_capacity_tokens"]))

            async def chat(model: str, session: str, messages: list[dict[str, str]] = MESSAGES) -> str:
                body = {"model": model, "messages": messages}
                headers = {"X-Session-ID": session}
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    return r.headers["X-Saga-Replica"]

            assert await chat("llama", "a") == llama.url
            # back, longer: its agent type holds between calls from now on ("a" keeps its reservation)
            longer = [*MESSAGES, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "go on"}]
            assert await chat("llama", "a", longer) == llama.url
            waiting = asyncio.create_task(chat("llama", "b"))  # no room left on the llama replica
            for _ in range(100):
                async with http.get(f"{url}/saga/v1/state") as r:
                    if (await r.json())["admission"]["waiting"]:
                        break
                await asyncio.sleep(0.02)
            assert await asyncio.wait_for(chat("qwen", "c"), 10) == qwen.url
            assert not waiting.done()
            async with http.post(f"{url}/saga/v1/sessions/a/end") as r:
                assert r.status == 200
            assert await asyncio.wait_for(waiting, 10) == llama.url
