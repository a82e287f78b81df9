"""The replicas' HTTP surface over loopback: OpenAI chat/completions, streaming, usage, errors, metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from simulator.server import ReplicaFleet, serve_fleet_forever, start_fleet

TIME_SCALE = 1000.0  # simulated GPU time runs 1000x faster than the wall clock


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=TIME_SCALE)
    yield fleet
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": "You are a coding agent. " + "Tools: edit, shell, test. " * 40},
        {"role": "user", "content": "Fix the failing test. " * 10},
    ]
    for i in range(turns - 1):
        messages.append({"role": "assistant", "content": f"Calling run_tests, attempt {i}."})
        messages.append({"role": "tool", "content": f"[run_tests] 3 failed, log {i} " * 20})
    return messages


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any, str]:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    async with http.post(url, data=data, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers.get("X-Replica", "")


def sse_events(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


async def test_chat_completion_reports_usage_and_second_call_hits_the_prefix_cache(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = f"{fleet.urls[0]}/v1/chat/completions"
    body = {"model": "saga-sim", "messages": conversation(1), "max_tokens": 8, "ignore_eos": True}
    status, first, replica = await post(http, url, body)
    assert (status, replica) == (200, "sim-0")
    assert first["object"] == "chat.completion" and first["model"] == "saga-sim"
    choice = first["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = first["usage"]
    assert usage["completion_tokens"] == 8 and usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8

    _, second, _ = await post(http, url, {**body, "messages": conversation(2)})
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % 16 == 0
    assert (
        usage["prompt_tokens"] - 16 < cached <= second["usage"]["prompt_tokens"] - 1
    )  # the first prompt's blocks

    _, elsewhere, replica = await post(
        http, f"{fleet.urls[1]}/v1/chat/completions", {**body, "messages": conversation(2)}
    )
    assert replica == "sim-1" and elsewhere["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_streamed_chat_matches_the_whole_answer_and_ends_with_usage_and_done(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    url = f"{fleet.urls[0]}/v1/chat/completions"
    body = {"messages": conversation(1), "max_completion_tokens": 12, "ignore_eos": True}
    _, whole, _ = await post(http, url, body)
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=stream_body) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        assert r.headers["X-Replica"] == "sim-0"
        events = sse_events(await r.read())
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == whole["choices"][0]["message"]["content"]


async def test_stream_without_include_usage_has_no_usage_chunk(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    body = {"messages": conversation(1), "max_tokens": 3, "stream": True}
    async with http.post(f"{fleet.urls[0]}/v1/chat/completions", json=body) as r:
        chunks = [msgspec.json.decode(e) for e in sse_events(await r.read())[:-1]]
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] is not None


async def test_completions_whole_and_streamed(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    url = f"{fleet.urls[0]}/v1/completions"
    status, whole, _ = await post(http, url, {"prompt": "Once upon a time"})
    assert status == 200 and whole["object"] == "text_completion"
    assert 1 <= whole["usage"]["completion_tokens"] <= 16  # vLLM's default max_tokens for completions
    status, by_ids, _ = await post(
        http, url, {"prompt": [300, 301, 302], "max_tokens": 4, "ignore_eos": True}
    )
    assert (
        status == 200 and by_ids["usage"]["prompt_tokens"] == 3 and by_ids["usage"]["completion_tokens"] == 4
    )
    body = {"prompt": ["Once upon a time"], "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=body) as r:
        events = sse_events(await r.read())
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == whole["choices"][0]["text"]
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # 4 tokens: no full block


ONE_MESSAGE = b'"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("path", "body", "status", "needle", "param"),
    [
        ("/v1/chat/completions", b"{not json", 400, "Invalid request body", None),
        ("/v1/chat/completions", b"[1, 2]", 400, "Invalid request body", None),
        ("/v1/chat/completions", b'{"model": "saga-sim"}', 400, "messages", "body.messages"),
        # an assistant's tool call with a null or non-object function was a 500 (render_chat crashed)
        *(
            pytest.param(
                path, b'{"messages": [{"role": "assistant", "tool_calls": %s}]}' % calls, 400, needle, None
            )
            for path in ("/v1/chat/completions", "/tokenize", "/v1/chat/completions/render")
            for calls, needle in (
                (b'[{"function": null}]', "tool_calls[0].function"),
                (b'[{"function": "x"}]', "tool_calls[0].function"),
                (b'[{"id": "c", "type": "function", "function": {"name": "f"}}]', "function.arguments"),
                (b"[null]", "tool_calls[0]"),
                (b"5", "tool_calls"),
            )
        ),
        ("/v1/chat/completions", b'{"messages": [{"content": "x"}]}', 400, "role", None),
        # vLLM's checks on `n` (its words: a VLLMValidationError naming no parameter)
        (
            "/v1/chat/completions",
            b"{" + ONE_MESSAGE + b', "n": 0}',
            400,
            "n must be at least 1, got 0.",
            None,
        ),
        (
            "/v1/completions",
            b'{"prompt": "hi", "n": 16385}',
            400,
            "n must be at most 16384, got 16385.",
            None,
        ),
        (
            "/v1/chat/completions",
            b"{" + ONE_MESSAGE + b', "n": 2, "temperature": 0}',
            400,
            "n must be 1 when using greedy sampling, got 2.",
            None,
        ),
        ("/v1/completions", b'{"prompt": "hi", "n": null}', 400, "n", "body.n"),  # (chat takes a null)
        ("/v1/chat/completions", b'{"messages": [], "model": "other"}', 404, "does not exist", "model"),
        (
            "/v1/chat/completions",
            b"{" + ONE_MESSAGE + b', "max_tokens": 200000}',
            400,
            "max_tokens=200000 cannot be greater than max_model_len",
            "max_tokens",
        ),
        ("/v1/completions", b"", 400, "Invalid request body", None),
        ("/v1/completions", b'{"prompt": [[1, 2], [3]]}', 400, "prompt", None),
        ("/v1/completions", b'{"prompt": "hi", "max_tokens": 0}', 400, "max_tokens", "max_tokens"),
        (
            "/v1/completions",
            b'{"prompt": "hi", "cache_salt": ""}',
            400,
            "'cache_salt' must be a non-empty",
            None,
        ),
        ("/v1/completions", b'{"prompt": "hi", "cache_salt": "a/b"}', 400, "at most 128 characters", None),
        # nesting past Python's recursion limit in a loosely typed field (was a 500)
        pytest.param(
            "/v1/chat/completions",
            b"{" + ONE_MESSAGE + b', "tools": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            400,
            "nested",
            None,
            id="chat-tools-nested-too-deeply",
        ),
        pytest.param(
            "/v1/messages",
            b'{"system": ' + b"[" * 100_000 + b"]" * 100_000 + b', "messages": [], "max_tokens": 4}',
            400,
            "nested",
            None,
            id="messages-system-nested-too-deeply",
        ),
    ],
)
async def test_bad_requests_get_vllm_style_errors(
    fleet: ReplicaFleet,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    status: int,
    needle: str,
    param: str | None,
) -> None:
    got, payload, replica = await post(http, fleet.urls[0] + path, body)
    assert got == status and replica == "sim-0"
    error = payload["error"]
    assert needle in error["message"] and error["code"] == status and error["param"] == param
    assert error["type"] == ("BadRequestError" if status == 400 else "NotFoundError")


async def test_an_over_long_prompt_is_a_400(http: aiohttp.ClientSession) -> None:
    fleet = await start_fleet(1, time_scale=TIME_SCALE, profile="tiny-cpu")
    try:
        status, payload, _ = await post(http, f"{fleet.urls[0]}/v1/completions", {"prompt": "word " * 3000})
    finally:
        await fleet.close()
    assert status == 400 and "maximum context length is 2048" in payload["error"]["message"]


async def test_priority_from_body_or_header_needs_the_priority_policy(http: aiohttp.ClientSession) -> None:
    body = {"messages": conversation(1), "max_tokens": 2}
    fcfs = await start_fleet(1, time_scale=TIME_SCALE, scheduling_policy="fcfs")
    prio = await start_fleet(1, time_scale=TIME_SCALE)
    try:
        for fleet, ok in ((prio, 200), (fcfs, 400)):
            url = f"{fleet.urls[0]}/v1/chat/completions"
            assert (await post(http, url, {**body, "priority": 3}))[0] == ok
            assert (await post(http, url, body, headers={"X-Vllm-Priority": "2"}))[0] == ok
            assert (await post(http, url, body))[0] == 200
        assert (await post(http, url, body, headers={"X-Vllm-Priority": "high"}))[0] == 400
        # As in vLLM, the header overrides the body: a 0 there makes the body's 3 moot, and the other way
        # round the header's 2 is what needs the priority policy (what a router sets wins over its client)
        on_fcfs = f"{fcfs.urls[0]}/v1/chat/completions"
        zero, two = {"X-Vllm-Priority": "0"}, {"X-Vllm-Priority": "2"}
        assert (await post(http, on_fcfs, {**body, "priority": 3}, headers=zero))[0] == 200
        assert (await post(http, on_fcfs, {**body, "priority": 0}, headers=two))[0] == 400
    finally:
        await fcfs.close()
        await prio.close()


async def test_metrics_expose_vllm_names_and_count_work(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    body = {"messages": conversation(1), "max_tokens": 5, "ignore_eos": True}
    for _ in range(2):
        await post(http, f"{fleet.urls[0]}/v1/chat/completions", body)
    async with http.get(f"{fleet.urls[0]}/metrics") as r:
        assert r.status == 200 and r.headers["X-Replica"] == "sim-0"
        text = await r.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    labels = '{engine="0",model_name="saga-sim"}'
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert samples[gauge + labels] == 0.0
    assert samples["vllm:generation_tokens_total" + labels] == 10
    assert samples["vllm:prefix_cache_hits_total" + labels] > 0
    assert samples["vllm:prefix_cache_queries_total" + labels] == samples["vllm:prompt_tokens_total" + labels]
    assert samples["vllm:num_preemptions_total" + labels] == 0
    assert samples["vllm:time_to_first_token_seconds_count" + labels] == 2
    assert samples["vllm:e2e_request_latency_seconds_count" + labels] == 2
    info = next(k for k in samples if k.startswith("vllm:cache_config_info{"))
    # 26880 usable blocks, plus vLLM's null block
    for label in ('block_size="16"', 'num_gpu_blocks="26881"', 'enable_prefix_caching="True"',
                  'prefix_caching_hash_algo="sha256"'):  # fmt: skip
        assert label in info
    async with http.get(f"{fleet.urls[1]}/metrics") as r:
        assert 'vllm:generation_tokens_total{engine="0",model_name="saga-sim"} 0.0' in await r.text()


async def test_models_health_version_tokenize_and_reset(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    base = fleet.urls[0]
    async with http.get(f"{base}/v1/models") as r:
        models = await r.json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["saga-sim"]
    async with http.get(f"{base}/health") as r:
        assert r.status == 200 and await r.read() == b"" and r.headers["X-Replica"] == "sim-0"
    async with http.get(f"{base}/version") as r:
        assert (await r.json())["version"]
    messages = conversation(1)
    _, tokenized, _ = await post(http, f"{base}/tokenize", {"messages": messages})
    _, chat, _ = await post(http, f"{base}/v1/chat/completions", {"messages": messages, "max_tokens": 1})
    assert tokenized["count"] == len(tokenized["tokens"]) == chat["usage"]["prompt_tokens"]
    assert tokenized["max_model_len"] == 131072
    _, rendered, _ = await post(http, f"{base}/v1/chat/completions/render", {"messages": messages})
    assert rendered["token_ids"] == tokenized["tokens"]
    _, by_prompt, _ = await post(http, f"{base}/tokenize", {"prompt": "hello world"})
    assert by_prompt["count"] == 2
    _, text, _ = await post(http, f"{base}/detokenize", {"tokens": by_prompt["tokens"]})
    assert text["prompt"] == "hello world"
    status, reset, _ = await post(http, f"{base}/reset_prefix_cache", b"")
    assert status == 200 and reset == {"success": True}
    _, again, _ = await post(http, f"{base}/v1/chat/completions", {"messages": messages, "max_tokens": 1})
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_n_choices_each_answer_on_their_own_whole_and_streamed(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """vLLM's parallel sampling: `n` choices, each its own words (choice 0 as a call without `n`), the usage
    counting the prompt once and every choice's tokens; streamed, a role chunk per choice first, then each
    choice's chunks interleaved (one choice per chunk), each ending with its finish reason."""
    url = f"{fleet.urls[0]}/v1/chat/completions"
    body = {"messages": conversation(1), "max_tokens": 12, "ignore_eos": True, "n": 3}
    status, whole, _ = await post(http, url, body)
    assert status == 200 and [c["index"] for c in whole["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert len(set(texts)) == 3 and all(c["finish_reason"] == "length" for c in whole["choices"])
    assert whole["usage"]["completion_tokens"] == 36
    _, single, _ = await post(http, url, {**body, "n": None})  # null is vLLM's 1
    assert [c["message"]["content"] for c in single["choices"]] == texts[:1]
    assert whole["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]

    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=stream_body) as r:
        assert r.status == 200
        chunks = [msgspec.json.decode(e) for e in sse_events(await r.read())[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [{"role": "assistant", "content": ""}] * 3
    assert [c["choices"][0]["index"] for c in chunks[:3]] == [0, 1, 2]
    assert all(len(c["choices"]) == 1 for c in chunks[:-1])
    streamed = ["", "", ""]
    finishes = [None, None, None]
    for chunk in chunks[3:-1]:
        choice = chunk["choices"][0]
        streamed[choice["index"]] += choice["delta"].get("content") or ""
        finishes[choice["index"]] = finishes[choice["index"]] or choice["finish_reason"]
    assert streamed == texts and finishes == ["length"] * 3
    indexes = [c["choices"][0]["index"] for c in chunks[3:-1]]
    assert indexes != sorted(indexes)  # interleaved as the tokens come, not one choice after another
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 36

    status, completions, _ = await post(
        http, f"{fleet.urls[0]}/v1/completions", {"prompt": "Once upon a time", "n": 2, "max_tokens": 5}
    )
    assert status == 200 and [c["index"] for c in completions["choices"]] == [0, 1]
    assert completions["choices"][0]["text"] != completions["choices"][1]["text"]
    # a temperature in (0, 0.01) is not greedy: vLLM raises it to 0.01 first
    status, _, _ = await post(http, url, {**body, "temperature": 1e-6})
    assert status == 200
    # the Responses API has no `n`: vLLM ignores one
    status, response, _ = await post(http, f"{fleet.urls[0]}/v1/responses", {"input": "x", "n": 2})
    assert status == 200 and len(response["output"]) == 1


async def test_each_of_n_choices_makes_a_tool_call_of_its_own(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    """As vLLM's sampled choices do (the review of the change: the simulator gave every choice one call, one
    id): each choice's call has its own id, and which tool and arguments are drawn from the choice's seed."""
    url = f"{fleet.urls[0]}/v1/chat/completions"
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
        for name in ("read_file", "run_tests", "edit_file", "grep")
    ]
    body = {"messages": conversation(1), "tools": tools, "tool_choice": "required", "n": 8, "max_tokens": 64}
    status, whole, _ = await post(http, url, body)
    assert status == 200
    calls = [c["message"]["tool_calls"][0] for c in whole["choices"]]
    assert len({c["id"] for c in calls}) == 8 and len({c["function"]["name"] for c in calls}) > 1
    async with http.post(url, json={**body, "stream": True}) as r:
        chunks = [msgspec.json.decode(e) for e in sse_events(await r.read())[:-1]]
    streamed: dict[int, set[str]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or ():
            if "id" in call:
                streamed.setdefault(chunk["choices"][0]["index"], set()).add(call["id"])
    assert sorted(streamed) == list(range(8)) and len(set().union(*streamed.values())) == 8


async def test_a_client_leaving_n_choices_aborts_every_choice(
    fleet: ReplicaFleet, http: aiohttp.ClientSession
) -> None:
    engine = fleet.replicas[0].engine
    body = {"messages": conversation(1), "max_tokens": 100_000, "ignore_eos": True, "stream": True, "n": 4}
    async with http.post(f"{fleet.urls[0]}/v1/chat/completions", json=body) as r:
        await r.content.readline()  # streaming has started
        assert engine.stats().num_running == 4
        r.close()  # hang up
    for _ in range(400):  # bounded wait for the server to notice; not a timing assertion
        if not engine.has_unfinished():
            break
        await asyncio.sleep(0.01)
    assert not engine.has_unfinished() and engine.pool.usage == 0.0


async def test_client_disconnect_aborts_the_request(fleet: ReplicaFleet, http: aiohttp.ClientSession) -> None:
    engine = fleet.replicas[0].engine
    body = {"messages": conversation(1), "max_tokens": 100_000, "ignore_eos": True, "stream": True}
    async with http.post(f"{fleet.urls[0]}/v1/chat/completions", json=body) as r:
        await r.content.readline()  # streaming has started
        assert engine.stats().num_running == 1
        r.close()  # hang up
    for _ in range(400):  # bounded wait for the server to notice; not a timing assertion
        if not engine.has_unfinished():
            break
        await asyncio.sleep(0.01)
    assert not engine.has_unfinished() and engine.pool.usage == 0.0

    task = asyncio.create_task(post(http, f"{fleet.urls[1]}/v1/chat/completions", {**body, "stream": False}))
    other = fleet.replicas[1].engine
    for _ in range(400):
        if other.has_unfinished():
            break
        await asyncio.sleep(0.01)
    assert other.has_unfinished()
    task.cancel()  # a non-streaming client hanging up
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(400):
        if not other.has_unfinished():
            break
        await asyncio.sleep(0.01)
    assert not other.has_unfinished()


async def test_fleet_on_fixed_ports_and_concurrent_requests(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fleet = await start_fleet(1, base_port=port, time_scale=TIME_SCALE, model="m")
    try:
        assert fleet.urls == [f"http://127.0.0.1:{port}"]
        body = {"model": "m", "messages": conversation(1), "max_tokens": 20, "ignore_eos": True}
        results = await asyncio.gather(
            *(post(http, f"{fleet.urls[0]}/v1/chat/completions", body) for _ in range(8))
        )
    finally:
        await fleet.close()
    assert [status for status, _, _ in results] == [200] * 8
    assert all(payload["usage"]["completion_tokens"] == 20 for _, payload, _ in results)
    assert len({payload["choices"][0]["message"]["content"] for _, payload, _ in results}) == 1


async def test_serve_fleet_forever_prints_urls_and_stops_when_cancelled(
    http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = asyncio.create_task(
        serve_fleet_forever(
            1, host="127.0.0.1", base_port=port, time_scale=TIME_SCALE, profile="tiny-cpu", model="saga-sim"
        )
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(500):  # bounded wait for start-up; not a timing assertion
        if url in capsys.readouterr().out:
            break
        await asyncio.sleep(0.01)
    async with http.get(f"{url}/health") as r:
        assert r.status == 200 and r.headers["X-Replica"] == "sim-0"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"{url}/health")


async def test_kv_blocks_and_hash_algorithm_as_vllms_flags(http: aiohttp.ClientSession) -> None:
    from proxy.cli import build_parser

    args = build_parser().parse_args(
        ["sim", "--prefix-caching-hash-algo", "sha256_cbor", "--num-gpu-blocks-override", "20"]
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sim", "--num-gpu-blocks-override", "1"])
    fleet = await start_fleet(
        1,
        time_scale=TIME_SCALE,
        profile="tiny-cpu",
        hash_algo=args.prefix_caching_hash_algo,
        num_gpu_blocks=args.num_gpu_blocks_override,
    )
    try:
        engine = fleet.replicas[0].engine
        assert engine.pool.num_blocks == 19  # vLLM's block 0 is its null block
        async with http.get(f"{fleet.urls[0]}/metrics") as r:
            text = await r.text()
    finally:
        await fleet.close()
    assert 'num_gpu_blocks="20"' in text and 'prefix_caching_hash_algo="sha256_cbor"' in text


@pytest.mark.parametrize("loose", ["true", 1, None])
async def test_a_stream_asked_for_loosely_is_streamed_as_vllm_streams_it(
    fleet: ReplicaFleet, http: aiohttp.ClientSession, loose: object
) -> None:
    """vLLM reads a request as pydantic's lax mode does: `"stream": "true"` or `1` is a stream and
    `"max_tokens": "3"` a number. The simulator answered both with a 400 (the docs review of the
    forty-sixth session), where the README says bodies are read as vLLM reads them."""
    body = {"messages": [{"role": "user", "content": "x"}], "stream": loose, "max_tokens": "3"}
    async with http.post(f"{fleet.urls[0]}/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        if loose is None:  # null: no stream (vLLM's `bool | None`)
            assert (await r.json())["object"] == "chat.completion"
            return
        assert r.content_type == "text/event-stream"
        events = sse_events(await r.read())
    assert events[-1] == "[DONE]"
