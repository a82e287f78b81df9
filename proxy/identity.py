"""Who a call belongs to: its session, tenant and agent type, from the conventions clients already use.

Pure functions over headers and the few body fields the proxy decodes. Session precedence: the headers
(`X-Session-ID`, `session-id`, `x-claude-code-session-id`), then the body (`session_id`,
`vllm_xargs.session_id`, the Responses API's `prompt_cache_key`). A chat call that names no session is given
one inferred from the start of its conversation (system and first user message), which every later call of
the same conversation repeats; any other call is a session of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

SESSION_HEADERS = ("x-session-id", "session-id", "x-claude-code-session-id")
TENANT_HEADERS = ("x-tenant-id", "x-gateway-inference-fairness-id")
API_KEY = "api-key"  # a tenant source: the hash of the Authorization header
AGENT_TYPE_HEADERS = ("x-agent-type",)


class _Message(msgspec.Struct):
    role: str = ""
    content: Any = None


class CallFields(msgspec.Struct):
    """The only body fields the proxy decodes; the original bytes are forwarded unchanged."""

    model: str = ""
    stream: bool = False
    session_id: str | None = None
    prompt_cache_key: str | None = None
    vllm_xargs: dict[str, Any] | None = None
    messages: msgspec.Raw = msgspec.Raw(b"")  # left undecoded unless a session must be inferred
    prompt: msgspec.Raw = msgspec.Raw(b"")  # /v1/completions; only its bytes are looked at


class Identity(msgspec.Struct, frozen=True):
    session_id: str
    tenant_id: str
    agent_type: str
    session_inferred: bool


_call_decoder = msgspec.json.Decoder(CallFields)
_messages_decoder = msgspec.json.Decoder(list[_Message])


def decode_call(body: bytes) -> CallFields:
    """Decodes the routing fields; raises msgspec.DecodeError/ValidationError on malformed bodies."""
    return _call_decoder.decode(body)


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def _conversation_key(messages: msgspec.Raw) -> str | None:
    """A stable key for a conversation: the hash of its system and first user message."""
    try:
        decoded = _messages_decoder.decode(messages)
    except msgspec.DecodeError:
        return None
    opening: list[Any] = []
    for m in decoded:
        opening.append((m.role, m.content))
        if m.role == "user":
            break
    if not opening:
        return None
    digest = hashlib.blake2b(msgspec.json.encode(opening), digest_size=12).hexdigest()
    return f"conv-{digest}"


def identify(
    headers: Mapping[str, str],
    fields: CallFields,
    request_id: str,
    tenant_sources: tuple[str, ...] = (*TENANT_HEADERS, API_KEY),
) -> Identity:
    """`headers` must be case-insensitive (aiohttp's CIMultiDict is). The tenant is the first of
    `tenant_sources` present (header names, or `api-key`), else "default"."""
    session = _first(headers, SESSION_HEADERS) or fields.session_id or fields.prompt_cache_key
    if not session and fields.vllm_xargs:
        xarg = fields.vllm_xargs.get("session_id")
        session = xarg if isinstance(xarg, str) and xarg else None
    inferred = False
    if not session and fields.messages:
        session = _conversation_key(fields.messages)
        inferred = session is not None
    if not session:
        session, inferred = f"req-{request_id}", True

    tenant = "default"
    for source in tenant_sources:
        if source == API_KEY:
            auth = headers.get("authorization", "")
            # Tenants named by API key, hashed so keys never reach logs or metrics.
            value = "key-" + hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else None
        else:
            value = headers.get(source) or None
        if value:
            tenant = value
            break
    agent_type = _first(headers, AGENT_TYPE_HEADERS) or "default"
    return Identity(session, tenant, agent_type, inferred)
