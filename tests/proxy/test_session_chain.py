"""Identity rules: value checks, and session inference by prefix chaining."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from xxhash import xxh3_128_digest

from proxy.identity import MAX_ID_CHARS, IdentityError, check_id, decode_call, identify, ownership_key
from proxy.session_chain import (
    MAX_CHAINED_MESSAGES,
    MAX_TOOL_ANSWER_LOOKUPS,
    Answer,
    PrefixChains,
    answer_key,
    answer_keys,
    chain_of,
    conversation_chain,
    decode_messages,
)

SYSTEM = {"role": "system", "content": "You are a coding agent."}
TASK = {"role": "user", "content": "Fix the failing test."}


def who(messages: list[dict[str, Any]], chains: PrefixChains, rid: str) -> tuple[str, bytes | None]:
    body = msgspec.json.encode({"model": "m", "messages": messages})
    identity = identify(CIMultiDict(), decode_call(body), rid, chains=chains)
    assert identity.session_inferred
    return identity.session_id, identity.prompt_chain


def assistant(text: str, calls: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
    return message


def test_a_call_extending_an_earlier_prompt_and_answer_joins_its_session() -> None:
    chains = PrefixChains()
    turn1 = [SYSTEM, TASK]
    session, chain = who(turn1, chains, "r1")
    assert chain is not None
    answer = Answer("", (("run_tests", '{"path": "."}'),))
    chains.remember(chain, answer, session)
    turn2 = [*turn1, assistant("", answer.tool_calls), {"role": "tool", "content": "3 failed"}]
    assert who(turn2, chains, "r2")[0] == session


def test_two_agents_with_the_same_opening_stay_apart() -> None:
    chains = PrefixChains()
    a_session, a_chain = who([SYSTEM, TASK], chains, "ra")
    assert a_chain is not None
    chains.remember(a_chain, Answer("look at test_a"), a_session)
    b_session, b_chain = who([SYSTEM, TASK], chains, "rb")
    assert b_chain is not None and b_session != a_session
    chains.remember(b_chain, Answer("look at test_b"), b_session)
    a2 = [SYSTEM, TASK, assistant("look at test_a"), {"role": "user", "content": "go on"}]
    b2 = [SYSTEM, TASK, assistant("look at test_b"), {"role": "user", "content": "go on"}]
    assert who(a2, chains, "ra2")[0] == a_session
    assert who(b2, chains, "rb2")[0] == b_session


def test_an_answer_re_encoded_by_the_client_still_continues_its_session() -> None:
    """Assistant messages are hashed as the proxy read the answer (its text), however the client encodes
    them again (escapes, content parts); the client's own messages as it sent them, in the same encoding
    on every call (here Python's json with its default ASCII escapes).
    Two agents share the opening, so only the chain tells the second's continuation from the first's."""
    chains = PrefixChains()
    opening = [SYSTEM, {"role": "user", "content": "Réparer le test échoué."}]
    body = json.dumps({"model": "m", "messages": opening}).encode()  # \u00e9 escapes
    first = identify(CIMultiDict(), decode_call(body), "r1", chains=chains)
    assert first.prompt_chain is not None
    chains.remember(first.prompt_chain, Answer("Je lis le test."), first.session_id)
    second = identify(CIMultiDict(), decode_call(body), "r2", chains=chains)
    assert second.prompt_chain is not None and second.session_id != first.session_id
    chains.remember(second.prompt_chain, Answer("Je vérifie d'abord le test."), second.session_id)
    for answer_as_sent in (
        "Je vérifie d'abord le test.",
        [{"type": "text", "text": "Je vérifie d'abord "}, {"type": "text", "text": "le test."}],
    ):
        answer = {"role": "assistant", "content": answer_as_sent}
        turn2 = [*opening, answer, {"role": "tool", "content": "ok"}]
        body2 = json.dumps({"model": "m", "messages": turn2}).encode()
        third = identify(CIMultiDict(), decode_call(body2), "r3", chains=chains)
        assert third.session_id == second.session_id


def _rebuilt(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message as a LangChain-style client sends it back: the arguments it was given parsed
    and written again with Python's json (", " and ": " separators, ASCII escapes)."""
    calls = [
        {**c, "function": {**c["function"], "arguments": json.dumps(json.loads(c["function"]["arguments"]))}}
        for c in message.get("tool_calls", ())
    ]
    return {**message, "tool_calls": calls} if calls else message


@pytest.mark.parametrize("scope", [None, "alpha"])
def test_tool_arguments_rebuilt_by_the_client_still_continue_their_session(scope: str | None) -> None:
    """A client that parses each tool call's arguments and writes them again (compact replica output,
    non-ASCII text, a number written another way) continues its session on every call, the earlier rebuilt
    calls of its history included; two agents sharing the opening whose calls differ only in their
    arguments stay apart. Before the fix the second call fell back to the opening, which the other agent
    held."""
    chains = PrefixChains()

    def call(messages: list[dict[str, Any]], rid: str) -> tuple[str, bytes | None]:
        body = json.dumps({"model": "m", "messages": messages}).encode()
        identity = identify(CIMultiDict(), decode_call(body), rid, chains=chains, scope=scope)
        return identity.session_id, identity.prompt_chain

    conversations: dict[str, list[dict[str, Any]]] = {}
    sessions: dict[str, str] = {}
    for agent in ("a", "b"):
        sessions[agent], chain = call([SYSTEM, TASK], f"r-{agent}0")
        assert chain is not None
        replica_args = '{"path":"src/caf\u00e9.py","depth":1.50,"note":"%s"}' % ("é" + agent)
        answer = Answer("", (("read_file", replica_args),))
        chains.remember(chain, answer, sessions[agent])
        conversations[agent] = [SYSTEM, TASK, _rebuilt(assistant("", answer.tool_calls))]
    assert sessions["a"] != sessions["b"]
    for turn in range(1, 4):
        for agent in ("a", "b"):
            result = {"role": "tool", "tool_call_id": "call_0", "content": f"{turn}"}
            messages = [*conversations[agent], result]
            session, chain = call(messages, f"r-{agent}{turn}")
            assert session == sessions[agent]
            assert chain is not None
            answer = Answer("", (("edit", f'{{"line": {turn}, "text": "\u00fc{agent}"}}'),))
            chains.remember(chain, answer, session)
            conversations[agent] = [*messages, _rebuilt(assistant("", answer.tool_calls))]


def test_an_answers_key_reads_its_arguments_as_json_values() -> None:
    """Arguments that are one JSON value however written key alike; other values, arguments that are not
    JSON (kept as sent) and another tool name do not."""
    chain = conversation_chain(msgspec.json.encode([SYSTEM, TASK]))
    assert chain is not None
    prompt = chain[0][-1]

    def key(name: str, arguments: str) -> bytes:
        return answer_key(prompt, Answer("", ((name, arguments),)))

    same = key("f", '{"a": [1, 2.0], "b": "\u00e9"}')
    assert key("f", '{"a":[1,2.00],"b":"é"}') == same == key("f", ' {"a":[1,2e0],"b":"x","b":"é"} ')
    assert key("f", '{"b": "é", "a": [1, 2.0]}') != same  # another order is another text the model wrote
    assert key("f", '{"a": [1, 2.5], "b": "é"}') != same
    assert key("g", '{"a": [1, 2.0], "b": "é"}') != same
    assert key("f", '{"a": 1') != key("f", '{"a":1')  # not JSON: as sent
    assert key("f", "[" * 5000 + "]" * 5000) != key("f", "[]")


def test_a_conversations_answer_keys_come_latest_first_and_bounded() -> None:
    """`answer_keys` gives each assistant message's key, latest first: a text answer's is its chain hash, a
    tool call's the key `remember` stores for it; `limit` keeps the latest; past MAX_TOOL_ANSWER_LOOKUPS
    answers with tool calls it stops (each decodes its arguments)."""
    n = 2 * MAX_TOOL_ANSWER_LOOKUPS + 10
    messages: list[dict[str, Any]] = [SYSTEM, TASK]
    for i in range(n):
        calls = (("read", json.dumps({"i": i})),) if i % 2 else ()
        messages += [assistant(f"step {i}", calls), {"role": "tool", "content": str(i)}]
    decoded = decode_messages(msgspec.json.encode(messages))
    assert decoded is not None
    chain, assistants = chain_of(decoded)
    keys = list(answer_keys(chain, assistants, decoded, b""))
    expected = [
        answer_key(chain[a - 1], Answer(f"step {i}", (("read", json.dumps({"i": i})),) if i % 2 else ()))
        for i, a in reversed(list(enumerate(assistants)))
    ]
    with_calls = [k for k, i in zip(expected, reversed(range(n)), strict=True) if i % 2]
    cut = expected.index(with_calls[MAX_TOOL_ANSWER_LOOKUPS])
    assert keys == expected[:cut]
    assert list(answer_keys(chain, assistants, decoded, b"", 3)) == expected[:3]
    assert expected[1] == chain[assistants[-2]]  # a text answer is keyed by its own chain hash


def test_a_tenants_chains_are_sha256_and_keyless_chains_xxh3() -> None:
    """Without client API keys a conversation's chain is XXH3-128 (16 bytes a link); a tenant's (keys) is
    SHA-256 from its seed (32 bytes), and its conversations are still followed from call to call."""
    body = msgspec.json.encode({"model": "m", "messages": [SYSTEM, TASK]})
    keyless = identify(CIMultiDict(), decode_call(body), "r0", chains=PrefixChains())
    first_link = msgspec.json.encode(("system", SYSTEM["content"], ()))
    task_message = msgspec.json.encode(("user", TASK["content"], ()))
    assert keyless.prompt_chain == xxh3_128_digest(xxh3_128_digest(first_link) + task_message)
    chains = PrefixChains()
    first = identify(CIMultiDict(), decode_call(body), "r1", chains=chains, scope="alpha")
    assert first.prompt_chain is not None and len(first.prompt_chain) == 32
    seed = hashlib.sha256(b"alpha").digest()
    system_link = hashlib.sha256(seed + first_link).digest()
    task_link = hashlib.sha256(system_link + task_message).digest()
    assert first.prompt_chain == task_link
    chains.remember(first.prompt_chain, Answer("look at test_a"), first.session_id)
    turn2 = [SYSTEM, TASK, assistant("look at test_a"), {"role": "tool", "content": "1 failed"}]
    body2 = msgspec.json.encode({"model": "m", "messages": turn2})
    second = identify(CIMultiDict(), decode_call(body2), "r2", chains=chains, scope="alpha")
    assert second.session_id == first.session_id
    other = identify(CIMultiDict(), decode_call(body2), "r3", chains=chains, scope="beta")
    assert other.session_id != first.session_id


def test_the_latest_matching_turn_wins_and_content_parts_match_plain_text() -> None:
    chains = PrefixChains()
    session, chain = who([SYSTEM, TASK], chains, "r1")
    assert chain is not None
    chains.remember(chain, Answer("step one"), session)
    pieces = [{"type": "text", "text": "step "}, {"type": "text", "text": "one"}]
    parts = {"role": "assistant", "content": pieces}
    turn2 = [SYSTEM, TASK, parts, {"role": "user", "content": "next"}]
    assert who(turn2, chains, "r2")[0] == session


def test_the_index_is_bounded_and_sessions_can_be_forgotten() -> None:
    chains = PrefixChains(max_entries=2)
    for i in range(3):
        linked = conversation_chain(msgspec.json.encode([{"role": "user", "content": str(i)}]))
        assert linked is not None
        chains.remember(linked[0][-1], Answer(str(i)), f"s{i}")
    assert len(chains) == 2 and not chains.knows("s0") and chains.knows("s2")
    chains.forget_session("s2")
    assert len(chains) == 1 and not chains.knows("s2")


def test_without_an_index_the_opening_names_the_session() -> None:
    body = msgspec.json.encode({"messages": [SYSTEM, TASK]})
    identity = identify(CIMultiDict(), decode_call(body), "r1")
    assert identity.session_id.startswith("conv-") and identity.prompt_chain is None


@pytest.mark.parametrize("seen_first", [False, True])
def test_a_conversation_past_the_chain_bound_is_named_by_its_opening(seen_first: bool) -> None:
    """1.6M one-word messages cost ~1 s of the loop to chain: past the bound the opening names the session
    and nothing is chained or remembered; at the bound the conversation still chains."""
    chains = PrefixChains()
    for count, chained in ((MAX_CHAINED_MESSAGES, True), (MAX_CHAINED_MESSAGES + 1, False)):
        turns = [assistant(str(i)) if i % 2 else {"role": "user", "content": "go"} for i in range(count - 1)]
        fields = decode_call(msgspec.json.encode({"model": "m", "messages": [SYSTEM, *turns]}))
        seen = ownership_key(CIMultiDict(), fields)[1] if seen_first else None
        identity = identify(CIMultiDict(), fields, "r1", chains=chains, seen=seen)
        assert identity.session_inferred and identity.session_id.startswith("conv-")
        assert (identity.prompt_chain is not None) is chained
        if seen is not None:
            assert (len(seen.chain) == count) is chained


@pytest.mark.parametrize(
    "value",
    ["a\r\nb", "a\nb", "a\rb", "tab\there", "", " lead", "trail ", "é", "x" * (MAX_ID_CHARS + 1), "\x00"],
)
def test_invalid_identity_values_are_refused_without_quoting_them(value: str) -> None:
    with pytest.raises(IdentityError) as e:
        check_id("session_id", value)
    assert e.value.param == "session_id"
    if len(value.strip()) > 4:
        assert value not in e.value.message


@pytest.mark.parametrize(
    "value", ["abc", "550e8400-e29b-41d4-a716-446655440000", "user:42/task#7", "a b", "x" * MAX_ID_CHARS]
)
def test_valid_identity_values_pass(value: str) -> None:
    assert check_id("session_id", value) == value


def test_bad_header_values_name_the_header() -> None:
    body = decode_call(b'{"messages": []}')
    with pytest.raises(IdentityError) as e:
        identify(CIMultiDict({"X-Tenant-ID": "x" * 1000}), body, "r1")
    assert e.value.param == "x-tenant-id"


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60)
    | st.sampled_from(
        ["", "see src/app.py", "a/b\u2028\u2029\x7f<&>", 'say "hi"\\n\b\f\t\r\x00\x1f', "\\u00e9"]
    ),
    st.sampled_from(["msgspec", "stringify", "ascii", "parts", "slash", "null"]),
)
def test_an_answer_matches_its_key_however_the_client_encodes_it(text: str, encoding: str) -> None:
    """The chain's link through an assistant message equals the key of the answer the proxy read, whether
    the client sends the text as msgspec or JSON.stringify would, with ASCII escapes, with "/" escaped, as
    content parts, or (no text) as null; a different text does not match."""
    opening = msgspec.json.encode([SYSTEM, TASK])
    prompt = conversation_chain(opening)
    assert prompt is not None
    content: Any = [{"type": "text", "text": text[:3]}, {"type": "text", "text": text[3:]}]
    if encoding == "null" and text:
        encoding = "parts"
    sent = {
        "msgspec": msgspec.json.encode(text),
        "stringify": json.dumps(text, ensure_ascii=False).encode(),
        "ascii": json.dumps(text).encode(),
        "parts": json.dumps(content).encode(),
        "slash": json.dumps(text).replace("/", "\\/").encode(),
        "null": b"null",
    }[encoding]
    turn2 = b"[" + opening[1:-1] + b',{"role":"assistant","content":' + sent + b"}]"
    linked = conversation_chain(turn2)
    assert linked is not None and linked[1] == [2]
    assert linked[0][2] == answer_key(prompt[0][-1], Answer(text))
    assert linked[0][2] != answer_key(prompt[0][-1], Answer(text + "."))


@pytest.mark.parametrize(
    "content",
    [b"[" * 900 + b"]" * 900, b'{"a":' * 900 + b"1" + b"}" * 900, b"1e999", b"-1e999", b"true", b"{}"],
)
def test_an_answer_of_any_json_shape_chains_without_error(content: bytes) -> None:
    """An assistant message's content is decoded to infer the session: nesting as deep as the call's decode
    lets through, non-finite numbers and values that are no text chain as no text, and the call continues."""
    body = b'{"messages":[{"role":"user","content":"go"},{"role":"assistant","content":' + content + b"}]}"
    chains = PrefixChains()
    first = identify(
        CIMultiDict(), decode_call(b'{"messages":[{"role":"user","content":"go"}]}'), "r1", chains=chains
    )
    assert first.prompt_chain is not None
    chains.remember(first.prompt_chain, Answer(""), first.session_id)
    assert identify(CIMultiDict(), decode_call(body), "r2", chains=chains).session_id == first.session_id


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["remember", "find", "forget"]), st.integers(0, 11), st.integers(0, 3)),
        max_size=60,
    )
)
def test_the_index_matches_a_plain_lru_of_keys_through_evictions_remaps_and_ends(
    ops: list[tuple[str, int, int]],
) -> None:
    """Ending a session reads its own keys only (it scanned the whole index, ~9 ms at 100,000 keys): the
    per-session bookkeeping must follow every eviction, remap and end exactly as a plain LRU of keys would."""
    chains = PrefixChains(max_entries=5)
    model: dict[bytes, str] = {}  # insertion order is the LRU order
    prompts = [xxh3_128_digest(str(i).encode()) for i in range(12)]
    keys = [answer_key(p, Answer("a")) for p in prompts]
    for op, k, s in ops:
        session = f"s{s}"
        if op == "remember":
            chains.remember(prompts[k], Answer("a"), session)
            model.pop(keys[k], None)
            model[keys[k]] = session
            while len(model) > 5:
                del model[next(iter(model))]
        elif op == "find":
            found = chains.find([keys[k]])
            assert found == model.get(keys[k])
            if found is not None:
                model[keys[k]] = model.pop(keys[k])
        else:
            chains.forget_session(session)
            for key in [key for key, owner in model.items() if owner == session]:
                del model[key]
        assert len(chains) == len(model)
        for i in range(4):
            assert chains.knows(f"s{i}") == (f"s{i}" in model.values())


def test_an_index_split_into_shards_keeps_the_newest_keys_and_ends_sessions_as_a_whole_one_does() -> None:
    """Past predictor/sharded.py's SPLIT_AT the index is split (a flood of one-call conversations rebuilt the
    whole table in one step); evictions take the shards' oldest in turn, so the newest keys stay, and a
    session's bookkeeping follows its keys out."""
    chains = PrefixChains(max_entries=20_000)
    prompts = [xxh3_128_digest(b"%d" % i) for i in range(30_000)]
    for i, prompt in enumerate(prompts):
        chains.remember(prompt, Answer("a"), f"s{i}")
    assert len(chains) == 20_000
    found = [chains.find([answer_key(p, Answer("a"))]) for p in prompts]
    assert found[15_000:] == [f"s{i}" for i in range(15_000, 30_000)]  # the newest half: all kept
    assert sum(f is not None for f in found) == 20_000
    assert all(chains.knows(f"s{i}") == (f is not None) for i, f in enumerate(found))
    chains.forget_session("s29999")
    assert len(chains) == 19_999 and chains.find([answer_key(prompts[-1], Answer("a"))]) is None


def responses_call(
    items: list[dict[str, Any]] | str, chains: PrefixChains, rid: str
) -> tuple[str, bytes | None]:
    body = msgspec.json.encode({"model": "m", "instructions": "You are a coding agent.", "input": items})
    identity = identify(CIMultiDict(), decode_call(body), rid, chains=chains)
    assert identity.session_inferred
    return identity.session_id, identity.prompt_chain


def test_a_stateless_responses_conversation_chains_as_a_chat_one_does() -> None:
    """A Responses API answer's output items, sent back in the next call's `input` (with their ids, a
    reasoning item between them), continue the session: its text and function calls read from the answer
    (`output_answer`) key it as `response_conversation` reads them back; a string `input` opens one."""
    from proxy.sse_scan import read_answer

    chains = PrefixChains()
    first, prompt_chain = responses_call("Fix the failing test.", chains, "r1")
    assert prompt_chain is not None
    output: list[dict[str, Any]] = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Running the tests.", "annotations": []}],
        },
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "run", "arguments": '{"a": 1}'},
    ]
    _, said = read_answer(msgspec.json.encode({"output": output, "status": "completed"}))
    assert said == Answer("Running the tests.", (("run", '{"a": 1}'),))
    chains.remember(prompt_chain, said, first)
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Fix the failing test."},
        *output,
        {"type": "function_call_output", "call_id": "c1", "output": "1 failed"},
    ]
    assert responses_call(history, chains, "r2")[0] == first
    assert responses_call([*history[:-1], {**history[-1], "output": "2 failed"}], chains, "r3")[0] == first
    keys = PrefixChains()  # the answer's key alone: another answer (arguments) is not found
    keys.remember(prompt_chain, said, "s")
    for arguments, found in (('{"a":2}', None), ('{"a":1}', "s")):
        key = answer_key(prompt_chain, Answer("Running the tests.", (("run", arguments),)))
        assert keys.find(iter([key])) == found


def test_a_responses_input_that_is_no_conversation_is_a_session_of_its_own() -> None:
    for items in ([1, 2], {"role": "user"}, [{"role": 5}]):
        body = msgspec.json.encode({"model": "m", "input": items})
        identity = identify(CIMultiDict(), decode_call(body), "rx", chains=PrefixChains())
        assert identity.session_id == "req-rx", items
