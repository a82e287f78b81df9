"""One generation request handed to the simulated engine, from any of the OpenAI routes that generate.

Contract: `submit(request, replica, body, prompt, max_tokens, request_id)` checks what every generating
route checks (the model is the replica's, vLLM's SamplingParams
checks on `temperature`, `top_p`, `max_tokens`, `min_tokens`), clamps `max_tokens` to the room the prompt
leaves in the context (vLLM's `get_max_tokens`: a 2047-token prompt in a 2048-token context generates one
token, finish reason "length"; only a `max_tokens` above the context or a prompt that fills it is refused),
builds the engine request from the body's sampling fields and vLLM's extension args (priority from the
body, else `X-Vllm-Priority`; the retention session is the `X-Session-ID` header, else body `session_id`,
else `vllm_xargs.session_id`; `vllm_xargs.saga_retain_*`) and returns the engine's stream. Bad values raise
`HttpError` 400 (an unknown model 404) before anything is queued; the caller aborts the request if it stops
reading before the stream finished. `submit_choices` is the same for the routes with `n` choices (chat and
completions): vLLM's checks on `n` (1 to 16,384, and 1 at temperature 0), then one engine request per
choice, as vLLM's parallel sampling runs them (`{index}_{request_id}`, the prompt shared through the prefix
cache), each choice's words its own (the plan's seed mixes in the index); `ChoiceOutputs` reads their
outputs as they come, `whole_outputs` waits for every one. `whole_output(stream)` waits for one whole
answer: its token ids, its last output and its usage (an engine failure is a 500). `check_model` is the
404 alone (routes that do not generate check it too); `check_conversation` is vLLM's 400 for an empty one.
`chat_prompt(replica, messages, tools, tool_choice, xargs)` is what every chat-shaped route (chat
completions, the Responses API, Anthropic's messages) does before that: the rendered prompt's token ids and
the tool call the simulated model will make (None: it answers in text); a bad tool spec is a 400.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from aiohttp import web

from simulator.driver import RequestStream
from simulator.engine import EngineRequest, InvalidRequestError, Usage
from simulator.engine_types import RequestOutput, prompt_checksum
from simulator.http_common import HttpError, validation_error
from simulator.openai_api import SamplingFields
from simulator.replica import Replica
from simulator.retention_routes import retain_priority_field
from simulator.tokenizer import render_chat
from simulator.tool_calls import SimulatedToolCall, ToolsError, ToolSpec

# vLLM's VLLM_MAX_N_SEQUENCES default: the most choices one request may ask for
MAX_CHOICES = 16384


def chat_prompt(
    replica: Replica,
    messages: Sequence[Mapping[str, Any]],
    tools: Any,
    tool_choice: Any,
    xargs: Mapping[str, Any] | None,
    *,
    add_generation_prompt: bool = True,
) -> tuple[list[int], SimulatedToolCall | None]:
    prompt, calls = chat_prompt_choices(
        replica, messages, tools, tool_choice, xargs, 1, add_generation_prompt=add_generation_prompt
    )
    return prompt, calls[0]


def chat_prompt_choices(
    replica: Replica,
    messages: Sequence[Mapping[str, Any]],
    tools: Any,
    tool_choice: Any,
    xargs: Mapping[str, Any] | None,
    choices: int,
    *,
    add_generation_prompt: bool = True,
) -> tuple[list[int], list[SimulatedToolCall | None]]:
    """`chat_prompt` for a call of `choices` choices: each choice's tool call its own (its id, and which tool
    and arguments drawn from the choice's seed, as a sampled choice of vLLM's differs)."""
    try:
        spec = ToolSpec.parse(tools, tool_choice, xargs)
    except ToolsError as e:
        raise HttpError(400, str(e), param=e.param) from None
    prompt = replica.tokenizer.encode(render_chat(messages, add_generation_prompt=add_generation_prompt))
    if spec is None:
        return prompt, [None] * choices
    seed = zlib.crc32(array("q", prompt).tobytes())
    return prompt, [spec.decide(messages, _choice_seed(seed, index)) for index in range(choices)]


def check_conversation(messages: Sequence[Mapping[str, Any]]) -> None:
    """vLLM's chat template refuses an empty conversation (after the model check, before any tool check)."""
    if not messages:
        raise HttpError(
            400, "Cannot apply chat template to an empty conversation. Provide at least one message."
        )


def submit(
    request: web.Request,
    replica: Replica,
    body: SamplingFields,
    prompt: list[int],
    max_tokens: int | None,
    request_id: str,
    *,
    max_tokens_param: str = "max_tokens",
) -> RequestStream:
    """`max_tokens` (None: as many as fit) is clamped to the room the prompt leaves in the context, as
    vLLM's `get_max_tokens` clamps it; `max_tokens_param` is the field it came from (for errors). One
    answer: the routes that call this have no `n` (vLLM ignores one sent to the Responses API)."""
    single = msgspec.structs.replace(body, n=1)
    return submit_choices(
        request, replica, single, prompt, max_tokens, request_id, max_tokens_param=max_tokens_param
    )[0]


def submit_choices(
    request: web.Request,
    replica: Replica,
    body: SamplingFields,
    prompt: list[int],
    max_tokens: int | None,
    request_id: str,
    *,
    max_tokens_param: str = "max_tokens",
) -> list[RequestStream]:
    """`submit` for `n` choices (a null `n` is 1, as vLLM reads it): a stream per choice, in index order."""
    choices = 1 if body.n is None else body.n
    _check_choices(choices)
    check_model(replica, body.model)
    max_tokens = _clamp_max_tokens(replica, len(prompt), max_tokens, max_tokens_param)
    _check_sampling(body, max_tokens)
    # (vLLM raises a temperature in (0, 0.01) to 0.01 first: only 0 samples greedily)
    if choices > 1 and body.temperature == 0.0:
        raise HttpError(400, f"n must be 1 when using greedy sampling, got {choices}.")
    checksum = prompt_checksum(prompt) if choices > 1 else None
    requests = [
        EngineRequest(
            request_id=request_id if choices == 1 else f"{index}_{request_id}",
            prompt_token_ids=prompt,
            max_tokens=max_tokens,
            min_tokens=body.min_tokens,
            ignore_eos=body.ignore_eos,
            priority=_priority(request, body),
            cache_salt=body.cache_salt,
            session_id=_session_id(request, body),
            retain_ttl_s=_retain_ttl_s(body),
            retain_priority=retain_priority_field(body.vllm_xargs),
            # choice 0 answers as a call with n = 1 would; each other its own words
            prompt_checksum=None if checksum is None else _choice_seed(checksum, index),
        )
        for index in range(choices)
    ]
    streams: list[RequestStream] = []
    try:
        for engine_req in requests:
            streams.append(replica.driver.submit(engine_req))
    except InvalidRequestError as e:
        abort_unfinished(replica, streams)
        raise HttpError(400, str(e)) from None
    except RuntimeError as e:
        abort_unfinished(replica, streams)
        raise HttpError(500, str(e)) from None
    return streams


def abort_unfinished(replica: Replica, streams: Sequence[RequestStream]) -> None:
    """Abort every choice still running (the client went away, or a later choice was refused)."""
    for stream in streams:
        if not stream.finished:
            replica.driver.abort(stream.request_id)


def _check_choices(choices: int) -> None:
    """vLLM's `_verify_num_sequences` on `n`, in its words."""
    if choices < 1:
        raise HttpError(400, f"n must be at least 1, got {choices}.")
    if choices > MAX_CHOICES:
        raise HttpError(
            400,
            f"n must be at most {MAX_CHOICES}, got {choices}. "
            "To increase this limit, set the VLLM_MAX_N_SEQUENCES environment variable.",
        )


def _choice_seed(checksum: int, index: int) -> int:
    """Choice `index`'s output seed: the prompt's checksum for choice 0, else mixed with the index (a
    32-bit value, as `prompt_checksum` gives)."""
    if index == 0:
        return checksum
    return zlib.crc32(index.to_bytes(4, "little"), checksum) & 0xFFFFFFFF


def check_model(replica: Replica, model: str | None) -> None:
    """vLLM's 404 for a model it does not serve (no model: the served one)."""
    if model is not None and model != replica.model:
        raise HttpError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {replica.model}.",
            param="model",
            err_type="NotFoundError",
        )


def _clamp_max_tokens(replica: Replica, num_prompt: int, max_tokens: int | None, param: str) -> int | None:
    """vLLM refuses a max_tokens beyond the context or a prompt beyond it (an empty prompt is the engine's
    to refuse), and otherwise generates at most what fits after the prompt."""
    max_model_len = replica.engine.profile.max_model_len
    if max_tokens is not None and max_tokens > max_model_len:
        raise validation_error(
            f"{param}={max_tokens} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            param,
            max_tokens,
        )
    if num_prompt > max_model_len:
        raise validation_error(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{num_prompt} input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt.",
            "input_tokens",
            num_prompt,
        )
    if num_prompt == 0:
        return max_tokens
    room = max_model_len - num_prompt
    return room if max_tokens is None else min(room, max_tokens)


def _check_sampling(body: SamplingFields, max_tokens: int | None) -> None:
    """What vLLM's SamplingParams refuses among the fields the simulator decodes, in its order and words."""
    temperature, top_p = body.temperature, body.top_p
    if temperature is not None and (problem := _temperature_problem(temperature)) is not None:
        raise validation_error(
            f"temperature must be {problem}, got {temperature}.", "temperature", temperature
        )
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise validation_error(f"top_p must be in (0, 1], got {top_p}.", "top_p", top_p)
    if max_tokens is not None and max_tokens < 1:
        raise validation_error(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
    if body.min_tokens < 0:
        raise HttpError(400, f"min_tokens must be greater than or equal to 0, got {body.min_tokens}.")
    if max_tokens is not None and body.min_tokens > max_tokens:
        raise HttpError(
            400, f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {body.min_tokens}."
        )


def _temperature_problem(temperature: float) -> str | None:
    if not math.isfinite(temperature):
        return "a finite number"
    if temperature < 0.0:
        return "non-negative"
    return "in [0, 2]" if temperature > 2.0 else None


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


class ChoiceOutputs:
    """The outputs of a request's choices in the order the engine delivered them: `next()` is (index,
    output) until every choice delivered its last (with its finish reason), then None; an engine failure
    raises. One choice is read straight from its stream, several from one queue they all deliver to."""

    def __init__(self, streams: Sequence[RequestStream]) -> None:
        self.streams = streams
        self._left = len(streams)
        self._merged: asyncio.Queue[tuple[int, RequestOutput | BaseException]] | None = None
        if len(streams) > 1:
            merged = self._merged = asyncio.Queue()
            for index, stream in enumerate(streams):
                stream.merge_into(merged, index)

    async def next(self) -> tuple[int, RequestOutput] | None:
        if self._left == 0:
            return None
        if self._merged is None:
            index, out = 0, await self.streams[0].get()
        else:
            index, item = await self._merged.get()
            if isinstance(item, BaseException):
                self.streams[index].finished = True
                raise item
            out = item
            if out.finish_reason is not None:
                self.streams[index].finished = True
        if out.finish_reason is not None:
            self._left -= 1
        return index, out


async def whole_outputs(streams: Sequence[RequestStream]) -> list[tuple[list[int], RequestOutput, Usage]]:
    """`whole_output` for each of a request's choices, in index order (an engine failure is a 500)."""
    if len(streams) == 1:
        return [await whole_output(streams[0])]
    token_ids: list[list[int]] = [[] for _ in streams]
    last: list[RequestOutput | None] = [None] * len(streams)
    outputs = ChoiceOutputs(streams)
    try:
        while (got := await outputs.next()) is not None:
            index, out = got
            token_ids[index].extend(out.new_token_ids)
            last[index] = out
    except Exception as e:
        raise HttpError(500, f"engine error: {e!r}") from None
    whole = []
    for ids, final in zip(token_ids, last, strict=True):
        assert final is not None and final.usage is not None
        whole.append((ids, final, final.usage))
    return whole


def summed_usage(usages: Sequence[Usage]) -> Usage:
    """A request's usage over its choices, as vLLM counts it: the prompt (and its cached tokens) once, the
    completion tokens of every choice."""
    first = usages[0]
    return Usage(first.prompt_tokens, sum(u.completion_tokens for u in usages), first.cached_tokens)


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
