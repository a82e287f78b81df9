"""One generation request handed to the simulated engine, from any of the OpenAI routes that generate.

Contract: `submit(request, replica, body, prompt, max_tokens, request_id)` checks what every generating
route checks (`n` is 1, the model is the replica's), builds the engine request from the body's sampling
fields and vLLM's extension args (priority from the body, else `X-Vllm-Priority`; the retention session is
the `X-Session-ID` header, else body `session_id`, else `vllm_xargs.session_id`; `vllm_xargs.saga_retain_*`)
and returns the engine's stream. Bad values raise `HttpError` 400 (an unknown model 404) before anything is
queued; the caller aborts the request if it stops reading before the stream finished. `whole_output(stream)`
waits for the whole answer: its token ids, its last output and its usage (an engine failure is a 500).
`chat_prompt(replica, messages, tools, tool_choice, xargs)` is what every chat-shaped route (chat
completions, the Responses API, Anthropic's messages) does before that: the rendered prompt's token ids and
the tool call the simulated model will make (None: it answers in text); a bad tool spec is a 400.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from simulator.driver import RequestStream
from simulator.engine import EngineRequest, InvalidRequestError, Usage
from simulator.engine_types import RequestOutput
from simulator.http_common import HttpError
from simulator.openai_api import SamplingFields
from simulator.replica import Replica
from simulator.retention_routes import retain_priority_field
from simulator.tokenizer import render_chat
from simulator.tool_calls import SimulatedToolCall, ToolsError, ToolSpec


def chat_prompt(
    replica: Replica,
    messages: Sequence[Mapping[str, Any]],
    tools: Any,
    tool_choice: Any,
    xargs: Mapping[str, Any] | None,
    *,
    add_generation_prompt: bool = True,
) -> tuple[list[int], SimulatedToolCall | None]:
    try:
        spec = ToolSpec.parse(tools, tool_choice, xargs)
    except ToolsError as e:
        raise HttpError(400, str(e), param=e.param) from None
    prompt = replica.tokenizer.encode(render_chat(messages, add_generation_prompt=add_generation_prompt))
    return prompt, (spec.decide(messages, zlib.crc32(array("q", prompt).tobytes())) if spec else None)


def submit(
    request: web.Request,
    replica: Replica,
    body: SamplingFields,
    prompt: list[int],
    max_tokens: int | None,
    request_id: str,
) -> RequestStream:
    if body.n != 1:
        raise HttpError(400, f"n must be 1 on the simulated replica, got {body.n}.")
    if body.model is not None and body.model != replica.model:
        raise HttpError(404, f"The model `{body.model}` does not exist.")
    engine_req = EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt,
        max_tokens=max_tokens,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        priority=_priority(request, body),
        cache_salt=body.cache_salt,
        session_id=_session_id(request, body),
        retain_ttl_s=_retain_ttl_s(body),
        retain_priority=retain_priority_field(body.vllm_xargs),
    )
    try:
        return replica.driver.submit(engine_req)
    except InvalidRequestError as e:
        raise HttpError(400, str(e)) from None
    except RuntimeError as e:
        raise HttpError(500, str(e)) from None


def _priority(request: web.Request, body: SamplingFields) -> int:
    """vLLM's: the `X-Vllm-Priority` header, which overrides the body's `priority` (its docs), else that."""
    raw = request.headers.get("X-Vllm-Priority")
    if raw is None:
        return body.priority if body.priority is not None else 0
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, f"X-Vllm-Priority must be an integer, got {raw!r}.") from None


def _session_id(request: web.Request, body: SamplingFields) -> str | None:
    xarg = (body.vllm_xargs or {}).get("session_id")
    return request.headers.get("X-Session-ID") or body.session_id or (xarg if isinstance(xarg, str) else None)


def _retain_ttl_s(body: SamplingFields) -> float | None:
    raw = (body.vllm_xargs or {}).get("saga_retain_ttl_s")
    if raw is None:
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
        raise HttpError(400, f"vllm_xargs.saga_retain_ttl_s must be a number, got {raw!r}.") from None


async def whole_output(stream: RequestStream) -> tuple[list[int], RequestOutput, Usage]:
    token_ids: list[int] = []
    try:
        while True:
            out = await stream.get()
            token_ids.extend(out.new_token_ids)
            if out.finish_reason is not None:
                break
    except Exception as e:
        raise HttpError(500, f"engine error: {e!r}") from None
    assert out.usage is not None
    return token_ids, out, out.usage
