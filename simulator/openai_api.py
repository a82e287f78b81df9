"""Wire types of vLLM's OpenAI-compatible API, as the simulated replica reads and writes them.

Contract: request structs decode only the fields the simulator acts on, or checks as vLLM checks them
(temperature, top_p, seed, stop, logprobs, suffix: a wrong type or value is vLLM's 400); unknown fields are
ignored, as vLLM ignores extras it does not use; every field but the prompt has a default. Response
builders produce vLLM's JSON shapes: `usage.prompt_tokens_details.cached_tokens` is always present (as with
`--enable-prompt-tokens-details`), stream chunks carry no `usage` except the final usage chunk (with
`stream_options.continuous_usage_stats` every chunk carries the usage so far, as vLLM's do), and errors
are `{"error": {"message", "type", "param", "code"}}`. The `/saga/v1/*` KV-retention bodies are at the end
(docs/retention-api.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from simulator.engine import Usage
from simulator.retention import RetentionInfo
from simulator.tool_calls import SimulatedToolCall

# ---- requests -------------------------------------------------------------------------------------------


class StreamOptions(msgspec.Struct):
    # None when absent: vLLM refuses stream_options without a stream only when they are a non-empty object
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class SamplingFields(msgspec.Struct, kw_only=True):
    model: str | None = None
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    priority: int | None = None
    cache_salt: str | None = None
    n: int | None = 1  # (vLLM's: null is 1)
    stream: bool | None = False  # (vLLM: `bool | None`; null is no stream)
    stream_options: StreamOptions | None = None
    # Decoded only to refuse what vLLM refuses (simulator.generation); they do not change the output.
    temperature: float | None = None
    top_p: float | None = None
    request_id: str | None = None
    session_id: str | None = None
    vllm_xargs: dict[str, Any] | None = None  # vLLM's extension args: session_id, saga_retain_*


class OpenAIFields(SamplingFields, kw_only=True):
    """The sampling fields of chat and completions only, typed as vLLM's request models type them."""

    seed: int | None = None
    stop: str | list[str] | None = None


class ChatCompletionRequest(OpenAIFields, kw_only=True):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True
    logprobs: bool | None = False
    top_logprobs: int | None = None
    # Validated by simulator.tool_calls (vLLM's messages), so decoded loosely here.
    tools: Any = None
    tool_choice: Any = None


class CompletionRequest(OpenAIFields, kw_only=True):
    prompt: Any  # str, list[int], or a batch of one of those (validated by the handler)
    n: int = 1  # (vLLM's completions take no null here, its chat does)
    suffix: str | None = None  # refused: vLLM takes it only for fill-in-the-middle models


class TokenizeRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    tokens: list[int]


# ---- responses ------------------------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int


class UsageInfo(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int
    prompt_tokens_details: PromptTokensDetails

    @classmethod
    def of(cls, usage: Usage) -> UsageInfo:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            completion_tokens=usage.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
        )


class ChunkUsage(msgspec.Struct):
    """The usage so far that vLLM puts in every stream chunk with `continuous_usage_stats` (no details)."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    reasoning_content: None = None


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessage
    logprobs: None
    finish_reason: str | None
    stop_reason: None = None


class ChatCompletionResponse(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # simulator.tool_calls.ToolCallStream's entries


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | ChunkUsage | None = None


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None = None
    stop_reason: None = None


class CompletionResponse(msgspec.Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | ChunkUsage | None = None


class ErrorInfo(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(msgspec.Struct):
    error: ErrorInfo


_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    500: "InternalServerError",
}


def error_type(status: int, err_type: str | None = None) -> str:
    return err_type or _ERROR_TYPES.get(status, "Error")


def error_body(status: int, message: str, param: str | None = None, err_type: str | None = None) -> bytes:
    """vLLM's JSON error body for an HTTP status (its type named after the status unless `err_type`)."""
    info = ErrorInfo(message=message, type=error_type(status, err_type), param=param, code=status)
    return msgspec.json.encode(ErrorResponse(error=info))


class ResponseFormat:
    """Builds one API's (chat or completions) response bodies for one request."""

    def __init__(self, *, chat: bool, request_id: str, created: int, model: str) -> None:
        self.chat = chat
        self.request_id = request_id
        self.created = created
        self.model = model
        self._prompt_tokens: int | None = None  # set: every chunk carries the usage so far
        self._completion_tokens = 0

    def count_usage(self, prompt_tokens: int) -> None:
        """Put the usage so far in every chunk from now on (vLLM's `continuous_usage_stats`)."""
        self._prompt_tokens = prompt_tokens

    def add_completion_tokens(self, n: int) -> None:
        self._completion_tokens += n

    def full(
        self,
        answers: Sequence[tuple[str, str | None]],
        usage: Usage,
        tool_calls: Sequence[SimulatedToolCall | None] = (),
    ) -> bytes:
        """The whole answer: each choice's text and finish reason, in index order; with a choice's tool call
        (chat only, `tool_calls` in index order) its output is that call, not text."""
        if self.chat:
            choices = []
            for index, (text, finish_reason) in enumerate(answers):
                message = ChatMessage(role="assistant", content=text)
                tool_call = tool_calls[index] if tool_calls else None
                if tool_call is not None:
                    call = ToolCall(tool_call.id, FunctionCall(tool_call.name, tool_call.arguments))
                    message = ChatMessage(role="assistant", content=tool_call.content, tool_calls=[call])
                    finish_reason = tool_call.finish_reason
                choices.append(
                    ChatChoice(index=index, message=message, logprobs=None, finish_reason=finish_reason)
                )
            return msgspec.json.encode(
                ChatCompletionResponse(
                    id=self.request_id,
                    object="chat.completion",
                    created=self.created,
                    model=self.model,
                    choices=choices,
                    usage=UsageInfo.of(usage),
                )
            )
        return msgspec.json.encode(
            CompletionResponse(
                id=self.request_id,
                object="text_completion",
                created=self.created,
                model=self.model,
                choices=[
                    CompletionChoice(index=index, text=text, finish_reason=finish_reason)
                    for index, (text, finish_reason) in enumerate(answers)
                ],
                usage=UsageInfo.of(usage),
            )
        )

    def role_chunk(self, index: int = 0) -> bytes | None:
        """A choice's first chunk of a chat stream (the assistant role); completions have none."""
        if not self.chat:
            return None
        return self._event([ChatChunkChoice(index=index, delta=Delta(role="assistant", content=""))])

    def chunk(self, text: str, finish_reason: str | None, index: int = 0) -> bytes:
        if self.chat:
            delta = Delta(content=text) if text or finish_reason is None else Delta()
            return self._event([ChatChunkChoice(index=index, delta=delta, finish_reason=finish_reason)])
        return self._event([CompletionChoice(index=index, text=text, finish_reason=finish_reason)])

    def tool_call_chunk(
        self, tool_calls: list[dict[str, Any]], finish_reason: str | None, index: int = 0
    ) -> bytes:
        delta = Delta(tool_calls=tool_calls) if tool_calls else Delta()
        return self._event([ChatChunkChoice(index=index, delta=delta, finish_reason=finish_reason)])

    def usage_chunk(self, usage: Usage) -> bytes:
        return self._event([], UsageInfo.of(usage))

    def _event(self, choices: list[Any], usage: UsageInfo | ChunkUsage | None = None) -> bytes:
        body: ChatCompletionChunk | CompletionResponse
        if usage is None and self._prompt_tokens is not None:
            total = self._prompt_tokens + self._completion_tokens
            usage = ChunkUsage(self._prompt_tokens, total, self._completion_tokens)
        if self.chat:
            body = ChatCompletionChunk(
                id=self.request_id,
                object="chat.completion.chunk",
                created=self.created,
                model=self.model,
                choices=choices,
                usage=usage,
            )
        else:
            body = CompletionResponse(
                id=self.request_id,
                object="text_completion",
                created=self.created,
                model=self.model,
                choices=choices,
                usage=usage,
            )
        return b"data: " + msgspec.json.encode(body) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


# ---- KV retention (docs/retention-api.md) ---------------------------------------------------------------


class RetainRequest(msgspec.Struct, kw_only=True):
    session_id: str
    ttl_s: float
    priority: int | None = None  # None keeps the retention's priority


class ReleaseRequest(msgspec.Struct, kw_only=True):
    session_id: str


class ReleaseResponse(msgspec.Struct):
    session_id: str
    released: bool
    num_blocks: int


class RetainedResponse(msgspec.Struct):
    """`GET /saga/v1/retained`: every retention, oldest first, and the caps (simulated seconds)."""

    now: float
    num_blocks: int  # distinct retained blocks
    max_blocks: int
    max_ttl_s: float
    block_size: int
    sessions: list[RetentionInfo]
    num_references: int = 0  # the retentions' blocks summed (a block shared by two counts twice)
    max_references: int = 0
