"""The Responses API (`POST /v1/responses`) of the simulated replica, as vLLM serves it with its store on.

Contract:
- A request's conversation is its `instructions` (a system message), then the stored conversation of
  `previous_response_id` (that call's messages, without its instructions, and its output), then `input`: a
  string (one user message) or a list of items: messages (`role`, and `content` as a string or a list of
  `input_text` / `output_text` parts), `function_call` and `function_call_output` items. It is rendered and
  generated as the same chat would be, so a chain of responses reuses its prefix cache as a growing chat does.
- The store is this replica's alone, as vLLM's in-memory response store is (with
  `VLLM_ENABLE_RESPONSES_API_STORE=1`): a `previous_response_id` this replica did not answer, or has
  dropped, is vLLM's 404 `Response with id '...' not found.` (param `response_id`). So a router must send a
  continuation back to the replica that answered it. Answers with `store: true` (the default) are kept, the
  latest `STORE_LIMIT` of them. `GET /v1/responses/{id}` retrieves one; `POST /v1/responses/{id}/cancel`
  answers vLLM's 400 for a response that was not run in the background (none is, here).
- Function `tools` (`{"type": "function", "name", "parameters"}`) and `tool_choice` ("none", "auto",
  "required", `{"type": "function", "name"}`) answer with a simulated `function_call` output item
  (simulator.tool_calls decides, as for chat); bad ones answer 400.
- `max_output_tokens` bounds the answer; stopping there is `status: "incomplete"` with
  `incomplete_details.reason: "max_output_tokens"`. Usage: `input_tokens`,
  `input_tokens_details.cached_tokens`, `output_tokens`, `output_tokens_details.reasoning_tokens`,
  `total_tokens`.
- `stream: true` sends named SSE events (`event: <type>` and `data: {"type", "sequence_number", ...}`):
  `response.created`, `response.in_progress`, `response.output_item.added`, then text
  (`response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
  `response.content_part.done`) or a call (`response.function_call_arguments.delta`...,
  `response.function_call_arguments.done`), `response.output_item.done` and `response.completed` with the
  whole response and its usage. No `[DONE]`: the Responses API has none.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from simulator.driver import RequestStream
from simulator.engine import Usage
from simulator.generation import chat_prompt, submit, whole_output
from simulator.http_common import REPLICA, HttpError, decode, json_response
from simulator.openai_api import SamplingFields
from simulator.replica import Replica
from simulator.tool_calls import SimulatedToolCall, ToolCallStream

STORE_LIMIT = 10_000  # stored responses per replica (oldest dropped)
Message = dict[str, Any]


class ResponsesRequest(SamplingFields, kw_only=True):
    input: Any = None  # a string or a list of items (validated by `_input_messages`)
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    store: bool = True
    tools: Any = None
    tool_choice: Any = None


class StoredResponse(msgspec.Struct):
    messages: list[Message]  # the conversation it answered, without instructions, then its output
    body: dict[str, Any]  # the response object, as answered


class ResponseStore:
    """One replica's stored responses, the latest `limit` of them."""

    def __init__(self, limit: int = STORE_LIMIT) -> None:
        self.limit = limit
        self._responses: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, response_id: str) -> StoredResponse | None:
        return self._responses.get(response_id)

    def put(self, response_id: str, stored: StoredResponse) -> None:
        self._responses[response_id] = stored
        while len(self._responses) > self.limit:
            self._responses.popitem(last=False)


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


def add_responses_routes(app: web.Application) -> None:
    app[RESPONSE_STORE] = ResponseStore()
    app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/responses/{response_id}", retrieve)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel)


async def retrieve(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return json_response(msgspec.json.encode(stored.body))


async def cancel(request: web.Request) -> web.Response:
    """Only background responses can be cancelled (vLLM); the simulated replica answers every call at once."""
    response_id = request.match_info["response_id"]
    if request.app[RESPONSE_STORE].get(response_id) is None:
        raise _not_found(response_id)
    raise HttpError(400, "Cannot cancel a synchronous response.", param="response_id")


def _not_found(response_id: str) -> HttpError:
    return HttpError(
        404,
        f"Response with id '{response_id}' not found.",
        param="response_id",
        err_type="invalid_request_error",
    )


async def responses(request: web.Request) -> web.StreamResponse:
    replica = request.app[REPLICA]
    store = request.app[RESPONSE_STORE]
    body = await decode(request, ResponsesRequest)
    history: list[Message] = []
    if body.previous_response_id is not None:
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise _not_found(body.previous_response_id)
        history = previous.messages
    conversation = history + _input_messages(body.input)
    if body.instructions is not None:
        messages = [{"role": "system", "content": body.instructions}, *conversation]
    else:
        messages = conversation
    prompt, tool_call = chat_prompt(
        replica, messages, _chat_tools(body.tools), _chat_tool_choice(body.tool_choice), body.vllm_xargs
    )
    answer = _Answer(body, replica, f"resp_{uuid.uuid4().hex}", tool_call)
    if body.store:  # stored as it finishes, before the client hears of it: its next call may name it at once
        answer.on_finish = lambda done: store.put(
            answer.id, StoredResponse(conversation + answer.output_messages(), done)
        )
    limit = body.max_output_tokens
    stream = submit(request, replica, body, prompt, limit, answer.id, max_tokens_param="max_output_tokens")
    try:
        if body.stream:
            return await _stream(request, answer, stream)
        return web.Response(
            body=msgspec.json.encode(await _whole(answer, stream)), content_type="application/json"
        )
    finally:
        if not stream.finished:
            replica.driver.abort(answer.id)


# ---- the conversation ----------------------------------------------------------------------------------


def _input_messages(raw: Any) -> list[Message]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise HttpError(400, "input must be a string or a list of input items.", param="input")
    out: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise HttpError(400, f"input[{i}] must be an object.", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise HttpError(
                    400, f"input[{i}].role must be user, assistant, system or developer.", param="input"
                )
            out.append({"role": role, "content": item.get("content")})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        else:
            raise HttpError(
                400, f"input[{i}].type {kind!r} is not supported by the simulated replica.", param="input"
            )
    return out


def _chat_tools(tools: Any) -> Any:
    """Responses-API function tools in chat's shape, for simulator.tool_calls (other shapes pass as they are,
    for it to refuse)."""
    if not isinstance(tools, list):
        return tools
    return [
        {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
        if isinstance(tool, dict) and tool.get("type") == "function" and "function" not in tool
        else tool
        for tool in tools
    ]


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and "function" not in choice:
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


# ---- the answer ---------------------------------------------------------------------------------------


class _Answer:
    """One response object as it is built: its output item, then its status and usage."""

    def __init__(
        self, body: ResponsesRequest, replica: Replica, response_id: str, call: SimulatedToolCall | None
    ) -> None:
        self.body, self.replica, self.id, self.call = body, replica, response_id, call
        self.created_at = int(time.time())
        self.item_id = f"fc_{uuid.uuid4().hex}" if call is not None else f"msg_{uuid.uuid4().hex}"
        self.text = ""
        self.on_finish: Callable[[dict[str, Any]], None] | None = None  # given the finished response object

    def item(self, finished: bool) -> dict[str, Any]:
        status = "completed" if finished else "in_progress"
        if self.call is not None:
            arguments = self.call.arguments if finished else ""
            return {
                "type": "function_call",
                "id": self.item_id,
                "call_id": self.call.id,
                "name": self.call.name,
                "arguments": arguments,
                "status": status,
            }
        content = [self.text_part()] if finished else []
        return {
            "type": "message",
            "id": self.item_id,
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def text_part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": self.text, "annotations": []}

    def output_messages(self) -> list[Message]:
        if self.call is not None:
            call = {
                "id": self.call.id,
                "type": "function",
                "function": {"name": self.call.name, "arguments": self.call.arguments},
            }
            return [{"role": "assistant", "content": None, "tool_calls": [call]}]
        return [{"role": "assistant", "content": self.text}]

    def response(self, usage: Usage | None = None, finish_reason: str | None = None) -> dict[str, Any]:
        body = self.body
        finished = usage is not None
        status = "in_progress"
        if finished:
            status = "incomplete" if finish_reason == "length" and self.call is None else "completed"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.replica.model,
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions,
            "previous_response_id": body.previous_response_id,
            "max_output_tokens": body.max_output_tokens,
            "output": [self.item(True)] if finished else [],
            "parallel_tool_calls": True,
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": body.tools or [],
            "store": body.store,
            "usage": _usage(usage) if usage is not None else None,
        }

    def finish(self, usage: Usage, finish_reason: str | None) -> dict[str, Any]:
        done = self.response(usage, finish_reason)
        if self.on_finish is not None:
            self.on_finish(done)
        return done


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


async def _whole(answer: _Answer, stream: RequestStream) -> dict[str, Any]:
    token_ids, out, usage = await whole_output(stream)
    answer.text = answer.replica.tokenizer.decode(token_ids)
    return answer.finish(usage, out.finish_reason)


async def _stream(request: web.Request, answer: _Answer, stream: RequestStream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    events = _Events(response)
    token_text = answer.replica.tokenizer.token_text
    calls = ToolCallStream(answer.call) if answer.call is not None else None
    item_ref = {"output_index": 0, "item_id": answer.item_id}
    try:
        await response.prepare(request)
        await events.send("response.created", response=answer.response())
        await events.send("response.in_progress", response=answer.response())
        await events.send("response.output_item.added", output_index=0, item=answer.item(False))
        if calls is None:
            await events.send(
                "response.content_part.added",
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
                **item_ref,
            )
        while True:
            try:
                out = await stream.get()
            except Exception as e:
                await events.send("error", code="engine_error", message=f"engine error: {e!r}", param=None)
                return response
            finished = out.finish_reason is not None
            if calls is not None:
                for delta in calls.advance(len(out.new_token_ids), finished):
                    piece = delta.get("function", {}).get("arguments")
                    if piece:
                        await events.send("response.function_call_arguments.delta", delta=piece, **item_ref)
            else:
                text = "".join(token_text(t) for t in out.new_token_ids)
                if text:
                    answer.text += text
                    await events.send(
                        "response.output_text.delta", content_index=0, delta=text, logprobs=[], **item_ref
                    )
            if finished:
                break
        if answer.call is not None:
            await events.send(
                "response.function_call_arguments.done", arguments=answer.call.arguments, **item_ref
            )
        else:
            await events.send(
                "response.output_text.done", content_index=0, text=answer.text, logprobs=[], **item_ref
            )
            await events.send(
                "response.content_part.done", content_index=0, part=answer.text_part(), **item_ref
            )
        await events.send("response.output_item.done", output_index=0, item=answer.item(True))
        assert out.usage is not None
        await events.send("response.completed", response=answer.finish(out.usage, out.finish_reason))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; the caller aborts the request
    return response


class _Events:
    """Named SSE events with the Responses API's running `sequence_number`."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.sequence = 0

    async def send(self, kind: str, **fields: Any) -> None:
        data = msgspec.json.encode({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1
        await self.response.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")
