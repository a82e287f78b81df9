"""The agent type of a call without X-Agent-Type: a hash of its system prompt's head and its tools."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.identity import decode_call, identify
from proxy.prompt_shape import SIGNATURE_SYSTEM_BYTES, agent_signature, first_array_element

TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


def agent_of(body: dict[str, object], **headers: str) -> str:
    h = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return identify(h, decode_call(msgspec.json.encode(body)), "rid").agent_type


def chat(system: str | None, *turns: str, tools: object = None, **extra: object) -> dict[str, object]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    body: dict[str, object] = {"model": "m", "messages": msgs, **extra}
    if tools is not None:
        body["tools"] = tools
    return body


def test_same_agent_across_tasks_and_turns_different_agents_apart() -> None:
    a1 = agent_of(chat("You are a coder.", "fix bug 1", tools=TOOLS))
    a2 = agent_of(chat("You are a coder.", "fix bug 2", "ok", "more", tools=TOOLS))
    assert a1 == a2 and a1.startswith("auto-")
    assert agent_of(chat("You are a browser agent.", "fix bug 1", tools=TOOLS)) != a1
    assert agent_of(chat("You are a coder.", "fix bug 1", tools=[*TOOLS, *TOOLS])) != a1
    assert agent_of(chat("You are a coder.", "fix bug 1")) not in (a1, "default")


def test_header_wins_and_nothing_to_hash_is_default() -> None:
    assert agent_of(chat("You are a coder.", "x", tools=TOOLS), X_Agent_Type="coder") == "coder"
    assert agent_of(chat(None, "just a question")) == "default"
    assert agent_of(chat(None, "q", tools=[])) == "default"
    assert agent_of({"model": "m", "prompt": "hello"}) == "default"
    # Tools alone name an agent; the Responses API's instructions act as its system prompt.
    assert agent_of(chat(None, "q", tools=TOOLS)).startswith("auto-")
    r1 = agent_of({"model": "m", "input": "task 1", "instructions": "You browse."})
    assert r1 == agent_of({"model": "m", "input": "task 2", "instructions": "You browse."}) != "default"


def test_only_the_head_of_the_system_prompt_counts() -> None:
    head = "You are a coder. " * 200
    assert len(head) > SIGNATURE_SYSTEM_BYTES
    # Per-task context late in the system prompt (date, working directory) does not split the agent type.
    assert agent_of(chat(head + "cwd=/a", "t")) == agent_of(chat(head + "cwd=/b", "t"))
    assert agent_of(chat("x" + head, "t")) != agent_of(chat(head, "t"))


@pytest.mark.parametrize(
    "first",
    [
        {"role": "system", "content": 'quotes \\" and \\\\ and brackets ]} {[ inside'},
        {"role": "system", "content": [{"type": "text", "text": "parts ]"}], "name": "x"},
        {"role": "developer", "content": "x" * 100_000},
    ],
)
def test_first_element_is_found_exactly(first: dict[str, object]) -> None:
    raw = msgspec.json.encode([first, {"role": "user", "content": "} ] tail"}])
    got = first_array_element(raw)
    assert got is not None and msgspec.json.decode(got) == first
    spaced = b"  [ \n" + raw[1:]
    assert first_array_element(spaced) == got


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'"text"', b"[1, 2]", b'[{"role": "system", "content": "x', b"{}"]
)
def test_not_an_array_of_objects_or_truncated_gives_nothing(raw: bytes) -> None:
    assert first_array_element(raw) is None
    assert agent_signature(raw, b"") is None


def test_a_long_conversation_is_not_scanned_past_its_first_message() -> None:
    # The tail after the first message is not valid JSON: it is never looked at.
    raw = b'[{"role": "system", "content": "You code."}, ' + b"\x00garbage" * 100_000
    assert first_array_element(raw) == b'{"role": "system", "content": "You code."}'
    assert agent_signature(raw, b"") == agent_signature(b'[{"role":"system","content":"You code."}]', b"")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('ab"\\{}[]:, \n\u00e9')),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), min_size=1, max_size=4))
def test_first_element_of_any_array_of_objects(messages: list[dict[str, object]]) -> None:
    got = first_array_element(msgspec.json.encode(messages))
    assert got is not None and msgspec.json.decode(got) == messages[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=50))
def test_any_bytes_give_a_signature_or_none_never_an_error(messages: bytes, tools: bytes) -> None:
    got = agent_signature(b"[" + messages, tools)
    assert got is None or (got.startswith("auto-") and len(got) == 21)
