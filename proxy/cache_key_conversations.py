"""The conversations under one `prompt_cache_key`, told apart where they start (proxy/identity.py reads them).

OpenAI's key groups calls that share a prefix: many agents send one per conversation (their thread or session
id), other apps one for a whole app or user. The proxy reads the key as a session, and a session is one
workflow: twelve agents sharing one key were admitted, retained and bound as one conversation (20.4-20.5 s
mean task time against 16.7-16.8 s with a key each or none: the fifty-first session).

Contract (sans-IO; the scheduler's view comes in as functions): `session_for(key, opening, known, busy)`
returns the session a call naming `key` (the scheduler's id of it) belongs to. The conversation that first
names a key the scheduler does not hold is the key's own, and its calls are the key's session, as before. A
conversation is told apart where it starts: a first call (`Opening.first`: no answer or tool result in its
messages yet) whose first user message (`Opening.digest`) is not the key's own conversation's, sent while a
call of the key's session is in flight or once the key was found shared, goes to a session of its own,
`sub_session(key, digest)`, and so do the later calls with that first user message. Any other call is the
key's: a call that goes on from answers is never split, so a conversation that sends its own key keeps its
session whatever its history becomes (a sliding window, a summary, `cache_control` moving from message to
message, a first call that was a router's: the forty-ninth session's review C and the fifty-second's), and
one with a first user message never split off falls back to the key's session, as before. The opening is
looked at only when it can matter, so a conversation sending a key of its own, its calls one after another,
costs no decode; nothing is ever dissolved (the forty-ninth session's rule took a key found busy as naming no
session, and a conversation's own retry made it lose its session for good). A session the key names that the
proxy did not record (a header named it) is left as it is. At most `limit` keys are remembered, the oldest
first out, and `MAX_SPLITS` first user messages a key, the one used longest ago first out. A conversation
told apart whose first user message later changes (a sliding window dropping it) falls back to the key's
session, as every call of the key did before."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from xxhash import xxh3_64_intdigest

from proxy.data_structs import ChatMessage
from proxy.session_chain import message_text

# The roles of a conversation's first call: no answer and no tool result yet.
_OPENING_ROLES = frozenset(("system", "developer", "user"))
MAX_SPLITS = 1024  # first user messages remembered for a key (the oldest first out)
# A sub-session's id: the key (cut to leave room) and a digest of the whole key and the first user message,
# within the ids clients may send back (proxy/identity.py MAX_ID_CHARS).
_DIGEST_CHARS = 16
_SUB_ID_CHARS = 256


class Opening(msgspec.Struct, frozen=True, gc=False):
    digest: int  # of the conversation's first user message's text (of its JSON when it has none)
    first: bool  # whether the call is the conversation's first: system and user messages alone


def opening_of(messages: list[ChatMessage]) -> Opening | None:
    """The digest of the call's first user message's text (its first message's when none is a user's) and
    whether it is a first call; None for no messages. Not its system prompt: agents rewrite a clock or plan
    line there every turn."""
    if not messages:
        return None
    opening = messages[0]
    for message in messages:
        if message.role == "user":
            opening = message
            break
    first = all(message.role in _OPENING_ROLES for message in messages)
    text = message_text(opening.content)  # its text: `cache_control` added to a part leaves it as it was
    return Opening(xxh3_64_intdigest(text.encode() if text else bytes(opening.content)), first)


def sub_session(key: str, digest: int) -> str:
    """`<key>~<16 hex digits>`: the digest hashes the whole key with the first user message's, so two long
    keys cut alike still name two sessions. A client naming it as its session id is served by the worker of
    the key (proxy/identity.py `ownership_key`)."""
    named = xxh3_64_intdigest(key.encode() + digest.to_bytes(8, "little"))
    return f"{key[: _SUB_ID_CHARS - _DIGEST_CHARS - 1]}~{named:016x}"


def key_of_sub_session(session: str) -> str | None:
    """The key part of what `sub_session` makes ("ab~0123456789abcdef" -> "ab"), else None."""
    cut = len(session) - _DIGEST_CHARS - 1
    if cut <= 0 or session[cut] != "~":
        return None
    tail = session[cut + 1 :]
    if not all(c in "0123456789abcdef" for c in tail):
        return None
    return session[:cut]


class _Key:
    __slots__ = ("own", "splits")

    def __init__(self, own: int) -> None:
        self.own = own  # the first user message of the key's own conversation
        self.splits: dict[int, None] = {}  # first user messages split off, the one used longest ago first


class CacheKeyConversations:
    __slots__ = ("_keys", "_limit", "found", "split")

    def __init__(self, limit: int = 65_536) -> None:
        self._keys: dict[str, _Key] = {}
        self._limit = limit
        # since the start (`/saga/v1/state`): keys found carrying more than one conversation, and calls sent
        # to a session of their own under a key
        self.found = 0
        self.split = 0

    def __len__(self) -> int:
        return len(self._keys)

    def session_for(
        self,
        key: str,
        opening: Callable[[], Opening | None],
        known: Callable[[str], bool],
        busy: Callable[[str], bool],
    ) -> str:
        """The session of a call naming `key`; `opening()` its `opening_of` (decoded only when needed),
        `known(id)` whether the scheduler holds a session of that id, `busy(id)` whether one of its calls is
        waiting or running."""
        record = self._keys.get(key)
        if record is None or not known(key):
            if record is not None and record.splits:  # a shared key whose own conversation ended
                return self._told_apart(key, record, opening())
            if record is None and known(key):
                return key  # named by a header, or remembered before the oldest: left as it is
            seen = opening()
            if seen is not None:
                self._remember(key, _Key(seen.digest))
            return key
        if not record.splits and not busy(key):
            return key
        return self._told_apart(key, record, opening())

    def _told_apart(self, key: str, record: _Key, seen: Opening | None) -> str:
        """A call of a key found shared, or sent while a call of the key's session is in flight."""
        if seen is None or seen.digest == record.own:
            return key
        splits = record.splits
        if seen.digest in splits:
            del splits[seen.digest]  # (the latest used last: the oldest used goes first)
        else:
            if not seen.first:  # goes on from answers: the key's own conversation's, or one never told apart
                return key
            if not splits:
                self.found += 1
            if len(splits) >= MAX_SPLITS:
                del splits[next(iter(splits))]
        splits[seen.digest] = None
        self.split += 1
        return sub_session(key, seen.digest)

    def _remember(self, key: str, record: _Key) -> None:
        keys = self._keys
        keys.pop(key, None)
        if len(keys) >= self._limit:
            del keys[next(iter(keys))]  # the oldest remembered
        keys[key] = record
