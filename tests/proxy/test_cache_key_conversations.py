"""The conversations under one `prompt_cache_key` (proxy/cache_key_conversations.py), sans-IO."""

from __future__ import annotations

import msgspec

from proxy.cache_key_conversations import CacheKeyConversations, opening_digest, sub_session
from proxy.data_structs import ChatMessage
from proxy.identity import MAX_ID_CHARS, check_id


class Scheduler:
    """The scheduler's view: sessions it holds, and those with a call in flight."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.busy: set[str] = set()


class Opening:
    """A call's first-user-message digest, counting how often it was asked for (a decode each)."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, digest: int | None) -> object:
        def read() -> int | None:
            self.asked += 1
            return digest

        return read


def session(keys: CacheKeyConversations, s: Scheduler, opening: Opening, digest: int | None) -> str:
    read = opening(digest)
    assert callable(read)
    named = keys.session_for("app", read, s.held.__contains__, s.busy.__contains__)
    s.held.add(named)
    return named


def test_a_key_of_one_conversation_costs_no_decode_once_recorded() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    assert session(keys, s, opening, 1) == "app"  # recorded: its first call
    for _ in range(5):  # its calls one after another, whatever they send
        assert session(keys, s, opening, 2) == "app"
    assert opening.asked == 1 and keys.found == keys.split == 0


def test_another_conversation_beside_the_keys_own_gets_a_session_of_its_own() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    assert session(keys, s, opening, 1) == "app"
    s.busy.add("app")
    assert session(keys, s, opening, 1) == "app"  # a retry or a side call repeating its first user message
    assert keys.found == 0
    other = session(keys, s, opening, 2)
    assert other == sub_session("app", 2) and keys.found == 1 and keys.split == 1
    s.busy.clear()  # found shared: told apart with no call beside them too
    assert session(keys, s, opening, 2) == other
    assert session(keys, s, opening, 1) == "app"
    assert session(keys, s, opening, 3) == sub_session("app", 3)
    assert keys.found == 1 and keys.split == 3


def test_an_unreadable_conversation_stays_in_the_keys_session() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    assert session(keys, s, opening, 1) == "app"
    s.busy.add("app")
    assert session(keys, s, opening, None) == "app"  # a /v1/completions call, or no messages


def test_a_session_the_key_did_not_record_is_left_as_it_is() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    s.held.add("app")  # a header named it
    s.busy.add("app")
    assert session(keys, s, opening, 7) == "app"
    assert opening.asked == 0 and len(keys) == 0


def test_a_key_used_again_after_its_conversation_ended_names_the_next_one() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    assert session(keys, s, opening, 1) == "app"
    s.held.clear()  # the session ended and was forgotten
    assert session(keys, s, opening, 2) == "app"  # another conversation takes the key: recorded anew
    s.busy.add("app")
    assert session(keys, s, opening, 2) == "app"
    assert session(keys, s, opening, 1) == sub_session("app", 1)


def test_a_shared_key_whose_own_conversation_ended_still_tells_them_apart() -> None:
    keys, s, opening = CacheKeyConversations(), Scheduler(), Opening()
    session(keys, s, opening, 1)
    s.busy.add("app")
    session(keys, s, opening, 2)
    s.held.clear()
    s.busy.clear()
    assert session(keys, s, opening, 2) == sub_session("app", 2)
    assert session(keys, s, opening, 1) == "app"


def test_the_oldest_key_goes_first() -> None:
    keys = CacheKeyConversations(limit=2)
    for key in ("a", "b", "c"):
        keys.session_for(key, lambda: 1, lambda _: False, lambda _: False)
    assert len(keys) == 2
    # "a" was forgotten: a session of that id now is left as it is
    assert keys.session_for("a", lambda: 2, lambda _: True, lambda _: True) == "a"
    assert keys.session_for("c", lambda: 2, lambda _: True, lambda _: True) == sub_session("c", 2)


def test_a_sub_sessions_id_is_one_a_client_may_send_back() -> None:
    longest = "k" * MAX_ID_CHARS
    for key in ("app", longest, "tenant-1:" + "x" * 240):
        named = sub_session(key, 2**64 - 1)
        assert check_id("X-Session-ID", named) == named
        assert named.endswith("~ffffffffffffffff")


def message(role: str, content: str) -> ChatMessage:
    return ChatMessage(role, msgspec.Raw(msgspec.json.encode(content)))


def test_the_opening_is_the_first_user_message_not_the_system_prompt() -> None:
    task = message("user", "fix the build")
    at_nine = [message("system", "It is 9:00"), task]
    at_ten = [message("system", "It is 10:00"), task, message("assistant", "ok"), message("user", "go on")]
    assert opening_digest(at_nine) == opening_digest(at_ten) is not None
    another = [message("system", "It is 9:00"), message("user", "another task")]
    assert opening_digest(another) != opening_digest(at_nine)
    no_user = [message("system", "a"), message("assistant", "b")]
    assert opening_digest(no_user) == opening_digest([message("system", "a")])
    assert opening_digest([]) is None
