"""Session inference by prefix chaining: a call whose conversation extends an earlier call's prompt and output
belongs to that earlier call's session.

Agents re-send the whole conversation each call: call k+1's messages are call k's messages, then call k's
answer (the assistant message), then the tool results. So after a call ends, the proxy remembers a key for
"its messages followed by its answer"; a later call whose messages, up to one of its assistant messages, hash
to a remembered key continues that session. Two agents that start from the same system prompt and task stay
apart, since their answers differ. With client API keys each tenant's chains start from its own
`tenant_seed`, so another tenant repeating the same conversation, answers and all, hashes to other keys and
never finds this tenant's session; likewise a response id is found only by the tenant recorded with it.

Contract (sans-IO): `chain_of(messages, seed)` returns the chain hash through each assistant message, in
order, and through the whole conversation (hash i covers the seed and messages 0..i: each assistant message
normalised to its text and tool calls, so a client's re-encoding of an answer does not matter; every other
message's content as the client sent it, which the same client sends again the same way);
`PrefixChains.find` looks those through the assistant messages up, latest first;
`PrefixChains.remember(prompt_chain, answer, session)` stores the key of the whole conversation followed by
the answer (`answer_key`), which the next call finds at that assistant message.
The index holds at most `max_entries` keys, oldest first out. `session_of_response(id, tenant)` is None for a
response recorded under another tenant (`foreign_response`)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Final

import msgspec
from xxhash import xxh3_64_intdigest, xxh3_128_intdigest

from proxy.data_structs import Answer as Answer  # re-exported: tests import it here
from proxy.data_structs import ChatMessage

_messages_decoder = msgspec.json.Decoder(list[ChatMessage])
_encode = msgspec.json.encode
_decode = msgspec.json.decode


# A link hashes the parent's hash, then the message: a call naming no session hashes its whole conversation
# each call (a coding agent's late calls: ~470 KB in ~200 messages), so a link must cost little beyond its
# bytes. Without client API keys the chain is XXH3-128, each link seeded with the low 64 bits of its parent
# xor its role's salt, over the message's content bytes in place (a second link over the tool calls, when it
# has any): no copy, no re-encoding. Nothing stops a client from naming any session then, so a hash an
# adversary could steer guards nothing (two conversations whose links agree in 64 bits would continue alike:
# 2^-64 a pair by chance). A tenant's chain (client API keys) is SHA-256 from its 32-byte seed
# (`tenant_seed`) over the whole link, so one tenant cannot craft a conversation that lands in another's
# session: a link knows which by its parent's length. `python -m loadtests.bench.prompt_cost`, step
# `conversation_chain`, times it.
_TENANT_CHAIN_BYTES: Final = 32
_LOW_64: Final[Any] = (1 << 64) - 1


def _role_salt(role: str) -> Any:
    return xxh3_64_intdigest(role.encode())


_ROLE_SALTS: Final[dict[str, Any]] = {
    role: _role_salt(role) for role in ("system", "user", "tool", "developer", "function")
}
_ASSISTANT_SALT: Final[Any] = _role_salt("assistant")
_TOOL_CALLS_SALT: Final[Any] = _role_salt("tool_calls")


# An assistant message's text is hashed as UTF-8 between quotes (clients escape differently: \u00e9 or é,
# \/ or /): a JSON string without a backslash is exactly that, hashed as sent, not decoded.
_BACKSLASH: Final = 0x5C
_QUOTE: Final = 0x22
_QUOTE_BYTES: Final = b'"'


def _answer_bytes(content: msgspec.Raw) -> bytes:
    """An assistant message's text as UTF-8 between quotes, as the proxy reads an answer's (`Answer.text`):
    content parts joined, null or no text empty; its bytes as sent when they are not JSON text (a string
    that is not UTF-8: the proxy decodes no more of a body than it reads, so such a message reaches here; no
    answer the proxy read can match it, and the replica judges the body)."""
    sent = bytes(content)
    if sent and sent[0] == _QUOTE and sent.find(_BACKSLASH) < 0:
        return sent
    try:
        return _quoted(_text(_decode(sent)))
    except msgspec.DecodeError:
        return sent


def _quoted(text: str) -> bytes:
    return _QUOTE_BYTES + text.encode("utf-8", "surrogatepass") + _QUOTE_BYTES


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


# Chain values are 128-bit: typed Any, not int, so that compiled code keeps them as Python ints instead of
# trying (and failing) to unbox each into a machine word, which made the compiled loop slower than the
# interpreted one.
def _keyless_link(parent: Any, salt: Any, content: Any, calls: tuple[tuple[str, str], ...]) -> Any:
    link = xxh3_128_intdigest(content, (parent & _LOW_64) ^ salt)
    if calls:
        link = xxh3_128_intdigest(_encode(calls), (link & _LOW_64) ^ _TOOL_CALLS_SALT)
    return link


def _tenant_link(parent: bytes, role: str, text: Any, calls: tuple[tuple[str, str], ...]) -> bytes:
    return hashlib.sha256(parent + _encode((role, text, calls))).digest()


def _calls_of(message: ChatMessage) -> tuple[tuple[str, str], ...]:
    calls = message.tool_calls
    if not calls:
        return ()
    return tuple((c.function.name, c.function.arguments) for c in calls if c.function)


def decode_messages(raw_messages: bytes | msgspec.Raw) -> list[ChatMessage] | None:
    try:
        return _messages_decoder.decode(raw_messages)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def tenant_seed(tenant: str | None) -> bytes:
    """Where a tenant's chains start: b"" for calls not authenticated by a client API key (their chains are
    XXH3-128), else the SHA-256 of the tenant (32 bytes: its chains are SHA-256, see `_tenant_link`)."""
    return b"" if tenant is None else hashlib.sha256(tenant.encode()).digest()


def chain_of(messages: list[ChatMessage], seed: bytes = b"") -> tuple[list[bytes], bytes]:
    """A chat call's conversation chain from `seed` (`tenant_seed`): the chain hash through each of its
    assistant messages, in order, and through the whole conversation."""
    if len(seed) == _TENANT_CHAIN_BYTES:
        return _tenant_chain(messages, seed)
    answered: list[bytes] = []
    parent: Any = 0
    for m in messages:
        if m.role == "assistant":  # as the proxy reads an answer (`answer_key`): its text, however encoded
            parent = _keyless_link(parent, _ASSISTANT_SALT, _answer_bytes(m.content), _calls_of(m))
            answered.append(parent.to_bytes(16, "little"))
        else:  # as sent (the same client re-sends it the same way): not decoded, not copied
            salt = _ROLE_SALTS.get(m.role)
            if salt is None:
                salt = _role_salt(m.role)
            parent = _keyless_link(parent, salt, m.content, _calls_of(m))
    return answered, parent.to_bytes(16, "little")


def _tenant_chain(messages: list[ChatMessage], seed: bytes) -> tuple[list[bytes], bytes]:
    answered: list[bytes] = []
    parent = seed
    for m in messages:
        if m.role == "assistant":
            parent = _tenant_link(parent, m.role, _answer_text(m.content), _calls_of(m))
            answered.append(parent)
        else:
            parent = _tenant_link(parent, m.role, m.content, _calls_of(m))
    return answered, parent


def _answer_text(content: msgspec.Raw) -> str | msgspec.Raw:
    """`_answer_bytes`, as text for a tenant's (SHA-256) links."""
    try:
        return _text(_decode(content))
    except msgspec.DecodeError:
        return content


def conversation_chain(raw_messages: bytes | msgspec.Raw) -> tuple[list[bytes], bytes] | None:
    """`chain_of` the decoded messages; None if they are unreadable."""
    messages = decode_messages(raw_messages)
    return None if messages is None else chain_of(messages)


def answer_key(prompt_chain: bytes, answer: Answer) -> bytes:
    """The chain hash of a call's conversation (`prompt_chain`, the whole of `chain_of`) followed by its
    answer: the hash the next call finds at that assistant message."""
    if len(prompt_chain) == _TENANT_CHAIN_BYTES:
        return _tenant_link(prompt_chain, "assistant", answer.text, answer.tool_calls)
    parent: Any = int.from_bytes(prompt_chain, "little")
    text = _quoted(answer.text)
    key: bytes = _keyless_link(parent, _ASSISTANT_SALT, text, answer.tool_calls).to_bytes(16, "little")
    return key


class PrefixChains:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._sessions: OrderedDict[bytes, str] = OrderedDict()
        self._keys_of: dict[str, int] = {}  # session -> how many keys point to it
        # Responses API id -> (its session, the replica that answered it: the only one that stored it, the
        # tenant of the call that made it; "" when unknown)
        self._responses: OrderedDict[str, tuple[str, str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def find(self, answered: list[bytes]) -> str | None:
        """The session of the latest of a conversation's answers (`chain_of`) that one was remembered with."""
        for link in reversed(answered):
            session = self._sessions.get(link)
            if session is not None:
                self._sessions.move_to_end(link)
                return session
        return None

    def remember_response(
        self, response_id: str, session_id: str, replica_id: str = "", tenant: str = ""
    ) -> None:
        """A Responses API answer's id, which a later call names as `previous_response_id`."""
        self._responses[response_id] = (session_id, replica_id, tenant)
        self._responses.move_to_end(response_id)
        while len(self._responses) > self.max_entries:
            self._responses.popitem(last=False)

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
        key = answer_key(prompt_chain, answer)
        old = self._sessions.get(key)
        if old is not None:
            self._drop_key_of(old)
        self._sessions[key] = session_id
        self._sessions.move_to_end(key)
        self._keys_of[session_id] = self._keys_of.get(session_id, 0) + 1
        while len(self._sessions) > self.max_entries:
            _, evicted = self._sessions.popitem(last=False)
            self._drop_key_of(evicted)

    def forget_session(self, session_id: str) -> None:
        if session_id not in self._keys_of:
            return
        for key in [k for k, s in self._sessions.items() if s == session_id]:
            del self._sessions[key]
        del self._keys_of[session_id]

    def _drop_key_of(self, session_id: str) -> None:
        left = self._keys_of.get(session_id, 0) - 1
        if left > 0:
            self._keys_of[session_id] = left
        else:
            self._keys_of.pop(session_id, None)
