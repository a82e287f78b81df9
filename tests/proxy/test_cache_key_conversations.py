"""The conversations under one `prompt_cache_key` (proxy/cache_key_conversations.py), sans-IO."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proxy.cache_key_conversations import (
    MAX_SPLITS,
    MAX_SPLITS_IN_ALL,
    CacheKeyConversations,
    Opening,
    key_of_sub_session,
    opening_of,
    sub_session,
)
from proxy.data_structs import ChatMessage
from proxy.identity import MAX_ID_CHARS, check_id


class Scheduler:
    """The scheduler's view: sessions it holds, and those with a call in flight."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.busy: set[str] = set()


class Calls:
    """A call's opening (`opening_of`), counting how often it was asked for (a decode each)."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, digest: int | None, first: bool = True) -> Callable[[], Opening | None]:
        def read() -> Opening | None:
            self.asked += 1
            return None if digest is None else Opening(digest, first)

        return read


def session(
    keys: CacheKeyConversations, s: Scheduler, calls: Calls, digest: int | None, first: bool = True
) -> str:
    named = keys.session_for("app", calls(digest, first), s.held.__contains__, s.busy.__contains__)
    s.held.add(named)
    return named


def test_a_key_of_one_conversation_costs_no_decode_once_recorded() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"  # recorded: its first call
    for _ in range(5):  # its calls one after another, whatever they send
        assert session(keys, s, calls, 2) == "app"
    assert calls.asked == 1 and keys.found == keys.split == 0


def test_another_conversation_starting_beside_the_keys_own_gets_a_session_of_its_own() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"
    s.busy.add("app")
    assert session(keys, s, calls, 1) == "app"  # a retry or a side call repeating its first user message
    assert keys.found == 0
    other = session(keys, s, calls, 2)
    assert other == sub_session("app", 2) and keys.found == 0 and keys.split == 1
    s.busy.clear()
    assert session(keys, s, calls, 2, first=False) == other  # its later calls: it went on, the key is shared
    assert keys.found == 1
    assert session(keys, s, calls, 1, first=False) == "app"
    assert session(keys, s, calls, 3) == sub_session("app", 3)  # another's first call, the key's idle
    assert keys.found == 1 and keys.split == 3


def test_a_side_call_split_off_does_not_make_the_key_shared() -> None:
    """A conversation sending its own key asks a title once beside its call (split off), then starts again
    from a summary while its key's session is idle: still its session (the fifty-second session's third
    review: the compaction went to a session of its own for good). Under a key found shared it is told
    apart, as another conversation's first call would be."""
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"
    s.busy.add("app")
    assert session(keys, s, calls, 2) == sub_session("app", 2)  # the title, asked once
    s.busy.clear()
    assert session(keys, s, calls, 1, first=False) == "app"
    assert session(keys, s, calls, 3) == "app"  # the summary it starts again from
    assert session(keys, s, calls, 3, first=False) == "app"
    assert keys.found == 0
    s.busy.add("app")
    assert session(keys, s, calls, 4) == sub_session("app", 4)  # another conversation beside it
    assert session(keys, s, calls, 4, first=False) == sub_session("app", 4)  # goes on: shared
    s.busy.clear()
    assert session(keys, s, calls, 5) == sub_session("app", 5)


def test_a_call_going_on_from_answers_is_never_split_off() -> None:
    """The key's own conversation whose first user message changed (a sliding window, `cache_control`
    moved, a router's call first under the key): its calls beside one another stay in the key's session, and
    so do those of a shared key's conversation never told apart."""
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"  # a router's call, say
    s.busy.add("app")
    for digest in (5, 6, 7):  # the window slides each turn; two calls at once each time
        assert session(keys, s, calls, digest, first=False) == "app"
    assert keys.found == keys.split == 0
    assert session(keys, s, calls, 8) == sub_session("app", 8)  # a new conversation beside it
    s.busy.clear()
    assert session(keys, s, calls, 9, first=False) == "app"


def test_an_unreadable_conversation_stays_in_the_keys_session() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"
    s.busy.add("app")
    assert session(keys, s, calls, None) == "app"  # a /v1/completions call, or no messages


def test_a_session_the_key_did_not_record_is_left_as_it_is() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    s.held.add("app")  # a header named it
    s.busy.add("app")
    assert session(keys, s, calls, 7) == "app"
    assert calls.asked == 0 and len(keys) == 0


def test_a_key_used_again_after_its_conversation_ended_names_the_next_one() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    assert session(keys, s, calls, 1) == "app"
    s.held.clear()  # the session ended and was forgotten
    assert session(keys, s, calls, 2) == "app"  # another conversation takes the key: recorded anew
    s.busy.add("app")
    assert session(keys, s, calls, 2) == "app"
    assert session(keys, s, calls, 1) == sub_session("app", 1)


def test_a_shared_key_whose_own_conversation_ended_still_tells_them_apart() -> None:
    keys, s, calls = CacheKeyConversations(), Scheduler(), Calls()
    session(keys, s, calls, 1)
    s.busy.add("app")
    session(keys, s, calls, 2)
    session(keys, s, calls, 2, first=False)  # it went on: the key is shared
    s.held.clear()
    s.busy.clear()
    assert session(keys, s, calls, 2, first=False) == sub_session("app", 2)
    assert session(keys, s, calls, 1, first=False) == "app"
    assert session(keys, s, calls, 3) == sub_session("app", 3)


def test_the_splits_over_every_key_are_bounded() -> None:
    keys, always = CacheKeyConversations(), (lambda _: True)
    for key in range(MAX_SPLITS_IN_ALL // MAX_SPLITS + 2):
        keys.session_for(f"k{key}", Calls()(0), lambda _: False, always)
        for digest in range(1, MAX_SPLITS + 1):
            keys.session_for(f"k{key}", Calls()(digest), always, always)
    assert len(keys) == MAX_SPLITS_IN_ALL // MAX_SPLITS  # the keys split off from longest ago went whole
    assert keys.session_for("k0", Calls()(1, first=False), always, always) == "k0"
    last = f"k{MAX_SPLITS_IN_ALL // MAX_SPLITS + 1}"
    assert keys.session_for(last, Calls()(1, first=False), always, always) == sub_session(last, 1)


def test_the_oldest_key_goes_first_and_a_keys_oldest_split() -> None:
    keys = CacheKeyConversations(limit=2)
    for key in ("a", "b", "c"):
        keys.session_for(key, lambda: Opening(1, True), lambda _: False, lambda _: False)
    assert len(keys) == 2
    # "a" was forgotten: a session of that id now is left as it is
    assert keys.session_for("a", lambda: Opening(2, True), lambda _: True, lambda _: True) == "a"
    assert keys.session_for("c", lambda: Opening(2, True), lambda _: True, lambda _: True) == sub_session(
        "c", 2
    )
    always, calls = (lambda _: True), Calls()
    for digest in range(3, 4 + MAX_SPLITS):  # (2 was split off first)
        keys.session_for("c", calls(digest), always, always)
        if digest == 10:  # the conversation split off at 3 goes on: used lately, it stays
            keys.session_for("c", calls(3, first=False), always, always)
    # the two used longest ago went: their later calls fall back to the key's session
    assert keys.session_for("c", calls(2, first=False), always, always) == "c"
    assert keys.session_for("c", calls(4, first=False), always, always) == "c"
    assert keys.session_for("c", calls(3, first=False), always, always) == sub_session("c", 3)


def test_a_sub_session_names_its_key() -> None:
    assert key_of_sub_session(sub_session("app", 5)) == "app"
    assert key_of_sub_session(sub_session("tenant:a~b", 5)) == "tenant:a~b"
    for other in ("app", "app~", "~0123456789abcdef", "app~0123456789abcdeg", "app~0123456789ABCDEF"):
        assert key_of_sub_session(other) is None
    # two long keys cut alike still name two sessions
    assert sub_session("k" * 300 + "a", 5) != sub_session("k" * 300 + "b", 5)


def test_a_sub_sessions_id_is_one_a_client_may_send_back() -> None:
    longest = "k" * MAX_ID_CHARS
    for key in ("app", longest, "tenant-1:" + "x" * 240):
        named = sub_session(key, 2**64 - 1)
        assert check_id("X-Session-ID", named) == named
        assert key_of_sub_session(named) == key[: len(named) - 17]


def message(role: str, content: str) -> ChatMessage:
    return ChatMessage(role, msgspec.Raw(msgspec.json.encode(content)))


def test_the_opening_is_the_first_user_message_not_the_system_prompt() -> None:
    task = message("user", "fix the build")
    at_nine = [message("system", "It is 9:00"), task]
    at_ten = [message("system", "It is 10:00"), task, message("assistant", "ok"), message("user", "go on")]
    nine, ten = opening_of(at_nine), opening_of(at_ten)
    assert nine is not None and ten is not None
    assert nine.digest == ten.digest and nine.first and not ten.first
    another = opening_of([message("system", "It is 9:00"), message("user", "another task")])
    assert another is not None and another.digest != nine.digest
    no_user, system_alone = (
        opening_of([message("system", "a"), message("assistant", "b")]),
        opening_of([message("system", "a")]),
    )
    assert no_user is not None and system_alone is not None
    assert no_user == Opening(system_alone.digest, False)
    part = {"type": "text", "text": "fix the build"}
    marked = ChatMessage("user", msgspec.Raw(msgspec.json.encode([{**part, "cache_control": {"type": "x"}}])))
    plain, cached = opening_of([message("user", "fix the build")]), opening_of([marked])
    assert plain is not None and cached is not None
    assert plain.digest == cached.digest  # its text, however sent
    tool = opening_of([message("user", "a"), message("tool", "done")])
    assert tool is not None and not tool.first
    assert opening_of([]) is None
