"""The Anthropic Messages API (`POST /v1/messages`) of the simulated replica, as vLLM serves it to clients
such as Claude Code.

Contract:
- The conversation is `system` (a string or text blocks) then `messages` (`role` user or assistant, `content`
  a string or blocks: `text`, `tool_use`, `tool_result`), rendered and generated as the same chat would be, so
  its prefix cache behaves as chat's. `max_tokens` is required, as Anthropic's API has it.
- Whole answers: `{"id", "type": "message", "role": "assistant", "content": [blocks], "model", "stop_reason",
  "stop_sequence", "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
  "cache_read_input_tokens"}}`; `stop_reason` is `end_turn`, `max_tokens` or `tool_use`.
- Streams (vLLM's event sequence): `message_start` (usage with the input tokens), `content_block_start`,
  `content_block_delta` (`text_delta`, or `input_json_delta` for a tool call), `content_block_stop`,
  `message_delta` (`stop_reason` and the whole usage), `message_stop`.
- Tools (`{"name", "description", "input_schema"}`) and `tool_choice` (`auto`, `any`, `tool` with a `name`,
  `none`) answer with a simulated `tool_use` block (simulator.tool_calls decides, as for chat).
- `POST /v1/messages/count_tokens` answers `{"input_tokens": N}` for the prompt the same call would run.
- Bad requests are 400s before anything is generated: in OpenAI's error shape where vLLM's request model
  refuses them (a missing `model` or `max_tokens`, malformed messages, system, tools), in Anthropic's
  (`{"type": "error", "error": {"type", "message"}}`) for what its handler refuses (an unknown model, 404; an
  empty conversation; the sampling and context-length checks).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from aiohttp import web

from simulator.driver import RequestStream
from simulator.engine import Usage
from simulator.generation import chat_prompt, check_conversation, check_model, submit, whole_output
from simulator.http_common import REPLICA, HttpError, decode
from simulator.openai_api import SamplingFields, error_type
from simulator.replica import Replica
from simulator.tokenizer import render_chat
from simulator.tool_calls import SimulatedToolCall, ToolCallStream

Message = dict[str, Any]


class MessagesRequest(SamplingFields, kw_only=True):
    model: str  # required, as in vLLM's AnthropicMessagesRequest
    messages: list[Any]
    system: Any = None  # a string or a list of text blocks
    tools: Any = None
    tool_choice: Any = None


class CountTokensRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    messages: list[Any]
    system: Any = None


def add_messages_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages_route)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)


async def count_tokens(request: web.Request) -> web.Response:
    """`{"input_tokens": N}`: the prompt `/v1/messages` would run for the same conversation."""
    replica = request.app[REPLICA]
    body = await decode(request, CountTokensRequest)
    chat = _system(body.system) + _chat_messages(body.messages)
    tokens = replica.tokenizer.encode(render_chat(chat))
    return web.Response(
        body=msgspec.json.encode({"input_tokens": len(tokens)}), content_type="application/json"
    )


async def messages_route(request: web.Request) -> web.StreamResponse:
    replica = request.app[REPLICA]
    body = await decode(request, MessagesRequest)
    if body.max_tokens is None:
        raise HttpError(400, "max_tokens is required.", param="max_tokens")
    chat = _system(body.system) + _chat_messages(body.messages)
    tools, tool_choice = _chat_tools(body.tools), _chat_tool_choice(body.tool_choice)
    message_id = f"msg_{uuid.uuid4().hex}"
    try:  # past the request model's checks vLLM answers in Anthropic's error shape
        check_model(replica, body.model)
        check_conversation(chat)
        prompt, call = chat_prompt(replica, chat, tools, tool_choice, body.vllm_xargs)
        stream = submit(request, replica, body, prompt, body.max_tokens, message_id)
    except HttpError as e:
        return _error(e)
    try:
        if body.stream:
            return await _stream(request, replica, stream, message_id, call, len(prompt))
        return web.Response(
            body=msgspec.json.encode(await _whole(replica, stream, message_id, call)),
            content_type="application/json",
        )
    finally:
        if not stream.finished:
            replica.driver.abort(message_id)


def _error(e: HttpError) -> web.Response:
    """vLLM's Anthropic error body: `{"type": "error", "error": {"type", "message"}}` (no param, no code)."""
    error = {"type": error_type(e.status, e.err_type), "message": e.message}
    return web.Response(
        body=msgspec.json.encode({"type": "error", "error": error}),
        status=e.status,
        content_type="application/json",
    )


# ---- the conversation, as chat messages -----------------------------------------------------------------


def _system(system: Any) -> list[Message]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list) and all(isinstance(b, dict) for b in system):
        return [{"role": "system", "content": "".join(str(b.get("text", "")) for b in system)}]
    raise HttpError(400, "system must be a string or a list of text blocks.", param="system")


def _chat_messages(messages: list[Any]) -> list[Message]:
    out: list[Message] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise HttpError(400, f"messages[{i}] needs a role of user or assistant.", param="messages")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise HttpError(
                400, f"messages[{i}].content must be a string or a list of blocks.", param="messages"
            )
        text, calls = [], []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "tool_use":
                arguments = json.dumps(block.get("input", {}))
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
            elif kind == "tool_result":
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id"),
                        "content": block.get("content"),
                    }
                )
            else:
                raise HttpError(
                    400,
                    f"messages[{i}] has a block of type {kind!r} the simulated replica does not take.",
                    param="messages",
                )
        if text or calls:
            chat: Message = {"role": message["role"], "content": "".join(text)}
            if calls:
                chat["tool_calls"] = calls
            out.append(chat)
    return out


def _chat_tools(tools: Any) -> Any:
    if not isinstance(tools, list):
        return tools
    return [
        {
            "type": "function",
            "function": {
                "name": t.get("name"),
                "description": t.get("description", ""),
                "parameters": t.get("input_schema", {}),
            },
        }
        if isinstance(t, dict)
        else t
        for t in tools
    ]


def _chat_tool_choice(choice: Any) -> Any:
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise HttpError(
        400, f"tool_choice.type must be auto, any, tool or none, got {kind!r}.", param="tool_choice"
    )


# ---- the answer -----------------------------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _stop_reason(finish_reason: str | None, call: SimulatedToolCall | None) -> str:
    if call is not None:
        return "tool_use"
    return "max_tokens" if finish_reason == "length" else "end_turn"


def _tool_block(call: SimulatedToolCall, whole: bool) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": json.loads(call.arguments) if whole else {},
    }


async def _whole(
    replica: Replica, stream: RequestStream, message_id: str, call: SimulatedToolCall | None
) -> dict[str, Any]:
    token_ids, out, usage = await whole_output(stream)
    if call is not None:
        content: list[dict[str, Any]] = [_tool_block(call, whole=True)]
    else:
        content = [{"type": "text", "text": replica.tokenizer.decode(token_ids)}]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": replica.model,
        "stop_reason": _stop_reason(out.finish_reason, call),
        "stop_sequence": None,
        "usage": _usage(usage),
    }


async def _stream(
    request: web.Request,
    replica: Replica,
    stream: RequestStream,
    message_id: str,
    call: SimulatedToolCall | None,
    input_tokens: int,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )

    async def send(kind: str, **fields: Any) -> None:
        data = msgspec.json.encode({"type": kind, **fields})
        await response.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    token_text = replica.tokenizer.token_text
    calls = ToolCallStream(call) if call is not None else None
    try:
        await response.prepare(request)
        started = False
        while True:
            try:
                out = await stream.get()
            except Exception as e:
                await send("error", error={"type": "api_error", "message": f"engine error: {e!r}"})
                return response
            if not started:  # the input tokens are known once the request is scheduled
                started = True
                message: dict[str, Any] = {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": replica.model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 0},
                }
                await send("message_start", message=message)
                block = _tool_block(call, whole=False) if call is not None else {"type": "text", "text": ""}
                await send("content_block_start", content_block=block, index=0)
            finished = out.finish_reason is not None
            if calls is not None:
                for delta in calls.advance(len(out.new_token_ids), finished):
                    piece = delta.get("function", {}).get("arguments")
                    if piece:
                        await send(
                            "content_block_delta",
                            delta={"type": "input_json_delta", "partial_json": piece},
                            index=0,
                        )
            else:
                text = "".join(token_text(t) for t in out.new_token_ids)
                if text:
                    await send("content_block_delta", delta={"type": "text_delta", "text": text}, index=0)
            if finished:
                break
        assert out.usage is not None
        await send("content_block_stop", index=0)
        await send(
            "message_delta",
            delta={"stop_reason": _stop_reason(out.finish_reason, call), "stop_sequence": None},
            usage=_usage(out.usage),
        )
        await send("message_stop")
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; the caller aborts the request
    return response
