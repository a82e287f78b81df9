"""`prompt_cache_key` values that name no conversation, found as calls arrive (proxy/identity.py reads them).

Sans-IO: a bounded set of session ids and the test that adds to it; the scheduler's view of a session comes in
as a function."""

from __future__ import annotations

from collections.abc import Callable


class SharedCacheKeys:
    """`prompt_cache_key` values that name no conversation: sent with the calls of several at once.

    OpenAI's key groups calls that share a prefix: many agents send one per conversation (their thread or
    session id), other apps one for a whole app or user. Read as a session, one key for every call of an app
    bound them all to one replica while another idled (0.61x round-robin's calls on two: the forty-eighth
    session's review). An agent's calls follow one another, so a key is taken as shared once a call names it
    while the session it names still has a call in flight (`busy`); from then on its calls are identified as
    if it were absent (the next source, else inferred from the conversation). The session it named is
    dissolved (`on_found`). Remembered for the `limit` keys found last (the scheduler's ids: with client API
    keys, the tenant's)."""

    __slots__ = ("_keys", "_limit", "found", "on_found")

    def __init__(self, limit: int = 4096, on_found: Callable[[str], None] | None = None) -> None:
        self._keys: dict[str, None] = {}
        self._limit = limit
        # told each key found shared (the scheduler dissolves the session it named: `session_dissolved`)
        self.on_found = on_found
        self.found = 0  # keys found shared since the start (`/saga/v1/state`)

    def shared(self, session_id: str, busy: Callable[[str], bool]) -> bool:
        keys = self._keys
        if session_id in keys:
            return True
        if not busy(session_id):
            return False
        if len(keys) >= self._limit:
            del keys[next(iter(keys))]  # the oldest found
        keys[session_id] = None
        self.found += 1
        if self.on_found is not None:
            self.on_found(session_id)
        return True

    def __len__(self) -> int:
        return len(self._keys)
