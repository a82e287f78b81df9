"""Where the simulated replica's HTTP API answers as vLLM 0.32 does (the forty-seventh review's findings):
empty conversations, max_tokens clamped to the context, stream_options, vLLM's request validation, pydantic's
lax reading of scalars, unknown models on the tokenizer and Anthropic routes, and the error `param`.
The expected answers are the real vLLM's (tiny Llama, --max-model-len 2048, as the tiny-cpu profile)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from simulator.lax import loosen
from simulator.openai_api import ChatCompletionRequest
from simulator.server import ReplicaFleet, start_fleet

MODEL = "saga-sim"
HI = [{"role": "user", "content": "hi"}]
EMPTY_CONVERSATION = "Cannot apply chat template to an empty conversation. Provide at least one message."


@pytest.fixture
async def url() -> AsyncIterator[str]:
    fleet: ReplicaFleet = await start_fleet(1, time_scale=1000.0, profile="tiny-cpu")
    yield fleet.urls[0]
    await fleet.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, bytes]:
    async with http.post(url, data=msgspec.json.encode(body)) as r:
        raw = await r.read()
    try:
        return r.status, json.loads(raw), raw
    except ValueError:
        return r.status, None, raw


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HI, "max_tokens": 3, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hello", "max_tokens": 3, **fields}


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]


# ---- empty conversations ------------------------------------------------------------------------------


async def test_an_empty_conversation_is_a_400(url: str, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{url}/v1/chat/completions", chat(messages=[]))
    assert status == 400 and body["error"]["message"] == EMPTY_CONVERSATION
    status, body, _ = await post(http, f"{url}/v1/messages", chat(messages=[]))
    assert status == 400 and body == {
        "type": "error",
        "error": {"type": "BadRequestError", "message": EMPTY_CONVERSATION},
    }
    status, body, _ = await post(http, f"{url}/tokenize", {"messages": []})
    assert status == 400 and body["error"]["message"] == EMPTY_CONVERSATION


# ---- max_tokens clamped to the room the prompt leaves -------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "completion_tokens"),
    [
        ("/v1/completions", {"prompt": [300] * 2047, "max_tokens": 2}, 1),
        ("/v1/completions", {"prompt": [300] * 2047}, 1),  # the default 16
        ("/v1/completions", {"prompt": [300] * 2000, "max_tokens": 100, "ignore_eos": True}, 48),
        ("/v1/chat/completions", {"messages": HI, "max_tokens": 2040, "ignore_eos": True}, None),
        ("/v1/chat/completions", {"messages": HI, "max_completion_tokens": 2048, "ignore_eos": True}, None),
    ],
)
async def test_max_tokens_is_clamped_to_the_context_left(
    url: str, http: aiohttp.ClientSession, path: str, body: dict[str, Any], completion_tokens: int | None
) -> None:
    status, answer, raw = await post(http, url + path, {"model": MODEL, **body})
    assert status == 200, raw
    usage = answer["usage"]
    assert answer["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 2048
    if completion_tokens is not None:
        assert usage["completion_tokens"] == completion_tokens


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"prompt": [300] * 10, "max_tokens": 5000},
            "max_tokens",
            "max_tokens=5000 cannot be greater than max_model_len=2048. Please request fewer output tokens. "
            "(parameter=max_tokens, value=5000)",
        ),
        (
            {"prompt": [300] * 2048, "max_tokens": 3},
            "max_tokens",
            "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
        ),
        (
            {"prompt": [300] * 2100, "max_tokens": 3},
            "input_tokens",
            "This model's maximum context length is 2048 tokens. However, your prompt contains 2100 "
            "input tokens, which exceeds this limit even without any output tokens. Please reduce the "
            "length of the input prompt. (parameter=input_tokens, value=2100)",
        ),
    ],
)
async def test_what_cannot_fit_the_context_is_refused_as_vllm_refuses_it(
    url: str, http: aiohttp.ClientSession, body: dict[str, Any], param: str, message: str
) -> None:
    status, answer, _ = await post(http, f"{url}/v1/completions", {"model": MODEL, **body})
    assert status == 400 and answer["error"]["param"] == param and answer["error"]["message"] == message


async def test_an_output_limit_past_the_context_names_its_field(
    url: str, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post(http, f"{url}/v1/chat/completions", chat(max_completion_tokens=10**9))
    assert status == 400 and answer["error"]["param"] == "max_completion_tokens"
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 10**9}
    status, answer, _ = await post(http, f"{url}/v1/responses", body)
    assert status == 400 and answer["error"]["param"] == "max_output_tokens"


# ---- stream_options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_options_need_a_stream(url: str, http: aiohttp.ClientSession, path: str) -> None:
    body = chat() if "chat" in path else completion()
    for stream in (None, False):
        fields = {"stream_options": {"include_usage": False}} | ({} if stream is None else {"stream": stream})
        status, answer, _ = await post(http, url + path, {**body, **fields})
        assert status == 400 and answer["error"]["param"] == "stream_options"
        assert answer["error"]["message"] == (
            "Stream options can only be defined when `stream=True`. (parameter=stream_options)"
        )
    status, _, _ = await post(http, url + path, {**body, "stream_options": {}})  # empty: vLLM lets it be
    assert status == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_continuous_usage_stats_put_the_usage_in_every_chunk(
    url: str, http: aiohttp.ClientSession, path: str
) -> None:
    body = (
        chat(max_tokens=4, ignore_eos=True) if "chat" in path else completion(max_tokens=4, ignore_eos=True)
    )
    options = {"include_usage": True, "continuous_usage_stats": True}
    status, _, raw = await post(http, url + path, {**body, "stream": True, "stream_options": options})
    assert status == 200
    events = chunks(raw)
    content, final = [c for c in events if c["choices"]], events[-1]
    assert content and all(
        set(c["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens"} for c in content
    )
    counts = [c["usage"]["completion_tokens"] for c in content]
    assert counts == sorted(counts) and counts[-1] == 4
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 4
    assert "prompt_tokens_details" in final["usage"]
    # without continuous_usage_stats only the final chunk carries usage
    options = {"include_usage": True}
    _, _, raw = await post(http, url + path, {**body, "stream": True, "stream_options": options})
    assert [bool(c.get("usage")) for c in chunks(raw)][-2:] == [False, True]


# ---- vLLM's request validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", chat(temperature=-1), "temperature"),
        ("/v1/chat/completions", chat(temperature=2.5), "temperature"),
        ("/v1/chat/completions", chat(temperature="hot"), "body.temperature"),
        ("/v1/chat/completions", chat(top_p=2), "top_p"),
        ("/v1/chat/completions", chat(top_p=0), "top_p"),
        ("/v1/chat/completions", chat(top_logprobs=2), "top_logprobs"),
        ("/v1/chat/completions", chat(stop=5), "body.stop"),
        ("/v1/chat/completions", chat(seed="x"), "body.seed"),
        # past Python's 4,300-digit bound on int(): a 500 (the forty-seventh session's review)
        ("/v1/chat/completions", chat(max_tokens="1" * 5000), "body.max_tokens"),
        ("/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), None),
        ("/v1/messages", chat(temperature=-1), None),  # Anthropic's error shape: no param
        ("/v1/completions", completion(suffix="x"), "suffix"),
        ("/v1/completions", completion(prompt=[999999]), None),
        ("/v1/completions", completion(prompt=[5, -1]), "body.prompt.1"),
        ("/v1/completions", completion(stop=[1]), "body.stop.0"),  # (msgspec's path; pydantic's may differ)
        (
            "/v1/chat/completions",
            chat(
                messages=[
                    *HI,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "function": {"name": "f"}}],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "ok"},
                ]
            ),
            None,
        ),
    ],
)
async def test_what_vllm_refuses_is_a_400(
    url: str, http: aiohttp.ClientSession, path: str, body: dict[str, Any], param: str | None
) -> None:
    status, answer, raw = await post(http, url + path, body)
    assert status == 400, raw
    assert answer["error"].get("param") == param


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat(temperature=0, top_p=1, seed=7, stop=["x"])),
        ("/v1/chat/completions", chat(temperature=2, stop="x", logprobs=True, top_logprobs=2)),
        ("/v1/chat/completions", chat(top_logprobs=0)),
        ("/v1/completions", completion(prompt=[0, 31999], stop=None, seed=None)),
    ],
)
async def test_what_vllm_accepts_still_runs(
    url: str, http: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    status, _, raw = await post(http, url + path, body)
    assert status == 200, raw


# ---- pydantic's lax mode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"max_tokens": True}, 200),
        ({"max_completion_tokens": True}, 200),
        ({"n": True}, 200),
        ({"priority": True}, 200),
        ({"max_tokens": " 3"}, 200),
        ({"max_tokens": "3.0"}, 200),
        ({"max_tokens": 3.0}, 200),
        ({"ignore_eos": "yes"}, 200),
        ({"ignore_eos": "OFF"}, 200),
        ({"stream": "yes"}, 200),
        ({"stream": "off"}, 200),
        ({"stream": 1.0}, 200),
        ({"stream": "t", "stream_options": {"include_usage": "y"}}, 200),
        ({"temperature": "0.5"}, 200),
        ({"max_tokens": "null"}, 400),
        ({"max_tokens": "1e1"}, 400),
        ({"max_tokens": "3."}, 400),  # (taken before the fifty-fourth session's second review)
        ({"n": " +2 "}, 200),
        ({"n": "0_2"}, 200),
        ({"max_tokens": 3.5}, 400),
        ({"stream": 2}, 400),
        ({"stream": " yes"}, 400),
        ({"max_tokens": "yes"}, 400),
    ],
)
async def test_scalars_are_read_as_pydantic_reads_them(
    url: str, http: aiohttp.ClientSession, fields: dict[str, Any], status: int
) -> None:
    got, answer, raw = await post(http, f"{url}/v1/chat/completions", chat(**fields))
    assert got == status, raw
    if status == 400:
        assert answer["error"]["param"] == f"body.{next(iter(fields))}"


def test_loosen_converts_only_the_typed_scalar_fields() -> None:
    raw = {"stream": "on", "max_tokens": " 16 ", "n": False, "stream_options": {"include_usage": 1}}
    raw |= {"messages": [{"role": "user", "content": "1"}], "tools": "yes", "model": 5}
    out = loosen(raw, ChatCompletionRequest)
    assert out["stream"] is True and out["max_tokens"] == 16 and out["n"] == 0
    assert out["stream_options"] == {"include_usage": True}
    assert out["tools"] == "yes" and out["model"] == 5 and out["messages"][0]["content"] == "1"


# ---- unknown models -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"), [("/tokenize", {"prompt": "hi"}), ("/detokenize", {"tokens": [300]})]
)
async def test_the_tokenizer_routes_check_the_model(
    url: str, http: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    status, answer, _ = await post(http, url + path, {"model": "nope", **body})
    assert (
        status == 404 and answer["error"]["param"] == "model" and answer["error"]["type"] == "NotFoundError"
    )
    assert answer["error"]["message"] == f"The model `nope` does not exist. Valid aliases: {MODEL}."
    status, _, _ = await post(http, url + path, {"model": MODEL, **body})
    assert status == 200


async def test_messages_refuses_an_unknown_or_missing_model_as_vllm_does(
    url: str, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post(http, f"{url}/v1/messages", chat(model="nope"))
    assert status == 404 and answer == {
        "type": "error",
        "error": {
            "type": "NotFoundError",
            "message": f"The model `nope` does not exist. Valid aliases: {MODEL}.",
        },
    }
    body = chat()
    del body["model"]
    status, answer, _ = await post(http, f"{url}/v1/messages", body)
    assert status == 400 and answer["error"]["param"] == "body.model"


async def test_an_unknown_model_on_chat_names_the_param(url: str, http: aiohttp.ClientSession) -> None:
    status, answer, _ = await post(http, f"{url}/v1/chat/completions", chat(model="nope"))
    assert status == 404 and answer["error"]["param"] == "model"
