"""Session inference by prefix chaining: a call whose conversation extends an earlier call's prompt and output
belongs to that earlier call's session.

Agents re-send the whole conversation each call: call k+1's messages are call k's messages, then call k's
answer (the assistant message), then the tool results. So after a call ends, the proxy remembers a key for
"its messages followed by its answer"; a later call whose messages, up to one of its assistant messages, hash
to a remembered key continues that session. Two agents that start from the same system prompt and task stay
apart, since their answers differ. With client API keys each tenant's chains start from its own
`tenant_seed`, so another tenant repeating the same conversation, answers and all, hashes to other keys and
never finds this tenant's session; likewise a response id is found only by the tenant recorded with it.

Contract (sans-IO): `chain_of(messages, seed)` returns one chain hash per message (hash i covers the seed and
messages 0..i: each assistant message normalised to its role, text and tool calls, so a client's re-encoding
of an answer's text does not matter; every other message's content, and tool-call arguments, as the client
sent them, which the same client sends again the same way) and the positions of assistant messages.
An answer is looked up by its `answer_key`: the chain up to it, then its text and tool calls with each call's
arguments as canonical JSON (decoded and encoded again), so a client that rebuilds the arguments it was
given (`{"a":1}` or ASCII escapes for the replica's `{"a": 1}`, as LangChain-style clients do) still
continues its session; only the answer being looked up is canonicalised, never the history before it, which
the client sends the same way every call. `answer_keys` gives a conversation's, latest first;
`PrefixChains.find` looks them up; `PrefixChains.remember(prompt_chain, answer, session)` stores the key of
prompt + answer.
The index holds at most `max_entries` keys, oldest first out (once split into shards, past 4,096 keys: the
oldest of the shards taken in turn). `session_of_response(id, tenant)` is None for a
response recorded under another tenant (`foreign_response`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from xxhash import xxh3_128_digest

from predictor.sharded import ShardedDict, ShardedLru
from proxy.data_structs import Answer as Answer  # re-exported: tests import it here
from proxy.data_structs import ChatMessage, InputItem, MessageFunction, MessageToolCall
from proxy.quoted_answers import QuotedAnswers

_messages_decoder = msgspec.json.Decoder(list[ChatMessage])
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _answer_text(content: msgspec.Raw) -> str | msgspec.Raw:
    """An assistant message's text, as the proxy reads an answer's; its bytes as sent when they are not JSON
    text (a string that is not UTF-8: the proxy decodes no more of a body than it reads, so such a message
    reaches here; no answer the proxy read can match it, and the replica judges the body)."""
    try:
        return _text(_decode(content))
    except msgspec.DecodeError:
        return content


def message_text(content: msgspec.Raw) -> str:
    """A message's text as the client sent it (its text parts joined); "" when it has none or is not JSON."""
    try:
        return _text(_decode(content))
    except msgspec.DecodeError:
        return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


# A link hashes the parent's hash, then the message: a call naming no session hashes its whole conversation
# each call (a coding agent's late calls: ~470 KB). Without client API keys the chain is XXH3-128 (the whole
# chain of a 462 kB body: ~490 µs against keyed BLAKE2b's ~1,250, decoding included; `python -m
# loadtests.bench.prompt_cost`, step `conversation_chain`): nothing stops a client
# from naming any session then, so a hash an adversary could steer guards nothing. A tenant's chain (client
# API keys) is SHA-256 from its 32-byte seed (`tenant_seed`), so one tenant cannot craft a conversation that
# lands in another's session: a link knows which by its parent's length.
_TENANT_CHAIN_BYTES = 32
# A conversation longer than this is not chained: its session is named by its opening alone
# (proxy/identity.py). No agent's context holds so many messages (a 1M-token context at ~60 tokens a message),
# and the chain costs ~0.5 µs a message on the event loop, compiled: 1.6M one-word messages (52 MB) took
# 0.76-0.79 s, with the decode ~0.31 s more, stalling every other call
# (docs/results/overhead-s29/many_messages.py).
MAX_CHAINED_MESSAGES = 16_384


def _link(
    parent: bytes,
    role: str,
    text: str | msgspec.Raw,
    tool_calls: tuple[tuple[str, str], ...] | tuple[tuple[str, str | msgspec.Raw], ...],
) -> bytes:
    message = parent + _encode((role, text, tool_calls))
    if len(parent) == _TENANT_CHAIN_BYTES:
        return hashlib.sha256(message).digest()
    return xxh3_128_digest(message)


# Arguments past this many characters are keyed as sent, not decoded again (a client's assistant message can
# be as large as a body; the answers a replica writes are smaller).
MAX_CANONICAL_ARGUMENTS = 256 * 1024
# A call naming no session looks up at most this many of its answers with tool calls (each decodes their
# arguments: ~3 µs for 1.4 KB); earlier ones only matter when a client rewrote its history that far back.
MAX_TOOL_ANSWER_LOOKUPS = 64


def _canonical_calls(calls: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str | msgspec.Raw], ...]:
    """Tool calls as an answer key holds them: each call's arguments as canonical JSON (what msgspec writes
    back of what it read: no insignificant space, UTF-8 rather than escapes, the last of duplicate keys,
    numbers in their shortest form), or as sent when they are not JSON or too long."""
    if not calls:  # (an answer of text alone: every anonymous call's)
        return ()
    out: list[tuple[str, str | msgspec.Raw]] = []
    for name, arguments in calls:
        canonical: str | msgspec.Raw = arguments
        if len(arguments) <= MAX_CANONICAL_ARGUMENTS:
            try:
                canonical = msgspec.Raw(_encode(_decode(arguments)))
            except (msgspec.MsgspecError, RecursionError):
                canonical = arguments
        out.append((name, canonical))
    return tuple(out)


def _tool_calls(message: ChatMessage) -> tuple[tuple[str, str], ...]:
    return tuple((c.function.name, c.function.arguments) for c in message.tool_calls or () if c.function)


def decode_messages(raw_messages: bytes | msgspec.Raw) -> list[ChatMessage] | None:
    try:
        return _messages_decoder.decode(raw_messages)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


_input_decoder = msgspec.json.Decoder(str | list[msgspec.Raw])  # one pass, no copy of a large input
_input_item_decoder = msgspec.json.Decoder(InputItem)
_NULL = msgspec.Raw(b"null")


def response_conversation(
    raw_input: bytes | msgspec.Raw, raw_instructions: bytes | msgspec.Raw
) -> list[ChatMessage] | None:
    """A Responses API call's `instructions` and `input` as the chat messages they stand for, to be chained
    as a chat call's (a stateless conversation sends its whole history as `input` each turn): `instructions`
    a system message; a message item as its role and content; one answer's `function_call` items the tool
    calls of the assistant message before them (or of one of their own); a `function_call_output` a tool
    message; reasoning items left out (they are not part of the answer's text or calls: `output_answer` in
    proxy/sse_scan.py reads an answer the same way); any other item kept whole, as sent. None when `input` is
    neither a string nor a list of objects."""
    messages: list[ChatMessage] = []
    if len(raw_instructions) and bytes(raw_instructions) != b"null":
        messages.append(ChatMessage("system", msgspec.Raw(raw_instructions)))
    try:
        items = _input_decoder.decode(raw_input)
        if isinstance(items, str):  # one user message, its JSON as sent
            messages.append(ChatMessage("user", msgspec.Raw(raw_input)))
            return messages
        for raw in items:
            item = _input_item_decoder.decode(raw)
            kind = item.type or "message"
            if kind == "message":
                messages.append(ChatMessage(item.role, item.content))
            elif kind == "function_call":
                call = MessageToolCall(MessageFunction(item.name, item.arguments))
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant":
                    last.tool_calls = [*(last.tool_calls or ()), call]
                else:
                    messages.append(ChatMessage("assistant", _NULL, [call]))
            elif kind == "function_call_output":
                messages.append(ChatMessage("tool", item.output))
            elif kind != "reasoning":
                messages.append(ChatMessage(f"item:{kind}", raw))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return messages


def tenant_seed(tenant: str | None) -> bytes:
    """Where a tenant's chains start: b"" for calls not authenticated by a client API key (their chains are
    XXH3-128), else the SHA-256 of the tenant (32 bytes: its chains are SHA-256, see `_link`)."""
    return b"" if tenant is None else hashlib.sha256(tenant.encode()).digest()


def chain_of(messages: list[ChatMessage], seed: bytes = b"") -> tuple[list[bytes], list[int]]:
    """Chain hashes of a chat call's messages (from `seed`: `tenant_seed`) and the indexes of its assistant
    messages."""
    chain: list[bytes] = []
    assistants: list[int] = []
    parent = seed
    for i, m in enumerate(messages):
        calls = _tool_calls(m)
        if m.role == "assistant":  # as the proxy reads an answer (`answer_key`): its text, however encoded
            parent = _link(parent, m.role, _answer_text(m.content), calls)
            assistants.append(i)
        else:  # as sent (the same client re-sends it the same way): not decoded, not re-encoded
            parent = _link(parent, m.role, m.content, calls)
        chain.append(parent)
    return chain, assistants


def conversation_chain(raw_messages: bytes | msgspec.Raw) -> tuple[list[bytes], list[int]] | None:
    """`chain_of` the decoded messages; None if they are unreadable."""
    messages = decode_messages(raw_messages)
    return None if messages is None else chain_of(messages)


def _answer_link(parent: bytes, text: str | msgspec.Raw, calls: tuple[tuple[str, str], ...]) -> bytes:
    return _link(parent, "assistant", text, _canonical_calls(calls))


def answer_key(prompt_chain: bytes, answer: Answer) -> bytes:
    """The key of `answer` to a call whose conversation's chain was `prompt_chain`."""
    return _answer_link(prompt_chain, answer.text, answer.tool_calls)


def answer_keys(
    chain: list[bytes], assistants: list[int], messages: list[ChatMessage], seed: bytes, limit: int = 0
) -> Iterator[bytes]:
    """The `answer_key` of each assistant message of a conversation (`chain_of(messages, seed)`), latest
    first; the latest `limit` alone when it is not 0, and no more than `MAX_TOOL_ANSWER_LOOKUPS` of those with
    tool calls. An answer without tool calls is keyed by its chain hash, computed already."""
    positions = assistants[-limit:] if limit else assistants
    with_calls = 0
    for i in reversed(positions):
        calls = _tool_calls(messages[i])
        if not calls:
            yield chain[i]
            continue
        with_calls += 1
        if with_calls > MAX_TOOL_ANSWER_LOOKUPS:
            return
        yield _answer_link(chain[i - 1] if i > 0 else seed, _answer_text(messages[i].content), calls)


def _index_key(key: bytes) -> str:
    """A chain hash as the index holds it: a character per byte (a split table's shard is a function of a
    key's last characters, predictor/sharded.py)."""
    return key.decode("latin-1")


class PrefixChains:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        # Split into shards once large, as the scheduler's session tables are (predictor/sharded.py): a flood
        # of conversations of one call each churns through the index, and a whole table of 100,000 keys was
        # rebuilt in one step of the event loop now and then (docs/results/overhead-s36/chain_stalls.py).
        # Past `max_entries` the oldest key of the shards taken in turn goes, close to the oldest of all
        # (each shard holds a uniform sample of the keys).
        self._sessions: ShardedLru[str] = ShardedLru(7, start_up=True)
        # session -> the keys that point to it, oldest first (evictions take them from the front), so ending
        # a session touches its own keys only: a scan of the whole index took ~8 ms at 100,000 keys. A list,
        # not a set: most sessions hold one or a few keys, and a set costs ~200 bytes more each.
        self._keys_of: ShardedDict[list[str]] = ShardedDict(8, start_up=True)
        # Responses API id -> (its session, the replica that answered it: the only one that stored it, the
        # tenant of the call that made it; "" when unknown)
        self._responses: ShardedLru[tuple[str, str, str]] = ShardedLru(9, start_up=True)
        # the lines of each session's latest long answer, which a conversation starting again from a summary
        # quotes (an agent that compacted its history)
        self.quotes = QuotedAnswers()

    def __len__(self) -> int:
        return len(self._sessions)

    def find(self, keys: Iterable[bytes]) -> str | None:
        """The session of the first of `keys` (`answer_keys`, latest first) held here."""
        for key in keys:
            session = self._sessions.touch(_index_key(key))
            if session is not None:
                return session
        return None

    def remember_response(
        self, response_id: str, session_id: str, replica_id: str = "", tenant: str = ""
    ) -> None:
        """A Responses API answer's id, which a later call names as `previous_response_id`."""
        self._responses.set_newest(response_id, (session_id, replica_id, tenant))
        while len(self._responses) > self.max_entries:
            self._responses.pop_oldest()

    def session_of_response(self, response_id: str, tenant: str | None = None) -> str | None:
        """The session of `response_id`; with `tenant` (a client API key's), None unless it was that
        tenant's."""
        known = self._responses.get(response_id)
        if known is None or (tenant is not None and known[2] != tenant):
            return None
        return known[0]

    def foreign_response(self, response_id: str, tenant: str) -> bool:
        """Whether `response_id` is known here as made by a call of another tenant than `tenant`."""
        known = self._responses.get(response_id)
        return known is not None and known[2] != "" and known[2] != tenant

    def replica_of_response(self, response_id: str) -> str:
        """The replica that answered (and stored) `response_id`; "" when unknown."""
        known = self._responses.get(response_id)
        return known[1] if known is not None else ""

    def knows(self, session_id: str) -> bool:
        return session_id in self._keys_of

    def remember(self, prompt_chain: bytes, answer: Answer, session_id: str) -> None:
        self.remember_key(answer_key(prompt_chain, answer), session_id)

    def remember_key(self, chained: bytes, session_id: str) -> None:
        """`remember` with the answer's key computed already (`answer_key`)."""
        key = _index_key(chained)
        old = self._sessions.get(key)
        self._sessions.set_newest(key, session_id)
        if old is not None:
            self._drop_key_of(old, key)
        keys = self._keys_of.get(session_id)
        if keys is None:
            self._keys_of[session_id] = [key]
        else:
            keys.append(key)
        while len(self._sessions) > self.max_entries:
            evicted_key, evicted = self._sessions.pop_oldest()
            self._drop_key_of(evicted, evicted_key)

    def forget_session(self, session_id: str) -> None:
        self.quotes.forget(session_id)
        for key in self._keys_of.pop(session_id) or ():
            self._sessions.pop(key)

    def _drop_key_of(self, session_id: str, key: str) -> None:
        keys = self._keys_of[session_id]  # every key in the index is in its session's list
        keys.remove(key)
        if not keys:
            self._keys_of.pop(session_id)
