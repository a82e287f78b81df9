"""vLLM's HTTP surface over one simulated engine: OpenAI chat/completions, tokenizer, health, metrics.

Contract:
- `/v1/chat/completions` and `/v1/completions` stream (SSE, `data: [DONE]`, a final usage chunk with
  `stream_options.include_usage`, the usage so far in every chunk with `continuous_usage_stats` too) or
  answer whole; `usage.prompt_tokens_details.cached_tokens` is always set. `max_tokens` is clamped to the
  room the prompt leaves in the context, as vLLM clamps it (simulator.generation). `n` choices are sampled
  as vLLM samples them in parallel: one engine request each, each its own words; whole, `choices` in index
  order; streamed, a role chunk per choice, then each choice's chunks as its tokens come (one choice per
  chunk, interleaved); the usage counts the prompt once and every choice's completion tokens.
- Bodies are read as vLLM's pydantic models read them (simulator.lax for the scalars). Bad requests answer
  400 in vLLM's error shape, `param` naming the field where vLLM names it, before anything is streamed:
  unparseable JSON or wrongly typed fields (`param` "body.<field>"), missing messages/prompt, an empty
  conversation, message content neither text nor parts, malformed assistant `tool_calls`, stream_options
  without a stream, top_logprobs without logprobs, `suffix`, token ids outside the vocabulary, `n` below 1
  or above 16,384 or above 1 at temperature 0, temperature outside [0, 2], top_p outside (0, 1], max_tokens
  above the context or a prompt that fills it, priority without the priority policy. An unknown model is
  a 404 (`param` "model"), on `/tokenize` and `/detokenize` too.
- A client that goes away aborts its request in the engine (handlers run with handler cancellation).
- KV retention (docs/retention-api.md): a generation request's session is the `X-Session-ID` header, else
  body `session_id`, else `vllm_xargs.session_id` (the proxy's precedence); `vllm_xargs.saga_retain_ttl_s`
  asks to retain its KV. `POST /saga/v1/retain` re-arms a retention, `POST /saga/v1/release` drops it,
  `GET /saga/v1/retained` lists them; these and `/metrics` first expire retentions at the driver's now.
- `GET /kv_event_sources` lists the replica's KV-event publisher as vLLM 0.32 does: `{"0": <KVEventsConfig>}`
  (keyed by data-parallel rank), `{}` when KV events are off (simulator.kv_publisher).
- Chat requests with `tools` answer with simulated tool calls (simulator.tool_calls: which tool, when, the
  stream shape); bad `tools`/`tool_choice` answer 400 naming the parameter.
- `/v1/responses` (simulator.responses_api) and `/v1/messages` (simulator.anthropic_api) generate too.
- Every response carries `X-Replica: <replica name>`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from simulator.anthropic_api import add_messages_routes
from simulator.driver import RequestStream
from simulator.engine_types import Usage
from simulator.faults import FAULTS, add_fault_routes, cut_connection, inject_faults
from simulator.generation import (
    MAX_CHOICES,
    ChoiceOutputs,
    abort_unfinished,
    chat_prompt_choices,
    check_conversation,
    check_model,
    submit_choices,
    summed_usage,
    whole_outputs,
)
from simulator.http_common import (
    REPLICA,
    HttpError,
    add_replica_header,
    decode,
    errors,
    json_obj,
    json_response,
    validation_error,
)
from simulator.openai_api import (
    DONE_EVENT,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ResponseFormat,
    TokenizeRequest,
    error_body,
)
from simulator.replica import Replica
from simulator.responses_api import add_responses_routes
from simulator.retention_routes import add_retention_routes, expire_retentions
from simulator.tokenizer import VOCAB_SIZE, Tokenizer, check_tool_calls, render_chat
from simulator.tool_calls import SimulatedToolCall, ToolCallStream

VERSION = "0.33.0+saga.sim"
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's (and OpenAI's) default for /v1/completions


# ---- generation -------------------------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    replica = request.app[REPLICA]
    body = await decode(request, ChatCompletionRequest)
    _check_stream_options(body)
    _check_top_logprobs(body)
    _check_messages(body.messages)
    check_model(replica, body.model)
    check_conversation(body.messages)
    prompt, tool_calls = chat_prompt_choices(
        replica,
        body.messages,
        body.tools,
        body.tool_choice,
        body.vllm_xargs,
        min(max(1, body.n or 1), MAX_CHOICES),  # (a bad `n` is refused with the sampling checks)
        add_generation_prompt=body.add_generation_prompt,
    )
    max_tokens, param = body.max_tokens, "max_tokens"
    if body.max_completion_tokens is not None:
        max_tokens, param = body.max_completion_tokens, "max_completion_tokens"
    return await _generate(
        request, replica, body, prompt, max_tokens, chat=True, tool_calls=tool_calls, max_tokens_param=param
    )


async def completions(request: web.Request) -> web.StreamResponse:
    replica = request.app[REPLICA]
    body = await decode(request, CompletionRequest)
    _check_stream_options(body)
    check_model(replica, body.model)
    if body.suffix is not None:
        raise HttpError(
            400, "suffix is only supported for models with FIM completion rendering", param="suffix"
        )
    prompt = _completion_prompt(replica.tokenizer, body.prompt)
    max_tokens = body.max_tokens if body.max_tokens is not None else _COMPLETIONS_DEFAULT_MAX_TOKENS
    return await _generate(request, replica, body, prompt, max_tokens, chat=False)


def _check_stream_options(body: ChatCompletionRequest | CompletionRequest) -> None:
    """vLLM's request models refuse stream options (a non-empty object) on a request that does not stream."""
    options = body.stream_options
    if options is None or body.stream:
        return
    if options.include_usage is not None or options.continuous_usage_stats is not None:
        raise validation_error("Stream options can only be defined when `stream=True`.", "stream_options")


def _check_top_logprobs(body: ChatCompletionRequest) -> None:
    top = body.top_logprobs
    if top is None:
        return
    if top < 0 and top != -1:
        raise validation_error("`top_logprobs` must be a positive value or -1.", "top_logprobs", top)
    if top != 0 and not body.logprobs:
        raise validation_error("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")


def _check_messages(messages: list[dict[str, Any]]) -> None:
    """The message shapes vLLM's request model refuses (a role; content text, parts or null; well-formed
    assistant tool calls); other fields ride along unread."""
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise HttpError(400, "Every message needs a string 'role'.")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise HttpError(400, f"messages[{i}].content must be a string or a list of content parts.")
    _check_tool_calls(messages)


def _check_tool_calls(messages: list[dict[str, Any]]) -> None:
    problem = check_tool_calls(messages)
    if problem is not None:
        raise HttpError(400, problem)


def _completion_prompt(tokenizer: Tokenizer, prompt: Any) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        _check_vocabulary(prompt)
        return list(prompt)
    raise HttpError(
        400, "prompt must be a string or a list of token ids (batches of more than one are not supported)"
    )


def _check_vocabulary(token_ids: list[int]) -> None:
    """vLLM refuses token ids outside the vocabulary: a negative one in its request model (naming where),
    one past the vocabulary when it renders the prompt."""
    if not token_ids:
        return
    if min(token_ids) < 0:
        at = next(i for i, t in enumerate(token_ids) if t < 0)
        raise HttpError(400, f"Token id {token_ids[at]} is out of vocabulary", param=f"body.prompt.{at}")
    if (high := max(token_ids)) >= VOCAB_SIZE:
        raise HttpError(400, f"Token id {high} is out of vocabulary")


async def _generate(
    request: web.Request,
    replica: Replica,
    body: ChatCompletionRequest | CompletionRequest,
    prompt: list[int],
    max_tokens: int | None,
    *,
    chat: bool,
    tool_calls: list[SimulatedToolCall | None] | None = None,
    max_tokens_param: str = "max_tokens",
) -> web.StreamResponse:
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    streams = submit_choices(
        request, replica, body, prompt, max_tokens, request_id, max_tokens_param=max_tokens_param
    )
    fmt = ResponseFormat(chat=chat, request_id=request_id, created=int(time.time()), model=replica.model)
    try:
        if body.stream:
            options = body.stream_options
            include_usage = options is not None and bool(options.include_usage)
            if include_usage and options is not None and options.continuous_usage_stats:
                fmt.count_usage(len(prompt))  # vLLM's continuous usage stats: usage in every chunk
            return await _stream(request, replica, streams, fmt, include_usage, tool_calls or [])
        return await _whole(replica, streams, fmt, tool_calls or [])
    finally:
        abort_unfinished(replica, streams)


async def _whole(
    replica: Replica,
    streams: list[RequestStream],
    fmt: ResponseFormat,
    tool_calls: list[SimulatedToolCall | None],
) -> web.Response:
    choices = await whole_outputs(streams)
    decode = replica.tokenizer.decode
    answers = [(decode(token_ids), out.finish_reason) for token_ids, out, _ in choices]
    return json_response(fmt.full(answers, summed_usage([usage for _, _, usage in choices]), tool_calls))


async def _stream(
    request: web.Request,
    replica: Replica,
    streams: list[RequestStream],
    fmt: ResponseFormat,
    include_usage: bool,
    tool_calls: list[SimulatedToolCall | None],
) -> web.StreamResponse:
    """vLLM's stream: on the first output a role chunk per choice, then each choice's chunks as its tokens
    come (one choice per chunk, `index` naming it), each choice's last with its finish reason, then the
    usage (summed over the choices) if asked."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    token_text = replica.tokenizer.token_text
    cut_after = request.app[FAULTS].cut_after_chunks()
    tool_streams = [None if call is None else ToolCallStream(call) for call in tool_calls]
    usages: list[Usage | None] = [None] * len(streams)  # each choice's, as it finishes
    outputs = ChoiceOutputs(streams)
    try:
        await response.prepare(request)  # inside: the client may already be gone
        first = True
        events = 0
        while True:
            if cut_after is not None and events >= cut_after:
                cut_connection(request)  # an injected fault: the replica dies mid-stream
                return response
            try:
                got = await outputs.next()
            except Exception as e:
                await response.write(
                    b"data: " + error_body(500, f"engine error: {e!r}") + b"\n\n" + DONE_EVENT
                )
                return response
            if got is None:
                break
            index, out = got
            if first:
                first = False
                for choice in range(len(streams)):
                    role = fmt.role_chunk(choice)
                    if role is not None:
                        await response.write(role)
            fmt.add_completion_tokens(len(out.new_token_ids))
            finished = out.finish_reason is not None
            tool_stream = tool_streams[index] if tool_streams else None
            if tool_stream is not None:
                for delta in tool_stream.advance(len(out.new_token_ids), finished):
                    await response.write(fmt.tool_call_chunk([delta], None, index))
                    events += 1
                if finished:
                    await response.write(fmt.tool_call_chunk([], tool_stream.call.finish_reason, index))
                    events += 1
            else:
                text = "".join(token_text(t) for t in out.new_token_ids)
                if text or finished:
                    await response.write(fmt.chunk(text, out.finish_reason, index))
                    events += 1
            if finished:
                usages[index] = out.usage
        final = [usage for usage in usages if usage is not None]
        if include_usage and final:
            await response.write(fmt.usage_chunk(summed_usage(final)))
        await response.write(DONE_EVENT)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; the caller aborts the request
    return response


# ---- the rest of the surface ----------------------------------------------------------------------------


async def tokenize(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, TokenizeRequest)
    check_model(replica, body.model)
    if body.messages is not None:
        _check_messages(body.messages)
        check_conversation(body.messages)
        tokens = replica.tokenizer.encode(
            render_chat(body.messages, add_generation_prompt=body.add_generation_prompt)
        )
    elif body.prompt is not None:
        tokens = replica.tokenizer.encode(body.prompt)
    else:
        raise HttpError(400, "Either 'prompt' or 'messages' is required.")
    max_len = replica.engine.profile.max_model_len
    return json_obj({"count": len(tokens), "max_model_len": max_len, "tokens": tokens, "token_strs": None})


async def detokenize(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, DetokenizeRequest)
    check_model(replica, body.model)
    return json_obj({"prompt": replica.tokenizer.decode(body.tokens)})


async def render_chat_prompt(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, ChatCompletionRequest)
    _check_messages(body.messages)
    check_model(replica, body.model)
    check_conversation(body.messages)
    text = render_chat(body.messages, add_generation_prompt=body.add_generation_prompt)
    return json_obj({"token_ids": replica.tokenizer.encode(text)})


async def render_completion_prompt(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, CompletionRequest)
    check_model(replica, body.model)
    return json_obj([{"token_ids": _completion_prompt(replica.tokenizer, body.prompt)}])


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return json_obj({"version": VERSION})


async def models(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    card = {
        "id": replica.model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "vllm",
        "root": replica.model,
        "parent": None,
        "max_model_len": replica.engine.profile.max_model_len,
    }
    return json_obj({"object": "list", "data": [card]})


async def load(request: web.Request) -> web.Response:
    stats = request.app[REPLICA].engine.stats()
    return json_obj({"server_load": stats.num_running + stats.num_waiting})


async def get_load(request: web.Request) -> web.Response:
    stats = request.app[REPLICA].engine.stats()
    return json_obj({"load": stats.num_running + stats.num_waiting})


async def reset_prefix_cache(request: web.Request) -> web.Response:
    return json_obj({"success": request.app[REPLICA].engine.reset_prefix_cache()})


async def kv_event_sources(request: web.Request) -> web.Response:
    """vLLM's discovery of its KV-event publishers: rank -> its config, `{}` when off."""
    publisher = request.app[REPLICA].kv_publisher
    return json_obj(publisher.sources() if publisher is not None else {})


async def metrics(request: web.Request) -> web.Response:
    expire_retentions(request.app[REPLICA])
    body = request.app[REPLICA].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _driver_ctx(app: web.Application) -> AsyncIterator[None]:
    replica = app[REPLICA]
    replica.open_kv_events()
    replica.driver.start()
    yield
    await replica.driver.stop()
    replica.close_kv_events()


def create_app(replica: Replica) -> web.Application:
    """The aiohttp app serving `replica`; its driver runs while the app is started."""
    app = web.Application(middlewares=[errors, inject_faults], client_max_size=64 * 1024 * 1024)
    app[REPLICA] = replica
    app.on_response_prepare.append(add_replica_header)
    app.cleanup_ctx.append(_driver_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions/render", render_chat_prompt)
    app.router.add_post("/v1/completions/render", render_completion_prompt)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_get("/health", health)
    app.router.add_get("/ping", health)
    app.router.add_post("/ping", health)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/load", load)
    app.router.add_get("/get_load", get_load)
    app.router.add_post("/reset_prefix_cache", reset_prefix_cache)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/kv_event_sources", kv_event_sources)
    add_responses_routes(app)
    add_messages_routes(app)
    add_retention_routes(app)
    add_fault_routes(app, replica.driver)
    return app
