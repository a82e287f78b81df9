"""The data path's msgspec Structs, in a module of their own: the modules that use them are compiled with
mypyc, which drops a Struct's class keywords (docs/development.md), so the Structs stay pure Python here.

The Structs a body or an answer is decoded into are `gc=False`: what JSON decodes to holds no cycle, nothing
here puts one in, and a stream's events are a few Structs each (untracked, the twelve events of the bench's
stream decode in 2.63 µs instead of 3.10, docs/results/overhead-s36/scan_passes.py, and the cyclic GC has
that much less to walk)."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.scheduler.types import Usage


class Relayed(msgspec.Struct):
    """What a relay did: the answer's status and what it reported, and how it ended."""

    status: int  # the status the client got: the replica's, or 502 for an answer over `max_answer_bytes`
    usage: Usage | None = None
    upstream_error: str | None = None  # the replica failed or stalled mid-answer
    client_gone: bool = False  # the client hung up before the answer ended
    first_byte: bool = False  # some of the answer reached the client
    answer: Answer | None = None  # the assistant message, when asked for (`collect_answer`)
    response_id: str | None = None  # a Responses API answer's id (a later call may continue from it)
    too_large: bool = False  # a whole answer over `max_answer_bytes`: dropped, the client got a 502
    # `upstream_error` on a whole answer, none of it sent: counted toward the replica's breaker as a 5xx is
    # (only once another replica answers the call), not at once as a stream's failure is
    whole_cut: bool = False


# proxy/identity.py: the only body fields the proxy decodes, and who a call is


class StreamOptions(msgspec.Struct, gc=False):
    include_usage: bool | str | float | None = None  # a bool once decoded (proxy/lax_flags.py)


class CallFields(msgspec.Struct, gc=False):
    """The only body fields the proxy decodes; the original bytes are forwarded unchanged. Decoded as
    loosely as vLLM's (pydantic's lax mode) reads them, so the proxy refuses no body vLLM serves: `"stream":
    "true"`, `1`, `"yes"` or `1.0`, `"include_usage": 1` are booleans (proxy/identity.py's decoder and
    proxy/lax_flags.py), `"model": null` names
    the replica's default model, and a `prompt_cache_key` that is no string, of any shape, names no session
    (vLLM's chat and completions ignore the field)."""

    model: str | None = ""
    # null is OpenAI's (and vLLM's) default: not streamed; a bool or None once decoded (proxy/lax_flags.py)
    stream: bool | str | float | None = False
    # UNSET when the body has no such member (None: it is null), so the proxy can add it without decoding
    # the body again (proxy/directives.py)
    stream_options: StreamOptions | msgspec.UnsetType | None = msgspec.UNSET
    session_id: str | None = None
    prompt_cache_key: msgspec.Raw = msgspec.Raw(b"")  # read as a session id only when it is a string
    vllm_xargs: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    messages: msgspec.Raw = msgspec.Raw(b"")  # left undecoded unless a session must be inferred
    prompt: msgspec.Raw = msgspec.Raw(b"")  # /v1/completions; only its bytes are looked at
    input: msgspec.Raw = msgspec.Raw(b"")  # /v1/responses
    previous_response_id: str | None = None  # /v1/responses: continues that response's session
    tools: msgspec.Raw = msgspec.Raw(b"")  # only hashed, to name the agent type without X-Agent-Type
    instructions: msgspec.Raw = msgspec.Raw(b"")  # /v1/responses' system prompt; likewise
    # /v1/messages' (Anthropic) system prompt: hashed likewise, and counted in the prompt
    system: msgspec.Raw = msgspec.Raw(b"")
    # read only with client API keys, whose tenants' calls are salted (proxy/tenant_salt.py)
    cache_salt: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    # the answer's cap in tokens (chat and completions, chat's newer name, the Responses API's): read only
    # where it is a plain integer (`output_cap`), so no value the replica judges is refused here
    max_tokens: msgspec.Raw = msgspec.Raw(b"")
    max_completion_tokens: msgspec.Raw = msgspec.Raw(b"")
    max_output_tokens: msgspec.Raw = msgspec.Raw(b"")
    n: msgspec.Raw = msgspec.Raw(b"")  # choices asked for (chat, completions): read as the caps are


class Identity(msgspec.Struct, frozen=True):
    session_id: str
    tenant_id: str
    agent_type: str
    session_inferred: bool
    # The chain hash of the call's whole conversation, when its session was inferred from it: the shell
    # remembers it with the call's answer so that the next call of the conversation finds the session.
    prompt_chain: bytes | None = None
    # The session id the client is told (X-Session-ID), when it is not `session_id`: a client API key's
    # tenant has sessions of its own, so the proxy's id for a named session is "<tenant>:<the client's id>".
    shown_session_id: str | None = None
    # When the call's conversation goes on from an earlier answer of its inferred session (prefix chaining
    # found it), the tag its answer is filed under for a conversation starting again from it to quote
    # (proxy/quoted_answers.py `quote_tag`); None otherwise: one-shot traffic files nothing, so its calls look
    # for no quote.
    quote_tag: str | None = None


# proxy/session_chain.py: a conversation's messages and a call's answer


class MessageFunction(msgspec.Struct, gc=False):
    name: str = ""
    arguments: str = ""


class MessageToolCall(msgspec.Struct, gc=False):
    function: MessageFunction | None = None


class ChatMessage(msgspec.Struct, gc=False):
    role: str = ""
    # the content's JSON as sent: decoded (to its text) only where it must match the proxy's own reading of
    # an answer, in assistant messages (proxy/session_chain.py `chain_of`)
    content: msgspec.Raw = msgspec.Raw(b"null")
    tool_calls: list[MessageToolCall] | None = None


class Answer(msgspec.Struct, frozen=True):
    """The assistant message a call produced: its text and its tool calls (name, arguments). A call asking
    for `n` choices produced one message each: this is choice 0's, `alternatives` the others' (in index
    order, up to `MAX_ALTERNATIVES`), any of which the client may go on with."""

    text: str = ""
    tool_calls: tuple[tuple[str, str], ...] = ()
    alternatives: tuple[Answer, ...] = ()


# The most choices past the first whose messages are kept for chaining (a best-of-n agent samples a few)
MAX_ALTERNATIVES = 7


# proxy/sse_scan.py: what is read out of an answer (whole, or one stream event)


class TokenDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = 0


class UsageFields(msgspec.Struct, gc=False):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    # The Responses API names them differently.
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    prompt_tokens_details: TokenDetails | None = None
    input_tokens_details: TokenDetails | None = None
    cache_read_input_tokens: int | None = 0  # /v1/messages (Anthropic): the prefix-cache hit


class DeltaFunction(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(msgspec.Struct, gc=False):
    index: int = 0
    function: DeltaFunction | None = None


class AnswerMessage(msgspec.Struct, gc=False):
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class AnswerChoice(msgspec.Struct, gc=False):
    index: int = 0  # which of a call's `n` choices
    finish_reason: str | None = None
    message: AnswerMessage | None = None
    delta: AnswerMessage | None = None  # streamed chunks


class OutputPart(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None  # an `output_text` part's


class OutputItem(msgspec.Struct, gc=False):
    type: str = ""
    name: str | None = None
    arguments: str | None = None  # a `function_call` item's
    content: list[OutputPart] | None = None  # a `message` item's


class InputItem(msgspec.Struct, gc=False):
    """A Responses API `input` item, as proxy/session_chain.py `response_conversation` reads it: a message
    (`role`, `content`), a `function_call` (`name`, `arguments`) or its `function_call_output`."""

    type: str = ""
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"null")
    name: str = ""
    arguments: str = ""
    output: msgspec.Raw = msgspec.Raw(b"null")


class ContentBlock(msgspec.Struct, gc=False):
    type: str = ""
    name: str | None = None
    text: str | None = None  # a text block's


class BlockDelta(msgspec.Struct, gc=False):
    """/v1/messages stream: a `content_block_delta` event's delta (`text_delta` carries text)."""

    type: str = ""
    text: str | None = None


class AnswerFields(msgspec.Struct, gc=False):
    usage: UsageFields | None = None
    choices: list[AnswerChoice] | None = None
    output: list[OutputItem] | None = None  # Responses API
    status: str | None = None  # Responses API
    content: list[ContentBlock] | str | None = None  # /v1/messages (Anthropic): text and tool_use blocks
    stop_reason: Any = None  # /v1/messages: end_turn, tool_use, max_tokens, ...
    # /v1/messages stream events' delta; a Responses API stream event's `delta` is a string (not collected)
    delta: BlockDelta | str | None = None
    # a Responses API stream event's response: the final one (`response.completed`, `.incomplete`, `.failed`)
    # is the whole answer, its usage with it
    response: AnswerFields | None = None
    # a /v1/messages stream's `message_start` event's message: its usage holds the input's counts, which
    # the final `message_delta` may leave out (Anthropic's API gives its output's there alone)
    message: AnswerFields | None = None


class NumberedEvent(msgspec.Struct, gc=False):
    """A Responses API stream event's number (proxy/sse_scan.py `sequence_number_after`). Structs live here,
    outside the compiled modules, where msgspec reads their annotations."""

    sequence_number: int | None = None


class SeenMessages(msgspec.Struct):
    """A chat call's messages as the worker that read it saw them (proxy/identity.py `ownership_key`), so
    that serving it decodes and hashes them once."""

    messages: list[ChatMessage]
    chain: list[bytes]  # proxy/session_chain.py `chain_of`: a hash per message
    assistants: list[int]  # the positions of its assistant messages
    seed: bytes = b""  # where its chain starts (proxy/session_chain.py `tenant_seed`)
    # a conversation's first call served by a worker that does not own its opening (proxy/fast_server.py):
    # a session id of its own, as the opening's id may be another worker's live session
    opening_elsewhere: bool = False
    # the digests of the lines it may quote a compacting agent's summary by, when the worker that read it
    # looked them up (proxy/quoted_answers.py `quoted_lines`): hashed once
    quoted: list[int] | None = None
    # and the tag it looked them up under (proxy/quoted_answers.py `quote_tag`): computed once
    quote_tag: str | None = None
