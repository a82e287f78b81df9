"""The conversations under one `prompt_cache_key`, told apart where they start (proxy/identity.py reads them).

OpenAI's key groups calls that share a prefix: many agents send one per conversation (their thread or session
id), other apps one for a whole app or user. The proxy reads the key as a session, and a session is one
workflow: twelve agents sharing one key were admitted, retained and bound as one conversation (20.4-20.5 s
mean task time against 16.7-16.8 s with a key each or none: the fifty-first session).

Contract (sans-IO; the scheduler's view comes in as functions): `session_for(key, opening, known, busy)`
returns the session a call naming `key` (the scheduler's id of it) belongs to. The conversation that first
names a key the scheduler does not hold is the key's own, and its calls are the key's session, as before. A
conversation is told apart where it starts: a first call (`Opening.first`: no answer or tool result in its
messages yet) whose first user message's text (`Opening.digest`) is not the key's own conversation's, sent
while a call of the key's session is in flight or once the key was found shared (a conversation split off went
on, or `SHARED_AFTER` were split off: a side call asked once, a title, does not make it so), goes to a session
of its own, `sub_session(key, digest)`, and so do the later calls with that first user message. Any other call
is the key's: a call that goes on from answers is never split, so a conversation that sends its own key keeps
its session whatever its history becomes (a sliding window, `cache_control` moving from message to message, a
first call that was a router's, a summary it starts again from while its key is not shared: the forty-ninth
session's review C and the fifty-second's three), and one with a first user message never split off falls back
to the key's session, as before. The opening is looked at only when it can matter, so a conversation sending a
key of its own, its calls one after another, costs no decode; nothing is ever dissolved (the forty-ninth
session's rule took a key found busy as naming no session, and a conversation's own retry made it lose its
session for good). A session the key names that the proxy did not record (a header named it) is left as it is.
At most `limit` keys are remembered, `MAX_SPLITS` first user messages split off a key and `MAX_SPLITS_IN_ALL`
over every key, the one used longest ago first out. A conversation told apart whose first user message later
changes (a sliding window dropping it) falls back to the key's session, as every call of the key did before;
under a key found shared, the key's own conversation starting again from a summary is told apart too (it is
then a first call like another conversation's)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from xxhash import xxh3_64_intdigest

from proxy.data_structs import ChatMessage
from proxy.session_chain import message_text

# The roles of a conversation's first call: no answer and no tool result yet.
_OPENING_ROLES = frozenset(("system", "developer", "user"))
MAX_SPLITS = 1024  # first user messages split off remembered for a key (the one used longest ago first out)
# ... and over every key, so the memory they take stays small (~84 bytes each): a key's whole record goes,
# the one split off from longest ago first
MAX_SPLITS_IN_ALL = 65_536
# A key is found shared once a conversation split off under it goes on, or this many were split off (an
# app's one-shot calls under one key: while only calls beside the key's own were split off, those sent when
# it was idle joined its session, 0.68x round-robin's calls; a title asked once is one)
SHARED_AFTER = 4
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
    __slots__ = ("own", "shared", "splits")

    def __init__(self, own: int) -> None:
        self.own = own  # the first user message of the key's own conversation
        self.splits: dict[int, None] = {}  # first user messages split off, the one used longest ago first
        # whether a conversation split off went on (a side call asked once, a title, does not make it so)
        self.shared = False


class CacheKeyConversations:
    __slots__ = ("_keys", "_limit", "_splits", "found", "split")

    def __init__(self, limit: int = 65_536) -> None:
        self._keys: dict[str, _Key] = {}  # the key used longest ago first
        self._limit = limit
        self._splits = 0  # first user messages split off, over every key (`MAX_SPLITS_IN_ALL`)
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
        record, held = self._keys.get(key), known(key)
        if record is None and held:
            return key  # named by a header, or remembered before the oldest: left as it is
        if record is not None and not held and record.shared:  # a shared key whose own conversation ended
            return self._told_apart(key, record, opening(), False)
        if record is None or not held:  # a conversation takes the key (again): its own
            seen = opening()
            if seen is not None:
                self._remember(key, _Key(seen.digest))
            return key
        in_flight = busy(key)
        if not record.splits and not in_flight:
            return key
        return self._told_apart(key, record, opening(), in_flight)

    def _told_apart(self, key: str, record: _Key, seen: Opening | None, in_flight: bool) -> str:
        """A call of a key with conversations split off, or sent while a call of the key's session is in
        flight."""
        if seen is None or seen.digest == record.own:
            return key
        splits = record.splits
        if seen.digest in splits:
            del splits[seen.digest]  # (the latest used last: the oldest used goes first)
            if not seen.first and not record.shared:  # a conversation split off goes on: the key is shared
                record.shared = True
                self.found += 1
        elif not seen.first or not (in_flight or record.shared):
            # goes on from answers (the key's own conversation's, or one never told apart), or starts while
            # the key's session is idle and no conversation split off went on: the key's own starting again
            # (a compaction after a side call was taken for another conversation: the third review)
            return key
        else:
            if len(splits) >= MAX_SPLITS:
                del splits[next(iter(splits))]
                self._splits -= 1
            self._splits += 1
            if len(splits) + 1 >= SHARED_AFTER and not record.shared:  # several conversations at once
                record.shared = True
                self.found += 1
            self._keys[key] = self._keys.pop(key)  # (used last)
            while self._splits > MAX_SPLITS_IN_ALL:
                self._forget(next(iter(self._keys)))
        splits[seen.digest] = None
        self.split += 1
        return sub_session(key, seen.digest)

    def _remember(self, key: str, record: _Key) -> None:
        keys = self._keys
        if key in keys:
            self._forget(key)
        if len(keys) >= self._limit:
            self._forget(next(iter(keys)))  # the one used longest ago
        keys[key] = record

    def _forget(self, key: str) -> None:
        self._splits -= len(self._keys.pop(key).splits)
