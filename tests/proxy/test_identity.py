"""Session, tenant and agent identification from headers and body fields."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from multidict import CIMultiDict

from proxy.cache_key_conversations import CacheKeyConversations, sub_session
from proxy.identity import decode_call, identify, ownership_key
from proxy.session_chain import PrefixChains


def who(body: dict[str, object], **headers: str) -> tuple[str, str, str, bool]:
    h = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    i = identify(h, decode_call(msgspec.json.encode(body)), "rid1")
    return i.session_id, i.tenant_id, i.agent_type, i.session_inferred


def chat(*turns: tuple[str, str], **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns], **extra}


def test_header_wins_over_body() -> None:
    assert who(chat(("user", "hi"), session_id="body"), X_Session_ID="hdr")[0] == "hdr"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (chat(("user", "hi"), session_id="b1"), "b1"),
        (chat(("user", "hi"), prompt_cache_key="k1"), "k1"),
        (chat(("user", "hi"), vllm_xargs={"session_id": "x1"}), "x1"),
    ],
)
def test_body_session_fields(body: dict[str, object], expected: str) -> None:
    session, _, _, inferred = who(body)
    assert (session, inferred) == (expected, False)


def test_other_session_headers_are_understood() -> None:
    assert who(chat(("user", "hi")), x_claude_code_session_id="cc")[0] == "cc"
    assert who(chat(("user", "hi")), session_id="plain")[0] == "plain"


def test_inferred_session_is_stable_across_turns_of_one_conversation() -> None:
    turn1 = chat(("system", "you code"), ("user", "fix bug 1"))
    turn2 = chat(("system", "you code"), ("user", "fix bug 1"), ("assistant", "ok"), ("tool", "done"))
    other = chat(("system", "you code"), ("user", "fix bug 2"))
    s1, _, _, inferred = who(turn1)
    assert inferred and s1.startswith("conv-")
    assert who(turn2)[0] == s1
    assert who(other)[0] != s1


def test_an_anthropic_calls_system_prompt_is_part_of_its_conversations_opening() -> None:
    """/v1/messages puts the system prompt beside the messages: two agents differing only there (a planner
    and a reviewer given the same task) were one conversation, and one with a chat call naming none."""
    planner = {**chat(("user", "review PR 7")), "system": "you plan"}
    reviewer = {**chat(("user", "review PR 7")), "system": [{"type": "text", "text": "you review"}]}
    plain = chat(("user", "review PR 7"))
    sessions = {who(planner)[0], who(reviewer)[0], who(plain)[0]}
    assert len(sessions) == 3 and all(s.startswith("conv-") for s in sessions)
    assert who({**planner, "max_tokens": 9})[0] == who(planner)[0]  # stable across the agent's calls
    later = {**chat(("user", "review PR 7"), ("assistant", "ok"), ("user", "go")), "system": "you plan"}
    assert who(later)[0] == who(planner)[0]  # a later call no chain index knows: named by the same opening


def test_call_without_messages_or_session_is_its_own_session() -> None:
    session, _, _, inferred = who({"model": "m", "prompt": "hello"})
    assert session == "req-rid1" and inferred


def test_tenant_and_agent_type() -> None:
    _, tenant, agent, _ = who(chat(("user", "x")), X_Tenant_ID="acme", X_Agent_Type="coder")
    assert (tenant, agent) == ("acme", "coder")
    _, keyed, agent, _ = who(chat(("user", "x")), Authorization="Bearer sk-secret")
    assert keyed.startswith("key-") and "secret" not in keyed and agent == "default"
    assert who(chat(("user", "x")))[1] == "default"


def test_a_tenant_named_by_api_key_cannot_confirm_a_guessed_key() -> None:
    """The name (on the open /metrics) was a plain SHA-256 prefix of `Bearer <key>`: anyone could confirm a
    guessed key offline (vLLM's documented example key in an instant). It is keyed with a secret now."""
    keyed = who(chat(("user", "x")), Authorization="Bearer token-abc123")[1]
    assert keyed == who(chat(("user", "y")), Authorization="Bearer token-abc123")[1]  # one key, one tenant
    assert keyed != "key-" + hashlib.sha256(b"Bearer token-abc123").hexdigest()[:12]


def test_an_x_api_key_names_the_tenant_its_bearer_form_names() -> None:
    """Anthropic clients send their key as `x-api-key`: hashed like the same key sent as a bearer token, so
    one key is one tenant whichever header carries it; `Authorization`, when present, is the one read."""
    call = chat(("user", "x"))
    bearer = who(call, Authorization="Bearer sk-secret")[1]
    assert who(call, **{"x-api-key": "sk-secret"})[1] == bearer
    assert who(call, **{"x-api-key": "sk-other"})[1] not in (bearer, "default")
    assert who(call, Authorization="Bearer sk-secret", **{"x-api-key": "sk-other"})[1] == bearer


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b'{"stream": "maybe"}', b'{"model": 3}'])
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_call(body)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "You are a coder."}, {"role": "user", "content": "Fix it."}],
        [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}],
        [{"role": "user", "content": "Say hello."}],
        [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Late system prompt"}],
        [],
    ],
)
def test_the_agent_type_is_the_same_whether_or_not_the_session_was_inferred(
    messages: list[dict[str, object]],
) -> None:
    from proxy.session_chain import PrefixChains

    tools = [{"type": "function", "function": {"name": "search"}}]
    for with_tools in (False, True):
        body = {"model": "m", "messages": messages, **({"tools": tools} if with_tools else {})}
        fields = decode_call(msgspec.json.encode(body))
        inferred = identify(CIMultiDict(), fields, "r1", chains=PrefixChains())
        named = identify(CIMultiDict({"X-Session-ID": "s1"}), fields, "r2", chains=PrefixChains())
        assert named.session_id == "s1"
        assert inferred.agent_type == named.agent_type
        opens_with_system = bool(messages) and messages[0]["role"] in ("system", "developer")
        assert (inferred.agent_type == "default") == (not with_tools and not opens_with_system)


def test_a_live_session_keeps_the_agent_type_it_was_filed_under() -> None:
    """A call of a session the scheduler knows takes that session's agent type (its system prompt and tools
    are not hashed again); a header still names the type, and an unknown session is named by its prompt."""
    body = chat(("system", "a new system prompt"), ("user", "go"))
    fields = decode_call(msgspec.json.encode(body))
    first = identify(CIMultiDict(), fields, "r0")
    named_by_prompt, inferred_session = first.agent_type, first.session_id
    assert named_by_prompt.startswith("auto-") and first.session_inferred
    filed = {"s1": "auto-first", "alpha:s2": "auto-keyed", inferred_session: "auto-inferred"}
    asked: list[str] = []

    def agent_type_of(session: str) -> str | None:
        asked.append(session)
        return filed.get(session)

    def type_of(headers: dict[str, str], scope: str | None = None) -> str:
        return identify(
            CIMultiDict(headers), fields, "r1", scope=scope, agent_type_of=agent_type_of
        ).agent_type

    assert type_of({"X-Session-ID": "s1"}) == "auto-first"
    assert type_of({"X-Session-ID": "s1", "X-Agent-Type": "coder"}) == "coder"
    assert type_of({"X-Session-ID": "unknown"}) == named_by_prompt
    # a Claude Code subagent's call in the session is named by its own prompt
    assert type_of({"X-Claude-Code-Session-ID": "s1", "X-Claude-Code-Agent-ID": "a1"}) == named_by_prompt
    # with client API keys, a named session is asked for by the tenant's own id (as `_keyed` names it)
    assert type_of({"X-Session-ID": "s2"}, scope="alpha") == "auto-keyed"
    assert asked[-1] == "alpha:s2"
    # an inferred session (no id named) is asked for by its own id, which already is the tenant's
    assert type_of({}) == "auto-inferred"
    assert type_of({}, scope="alpha") != "auto-inferred"  # the tenant's opening hash: another session
    assert not asked[-1].startswith("alpha:")


def test_one_key_names_one_tenant_however_its_header_is_spelled() -> None:
    """The name hashed the header's text: `bearer k1` and `Bearer  k1` named two more tenants than
    `Bearer k1`, while the proxy's own key check (proxy/auth.py) reads all three as the key k1."""
    call = chat(("user", "x"))
    names = {who(call, Authorization=spelled)[1] for spelled in ("Bearer k1", "bearer k1", "Bearer  k1 ")}
    assert len(names) == 1 and names == {who(call, **{"x-api-key": " k1"})[1]}
    assert who(call, Authorization="Basic dTpw")[1].startswith("key-")  # another scheme: its own tenant


@pytest.mark.parametrize(
    ("stream", "expected"),
    [("yes", True), ("ON", True), ("t", True), (1.0, True), ("no", False), ("Off", False), (0.0, False)],
)
def test_stream_flags_are_read_as_vllm_reads_them(stream: object, expected: bool) -> None:
    """pydantic's lax mode (vLLM's) takes these for booleans and msgspec's loose decoding does not: the proxy
    refused with its own 400 calls a replica serves (the forty-seventh session's review)."""
    body = {"model": "m", "stream": stream, "stream_options": {"include_usage": stream}, "messages": []}
    fields = decode_call(msgspec.json.encode(body))
    assert fields.stream is expected
    assert fields.stream_options is not None and not isinstance(fields.stream_options, msgspec.UnsetType)
    assert fields.stream_options.include_usage is expected


@pytest.mark.parametrize("stream", ["maybe", 2, 0.5, [True]])
def test_a_stream_flag_vllm_refuses_is_refused(stream: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_call(msgspec.json.encode({"model": "m", "stream": stream}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"stream": "yes", "stream": false}', False),  # the last of a key given twice, as vLLM reads it
        (b'{"stream": "yes", "metadata": {"x": 1e400}}', True),  # a field the proxy does not read
    ],
)
def test_a_loose_stream_flag_is_read_in_the_one_decode(body: bytes, expected: bool) -> None:
    """The loose flags were read by decoding the body again as a whole, which refused these two (the
    forty-seventh session's review of its fix)."""
    assert decode_call(body).stream is expected


def test_the_conversations_under_one_prompt_cache_key_are_told_apart_by_the_tenants_ids() -> None:
    """With client API keys (`scope`) the key's session is the tenant's: its record and the scheduler's
    lookups use the tenant's id, and the client is told the id it sent, or `<key>~<digest>` for another
    conversation beside it. A header or a body `session_id` wins over the key, as before."""
    keys, held, busy = CacheKeyConversations(), set[str](), set[str]()

    def named(body: dict[str, object], **headers: str) -> str:
        h = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
        i = identify(
            h,
            decode_call(msgspec.json.encode(body)),
            "rid1",
            scope="key-t1",
            key_conversations=keys,
            session_known=held.__contains__,
            session_busy=busy.__contains__,
        )
        held.add(f"key-t1:{i.session_id}")
        return i.session_id

    own = chat(("system", "s"), ("user", "task A"), prompt_cache_key="app")
    other = chat(("system", "s"), ("user", "task B"), prompt_cache_key="app")
    assert named(own) == "app"
    busy.add("key-t1:app")
    split = named(other)
    assert split.startswith("app~") and len(split) == len(sub_session("app", 0))
    assert f"key-t1:{split}" in held  # the scheduler knows it as the tenant's
    assert named(other) == split and named(own) == "app"
    assert named({**other, "session_id": "mine"}) == "mine"
    assert named(other, X_Session_ID="hdr") == "hdr"
    assert keys.split == 2 and keys.found == 0  # (a conversation told apart, never going on)


def test_a_responses_turn_under_a_shared_key_follows_its_previous_response() -> None:
    """A Responses API conversation told apart under a key names its last response: its turns go to the
    session that response went to (they went back to the key's, on another replica: the fifty-second
    session's review); a response of the key's own conversation, or of no session known, is the key's."""

    chains = PrefixChains()
    split = sub_session("app", 7)
    chains.remember_response("resp-b", split)
    chains.remember_response("resp-a", "app")
    chains.remember_response("resp-other", sub_session("other-key", 7))

    def named(previous: str) -> str:
        body = {"model": "m", "input": "go on", "prompt_cache_key": "app", "previous_response_id": previous}
        return identify(
            CIMultiDict(),
            decode_call(msgspec.json.encode(body)),
            "rid1",
            chains=chains,
            key_conversations=CacheKeyConversations(),
            session_known=lambda _: True,
            session_busy=lambda _: True,
        ).session_id

    assert named("resp-b") == split
    assert named("resp-a") == named("resp-other") == named("resp-unknown") == "app"


def test_a_session_told_apart_under_a_key_named_back_is_owned_with_the_key() -> None:
    """`--workers N`: a client naming `<key>~<digest>` (the X-Session-ID it was told) is served by the
    worker of the key, where that session lives (it was another worker's: one session live twice)."""
    split = sub_session("app", 7)
    by_header = ownership_key(CIMultiDict({"X-Session-ID": split}), decode_call(b'{"model": "m"}'))
    by_key = ownership_key(CIMultiDict(), decode_call(b'{"model": "m", "prompt_cache_key": "app"}'))
    assert by_header[0] == by_key[0] == "app"
    plain = ownership_key(CIMultiDict({"X-Session-ID": "app~x"}), decode_call(b'{"model": "m"}'))
    assert plain[0] == "app~x"
