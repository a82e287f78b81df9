"""Who a call belongs to: its session, tenant and agent type, from the conventions clients already use.

Functions over headers, the few body fields the proxy decodes and the prefix-chain index. Session precedence:
the headers (`X-Session-ID`, `session-id`, `x-claude-code-session-id`), then the body (`session_id`,
`prompt_cache_key`, `vllm_xargs.session_id`). A Responses API call naming a `previous_response_id` continues
that response's session. A chat call that names no session is inferred (so is a Responses API call whose
`input` carries its whole conversation: proxy/session_chain.py `response_conversation`): first by prefix
chaining (proxy/session_chain.py: its conversation extends an earlier call's messages and answer; not past
`MAX_CHAINED_MESSAGES` messages), else as the session whose latest answer it quotes, when none of that
session's calls runs (an agent that compacted its history and starts again from the summary it asked for:
proxy/quoted_answers.py), else from the start of its conversation (system and first user message,
which every later call repeats, so the id is stable across proxy restarts and proxy replicas); a first call
whose opening is already a live session (chained, or its first call not ended) gets a fresh id, so two
agents given the same task stay apart, also when they start at once (with several workers, so does one served
by a worker that does not own its opening: it may be another's).
Any other call is a session of its own. With client API keys (`scope`: the key's tenant), a
session is found only among the tenant's own: the opening's id hashes the tenant too, the chains start from
its seed (proxy/session_chain.py `tenant_seed`) and a response recorded under another tenant is not found, so
another tenant sending the same conversation, or naming the response's id, starts a session of its own. The
agent type is `X-Agent-Type`, else a hash of the head of the system prompt and the tool definitions
(`prompt_shape.agent_signature`), else `default`.

Every identity value a client sends (session, tenant, agent type) is checked by `check_id`: 1 to
`MAX_ID_CHARS` printable ASCII characters, no leading or trailing space. Anything else (CR/LF, other control
characters, non-ASCII, a 1 MB id) raises `IdentityError`, which the shell answers with a 400 naming the
field; the value itself is never echoed, logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from proxy.auth import client_key
from proxy.cache_key_conversations import CacheKeyConversations, Opening, key_of_sub_session, opening_of
from proxy.data_structs import CallFields as CallFields  # re-exported: tests import it here
from proxy.data_structs import ChatMessage, Identity, SeenMessages, StreamOptions
from proxy.lax_flags import lax_bool
from proxy.prompt_shape import SYSTEM_ROLES, agent_signature
from proxy.quoted_answers import QuotedAnswers, quote_tag, quoted_lines
from proxy.session_chain import (
    MAX_CHAINED_MESSAGES,
    PrefixChains,
    answer_keys,
    chain_of,
    decode_messages,
    message_text,
    response_conversation,
    tenant_seed,
)


class TenantKey:
    """The secret that keys the hash naming a tenant by its API key (the `api-key` identity source): random
    for each proxy; `saga serve --workers N` gives every worker the supervisor's (`tenant.key` in the
    worker directory, `use`), so one key names one tenant on every worker. `name` remembers the names of
    the keys seen lately, so an agent's calls do not each compute an HMAC."""

    __slots__ = ("_names", "_secret")

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._names: dict[str, str] = {}

    def use(self, secret: bytes) -> None:
        self._secret = secret
        self._names.clear()

    def name(self, auth: str) -> str:
        named = self._names.get(auth)
        if named is None:
            if len(self._names) >= _TENANT_NAMES_KEPT:  # (keys a client makes up: start over)
                self._names.clear()
            named = self._names[auth] = (
                "key-" + hmac.new(self._secret, auth.encode(), "sha256").hexdigest()[:12]
            )
        return named


_TENANT_NAMES_KEPT = 4096


TENANT_KEY = TenantKey()

# Claude Code's subagents send their session's id too (with an `x-claude-code-agent-id`): they stay in that
# session, on its replica; a session of their own was measured slower (docs/results/subagents/README.md).
SESSION_HEADERS = ("x-session-id", "session-id", "x-claude-code-session-id")
TENANT_HEADERS = ("x-tenant-id", "x-gateway-inference-fairness-id")
API_KEY = "api-key"  # a tenant source: the hash of the Authorization header (or of x-api-key)
AGENT_TYPE_HEADERS = ("x-agent-type",)
# A subagent's call within its session (Claude Code): named by its own system prompt, not the session's type.
SUBAGENT_HEADERS = ("x-claude-code-agent-id",)
MAX_ID_CHARS = 256
_VALID_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


class IdentityError(ValueError):
    """An identity value the proxy will not accept; `param` names where it came from."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


def check_id(param: str, value: str) -> str:
    """Returns `value` if it is a valid identity value, else raises IdentityError (never quoting it)."""
    if not value or len(value) > MAX_ID_CHARS:
        raise IdentityError(param, f"{param} must be 1 to {MAX_ID_CHARS} characters, got {len(value)}")
    if _VALID_ID.fullmatch(value) is None:
        raise IdentityError(
            param,
            f"{param} may hold only printable ASCII characters (no control characters such as CR or LF, "
            "no leading or trailing space)",
        )
    return value


_call_decoder = msgspec.json.Decoder(CallFields, strict=False)  # vLLM's lax reading (CallFields)


def decode_call(body: bytes) -> CallFields:
    """Decodes the routing fields; raises msgspec.DecodeError/ValidationError on malformed bodies.

    Nesting deeper than Python's recursion limit (a 100k-deep array) is a DecodeError too.
    """
    try:
        fields = _call_decoder.decode(body)
    except RecursionError as e:
        raise msgspec.DecodeError("JSON nested too deeply") from e
    stream = fields.stream  # "stream": "yes" and the like, which vLLM serves (proxy/lax_flags.py)
    if stream is not None and stream.__class__ is not bool:
        fields.stream = lax_bool(stream, "$.stream")
    options = fields.stream_options
    if isinstance(options, StreamOptions):
        usage = options.include_usage
        if usage is not None and usage.__class__ is not bool:
            options.include_usage = lax_bool(usage, "$.stream_options.include_usage")
    return fields


def _string(raw: msgspec.Raw) -> str | None:
    """The JSON string `raw` holds; None when absent or another value (a number, even past a float's range,
    an array, an object: vLLM's chat ignores such a field, so the proxy reads none of them)."""
    if not raw or bytes(memoryview(raw)[:1]) != b'"':
        return None
    return msgspec.json.decode(raw, type=str)


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:  # an empty value counts as absent
            return check_id(name, value)
    return None


_KEY_HASH = hashlib.blake2b(digest_size=12)
_encode = msgspec.json.encode  # looked up once: two module lookups a call otherwise
_NO_SYSTEM = msgspec.Raw(b"")  # a call with no top-level system prompt (every route but /v1/messages)


def _conversation_key(
    decoded: list[ChatMessage], scope: str | None = None, system: msgspec.Raw = _NO_SYSTEM
) -> str | None:
    """A stable key for a conversation: the hash of its system and first user message (and of `scope`, a
    client API key's tenant, when there is one). `system`: a /v1/messages call's top-level system prompt, as
    sent (Anthropic's place for it: two agents differing only there were one conversation), hashed as its
    bytes, after their length (so no two splits of one byte string hash alike)."""
    opening: list[Any] = []
    for m in decoded:
        opening.append((m.role, m.content))
        if m.role == "user":
            break
    if not opening:
        return None
    hasher = _KEY_HASH.copy()  # a copy: the constructor's keyword arguments cost more than the hash
    if system:
        hasher.update(b"system %d\n" % len(system))
        hasher.update(system)
    hasher.update(_encode(opening if scope is None else (scope, opening)))
    return f"conv-{hasher.hexdigest()}"


def _inferred_session(
    messages: list[ChatMessage],
    request_id: str,
    chains: PrefixChains | None,
    seen: SeenMessages | None,
    scope: str | None,
    system: msgspec.Raw = _NO_SYSTEM,
    live: Callable[[str], bool] | None = None,
    busy: Callable[[str], bool] | None = None,
) -> tuple[str | None, bytes | None, bool]:
    """The session, the conversation's chain hash, and whether it goes on from an earlier answer (by prefix
    chaining, or by quoting it: proxy/quoted_answers.py)."""
    if chains is None or not messages or len(messages) > MAX_CHAINED_MESSAGES:
        return _conversation_key(messages, scope, system), None, False
    if seen is not None:  # `ownership_key` read them, with the same scope
        chain, assistants, seed = seen.chain, seen.assistants, seen.seed
    else:
        seed = tenant_seed(scope)
        chain, assistants = chain_of(messages, seed)
    chained = chains.find(answer_keys(chain, assistants, messages, seed))
    if chained is not None:
        return chained, chain[-1], True
    if len(chains.quotes):
        tag = None if seen is None else seen.quote_tag  # (the worker that read it computed it)
        if tag is None:
            tag = quote_tag(scope, system_of(messages, system))
        quoted = None if seen is None else seen.quoted
        taken = _taken_up(chains.quotes, messages, tag, busy, quoted, chain[-1])
        if taken is not None:  # it goes on in that session: its answer is the session's latest, filed
            return taken, chain[-1], True  # (so a conversation sent again after it is not taken up)
    session = _conversation_key(messages, scope, system)
    if (
        session is not None
        and not assistants
        and (
            chains.knows(session)
            or (live is not None and live(session))  # its first call not answered yet
            or (seen is not None and seen.opening_elsewhere)
        )
    ):
        session = f"{session}-{request_id}"  # the same opening as a live conversation: another agent
    return session, chain[-1], False


# Where a conversation starting again from a summary holds it: a user message (Codex, Claude Code) or a tool
# result; the first two and the last two such messages are read, not a long history's every one.
_QUOTING_ROLES = ("user", "tool")


def quoting_texts(messages: list[ChatMessage]) -> list[str]:
    """The texts of a new conversation that a summary it starts from would be in."""
    said = [m for m in messages if m.role in _QUOTING_ROLES]
    if len(said) > 4:
        said = said[:2] + said[-2:]
    return [message_text(m.content) for m in said]


def system_of(messages: list[ChatMessage], system: msgspec.Raw) -> bytes:
    """A conversation's system prompt as sent: a /v1/messages call's top-level one, and its first message
    when that is a system or developer message."""
    first = bytes(messages[0].content) if messages and messages[0].role in SYSTEM_ROLES else b""
    return bytes(system) + first if system else first


def _taken_up(
    quotes: QuotedAnswers,
    messages: list[ChatMessage],
    tag: str,
    busy: Callable[[str], bool] | None,
    digests: list[int] | None,
    conversation: bytes,
) -> str | None:
    """The session whose latest answer this conversation quotes (proxy/quoted_answers.py `take_up`).
    `digests`: its lines' digests, when the worker that read it hashed them (proxy/fast_server.py);
    `conversation`: its chain hash (all it sent: the same when a client sends it again)."""
    if digests is None:
        digests = list(quoted_lines(quoting_texts(messages), tag))
    return quotes.take_up(digests, busy, conversation)


def _key_session(
    key: str,
    fields: CallFields,
    scope: str | None,
    chains: PrefixChains | None,
    conversations: CacheKeyConversations,
    known: Callable[[str], bool],
    busy: Callable[[str], bool],
) -> tuple[str, list[ChatMessage] | None]:
    """The session of a call naming `key` as its `prompt_cache_key` (proxy/cache_key_conversations.py), as
    the client is told it, and its messages when they were read for it."""
    scheduled = scheduled_session_id(key, False, scope)
    decoded: list[ChatMessage] | None = None
    previous = fields.previous_response_id
    if previous and chains is not None:
        # a Responses API turn names its conversation's last response: the session that response went to,
        # where that is one told apart under this key
        told = chains.session_of_response(previous, scope)
        if told is None or key_of_sub_session(told) != scheduled:
            told = scheduled
    else:

        def opening() -> Opening | None:
            nonlocal decoded
            decoded = _conversation(fields)
            return None if decoded is None else opening_of(decoded)

        told = conversations.session_for(scheduled, opening, known, busy)
    if told == scheduled:
        return key, decoded
    return (told if scope is None else told.removeprefix(f"{scope}:")), decoded


def _explicit_session(headers: Mapping[str, str], fields: CallFields) -> str | None:
    """The session the client named, in precedence order; raises IdentityError on a bad value."""
    return _named_session(headers, fields)[0]


def _named_session(headers: Mapping[str, str], fields: CallFields) -> tuple[str | None, bool]:
    """`_explicit_session`, and whether its `prompt_cache_key` named it."""
    session = _first(headers, SESSION_HEADERS)
    if session is None and fields.session_id:
        session = check_id("session_id", fields.session_id)
    if session is None and (cache_key := _string(fields.prompt_cache_key)):
        return check_id("prompt_cache_key", cache_key), True
    if session is None and isinstance(fields.vllm_xargs, dict):
        xarg = fields.vllm_xargs.get("session_id")
        if xarg:
            if not isinstance(xarg, str):
                raise IdentityError("vllm_xargs.session_id", "vllm_xargs.session_id must be a string")
            session = check_id("vllm_xargs.session_id", xarg)
    return session, False


def ownership_key(
    headers: Mapping[str, str], fields: CallFields, scope: str | None = None
) -> tuple[str | None, SeenMessages | None]:
    """The key whose owner schedules this call when the proxy runs as N workers (proxy/worker_set.py), and,
    for a chat call naming no session, its messages as read (for the worker's choice and `identify`, so they
    are decoded and hashed once).

    The explicit session id if the client named one (for `<key>~<digest>`, a session told apart under a
    `prompt_cache_key`, the key: proxy/cache_key_conversations.py); else, for a chat call, the
    conversation's opening (what the inferred session id hashes: system and first user message, which every
    later call of the conversation repeats); else None: a call that is a session of its own, served by
    whichever worker read it. A bad identity value is None too: the call is refused where it was read. A
    Responses API call continuing through `previous_response_id` alone has no key either: the
    response-to-session index lives in the worker that served the response, which the workers' shared table
    names (proxy/response_owners.py). A chat call naming no session goes first where the shared table says
    its latest answer was served, and only then to its opening's owner (proxy/fast_server.py). `scope`: the
    client API key's tenant, as `identify` is given it (the opening and chain hashes are the tenant's)."""
    try:
        session = _explicit_session(headers, fields)
    except IdentityError:
        return None, None
    if session:  # a session told apart under a `prompt_cache_key`, named back, goes where the key's calls go
        return key_of_sub_session(session) or session, None
    decoded = _conversation(fields)
    if decoded is None:
        return None, None
    chain: list[bytes] = []
    assistants: list[int] = []
    seed = tenant_seed(scope)
    if len(decoded) <= MAX_CHAINED_MESSAGES:  # past it, named by its opening alone (`_inferred_session`)
        chain, assistants = chain_of(decoded, seed)
    return _conversation_key(decoded, scope, fields.system), SeenMessages(decoded, chain, assistants, seed)


def _conversation(fields: CallFields) -> list[ChatMessage] | None:
    """A call's conversation, for a session to be inferred from: a chat or /v1/messages call's messages, a
    Responses API call's `instructions` and `input` as the messages they stand for (one continuing through
    `previous_response_id` has only its latest turn there: none), else None."""
    if fields.messages:
        return decode_messages(fields.messages)
    if fields.input and not fields.previous_response_id:
        return response_conversation(fields.input, fields.instructions)
    return None


def scheduled_session_id(session: str, inferred: bool, scope: str | None) -> str:
    """The id the scheduler knows a session by: with client API keys (`scope`, the key's tenant) a session
    the client named is the tenant's own (`tenant:id`); an inferred one is already the tenant's (its
    opening and chain hashes include the tenant)."""
    return session if inferred or scope is None else f"{scope}:{session}"


def identify(
    headers: Mapping[str, str],
    fields: CallFields,
    request_id: str,
    tenant_sources: tuple[str, ...] = (*TENANT_HEADERS, API_KEY),
    *,
    chains: PrefixChains | None = None,
    seen: SeenMessages | None = None,
    scope: str | None = None,
    agent_type_of: Callable[[str], str | None] | None = None,
    session_live: Callable[[str], bool] | None = None,
    key_conversations: CacheKeyConversations | None = None,
    session_known: Callable[[str], bool] | None = None,
    session_busy: Callable[[str], bool] | None = None,
) -> Identity:
    """`headers` must be case-insensitive (aiohttp's CIMultiDict is); raises IdentityError on bad values.
    The tenant is the first of `tenant_sources` present (header names, or `api-key`), else "default".
    `seen`: the call's messages when `ownership_key` read them already (decoded and hashed once a call).
    `scope`: the tenant a client API key named (None without keys): sessions are inferred only from its own
    conversations and responses.
    `agent_type_of`: the agent type the scheduler filed a live session under (by the session id it knows,
    `scheduled_session_id`), or None; a call of such a session keeps that type unless a header names one
    or the call is a subagent's (`SUBAGENT_HEADERS`: its own system prompt names it), so the system prompt
    and tools of its every call are not hashed again (up to 66 KiB of them a call).
    `session_live`: whether the scheduler holds a session of that id (by the id it knows) whose first call
    has not ended: a first call with that opening is another agent's (two agents given one task at once
    were filed as one session: the thirteenth review).
    `key_conversations`, `session_known`, `session_busy`: the conversations under one `prompt_cache_key`
    are told apart (proxy/cache_key_conversations.py; the scheduler's `holds_session`, `call_in_flight`);
    `session_busy` also keeps a conversation quoting a session's answer while that session runs out of it."""
    decoded = None if seen is None else seen.messages
    session, by_key = _named_session(headers, fields)
    if by_key and key_conversations is not None and session_known is not None and session_busy is not None:
        assert session is not None
        session, read = _key_session(
            session, fields, scope, chains, key_conversations, session_known, session_busy
        )
        if read is not None:
            decoded = read
    inferred = False
    prompt_chain = None
    tag = None
    if not session and fields.previous_response_id and chains is not None:
        session = chains.session_of_response(fields.previous_response_id, scope)
        inferred = session is not None
    if not session:
        if decoded is None:
            decoded = _conversation(fields)
        if decoded is not None:
            session, prompt_chain, went_on = _inferred_session(
                decoded, request_id, chains, seen, scope, fields.system, session_live, session_busy
            )
            if went_on:
                tag = quote_tag(scope, system_of(decoded, fields.system))
        inferred = session is not None
    if not session:
        session, inferred = f"req-{request_id}", True

    tenant = "default"
    for source in tenant_sources:
        if source == API_KEY:
            auth = headers.get("authorization", "")
            # the key as proxy/auth.py reads it (scheme in any case, spaces around the token), from
            # Anthropic's `x-api-key` too: one key names one tenant however a client sends it
            key = client_key(auth or None, headers.get("x-api-key"))
            if key is not None:
                auth = f"Bearer {key}"
            # Tenants named by API key, hashed so keys never reach logs or metrics; keyed with a secret, so
            # that the name, shown on the open /metrics, cannot confirm a guessed key offline
            value = TENANT_KEY.name(auth) if auth else None
        else:
            value = _first(headers, (source,))
        if value:
            tenant = value
            break
    agent_type = _first(headers, AGENT_TYPE_HEADERS)
    if agent_type is None and agent_type_of is not None and _first(headers, SUBAGENT_HEADERS) is None:
        agent_type = agent_type_of(scheduled_session_id(session, inferred, scope))
    if agent_type is None:  # the agent named by its system prompt and tools (proxy/prompt_shape.py)
        messages: bytes | msgspec.Raw = fields.messages
        if decoded is not None and (not decoded or decoded[0].role not in SYSTEM_ROLES):
            messages = b""  # decoded already, and no system prompt to hash: no need to look for one
        if not messages and not fields.tools and not fields.instructions and not fields.system:
            agent_type = "default"  # nothing to name it by: what agent_signature concludes, without its cost
        else:
            agent_type = (
                agent_signature(messages, fields.tools, fields.instructions or fields.system) or "default"
            )
    return Identity(session, tenant, agent_type, inferred, prompt_chain, quote_tag=tag)
