"""The conversations under one `prompt_cache_key`, told apart by their first user message (proxy/identity.py
reads them).

OpenAI's key groups calls that share a prefix: many agents send one per conversation (their thread or session
id), other apps one for a whole app or user. The proxy reads the key as a session, and a session is one
workflow: twelve agents sharing one key were admitted, retained and bound as one conversation (20.4-20.5 s
mean task time against 16.7-16.8 s with a key each or none: the fifty-first session).

Contract (sans-IO; the scheduler's view comes in as functions): `session_for(key, opening, known, busy)`
returns the session a call naming `key` (the scheduler's id of it) belongs to. The conversation that first
names a key the scheduler does not hold is the key's own: its first user message (`opening_digest`) is
recorded and its calls are the key's session, as before. A call whose first user message differs is another
conversation's and goes to a session of its own, `key~<digest>` (`sub_session`). That is looked at only
when it can matter, so a conversation sending a key of its own, its calls one after another, costs no decode:
while a call of the key's session is in flight (`busy`), or once the key has been found shared. A retry, an
interrupted stream's next call or a side call of the key's own conversation repeats its first user message
(a history grows at its end) and stays in the key's session; nothing is ever dissolved (the forty-ninth
session's rule took a key found busy as naming no session, and such calls cost conversations their session
for good). A session the key names that the proxy did not record (a header named it) is left as it is.
At most `limit` keys are remembered, the oldest first out."""

from __future__ import annotations

from collections.abc import Callable

from xxhash import xxh3_64_intdigest

from proxy.data_structs import ChatMessage

# A sub-session's id: the key (cut to leave room) and the digest, within the ids clients may send back
# (proxy/identity.py MAX_ID_CHARS).
_DIGEST_CHARS = 16
_SUB_ID_CHARS = 256


def opening_digest(messages: list[ChatMessage]) -> int | None:
    """The digest of a conversation's first user message as sent (of its first message when none is a
    user's); None for no messages. Not its system prompt: agents rewrite a clock or plan line there every
    turn."""
    if not messages:
        return None
    first = messages[0]
    for message in messages:
        if message.role == "user":
            first = message
            break
    return xxh3_64_intdigest(bytes(first.content))


def sub_session(key: str, digest: int) -> str:
    return f"{key[: _SUB_ID_CHARS - _DIGEST_CHARS - 1]}~{digest:016x}"


class CacheKeyConversations:
    __slots__ = ("_keys", "_limit", "found", "split")

    def __init__(self, limit: int = 65_536) -> None:
        # key -> (its own conversation's digest, whether another conversation was found under it)
        self._keys: dict[str, tuple[int, bool]] = {}
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
        opening: Callable[[], int | None],
        known: Callable[[str], bool],
        busy: Callable[[str], bool],
    ) -> str:
        """The session of a call naming `key`; `opening()` its `opening_digest` (decoded only when needed),
        `known(id)` whether the scheduler holds a session of that id, `busy(id)` whether one of its calls is
        waiting or running."""
        keys = self._keys
        record = keys.get(key)
        if record is None or not known(key):
            if record is not None and record[1]:  # a shared key whose own conversation ended
                return self._shared_call(key, record[0], opening())
            if record is None and known(key):
                return key  # named by a header, or recorded before the oldest: left as it is
            digest = opening()
            if digest is not None:
                self._remember(key, (digest, False))
            return key
        own, found = record
        if not found and not busy(key):
            return key
        return self._shared_call(key, own, opening())

    def _shared_call(self, key: str, own: int, digest: int | None) -> str:
        if digest is None or digest == own:
            return key
        record = self._keys.get(key)
        if record is not None and not record[1]:
            self._keys[key] = (own, True)
            self.found += 1
        self.split += 1
        return sub_session(key, digest)

    def _remember(self, key: str, record: tuple[int, bool]) -> None:
        keys = self._keys
        keys.pop(key, None)
        if len(keys) >= self._limit:
            del keys[next(iter(keys))]  # the oldest remembered
        keys[key] = record
