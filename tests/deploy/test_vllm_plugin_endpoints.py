"""saga-vllm-plugin's HTTP surface (deploy/vllm-plugin/saga_vllm_plugin/endpoints.py) in-process, over a fake
engine client: malformed retention fields and bodies answer 400 in vLLM's error shape, never a 500, and
reach the engine only when valid. Needs fastapi (vLLM's server framework), not vLLM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi.testclient")  # fastapi and the HTTP client its TestClient needs

from fastapi import FastAPI
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "vllm-plugin"))
from saga_vllm_plugin import endpoints
from saga_vllm_plugin.retention_table import MAX_SESSION_ID_CHARS, retain_priority

BIG = "1" + "0" * 400  # an integer past float's range
XARGS = '{"session_id": "s", "vllm_xargs": {'
NESTED = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit


class FakeEngineCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_utility_async(self, method: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((op, body))
        return {"status": 200, "body": {"op": op}}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, FakeEngineCore]:
    core = FakeEngineCore()
    monkeypatch.setattr(endpoints._Engine, "client", type("Client", (), {"engine_core": core})())
    app = FastAPI()
    app.include_router(endpoints.router)

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, bool]:
        return {"generated": True}

    @app.post("/v1/responses")
    async def responses() -> dict[str, bool]:
        return {"generated": True}

    app.add_middleware(endpoints.RetentionMiddleware)
    return TestClient(app, raise_server_exceptions=False), core


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/chat/completions", XARGS + '"saga_retain_ttl_s": ' + BIG + "}}", "ttl"),
        (
            "/v1/chat/completions",
            XARGS + '"saga_retain_ttl_s": 5, "saga_retain_priority": 9223372036854775808}}',
            "saga_retain_priority",
        ),
        ("/saga/v1/retain", '{"session_id": "s", "ttl_s": ' + BIG + "}", "TTL"),
        ("/saga/v1/retain", '{"session_id": "s", "ttl_s": 5, "priority": -9223372036854775809}', "priority"),
        ("/saga/v1/retain", NESTED, "nested"),
        ("/saga/v1/release", NESTED, "nested"),
    ],
)
def test_out_of_range_numbers_and_deep_nesting_answer_400_not_500(
    served: tuple[TestClient, FakeEngineCore], path: str, body: str, needle: str
) -> None:
    client, core = served
    r = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400 and needle in error["message"]
    assert core.calls == []


def test_values_at_the_edges_of_the_ranges_pass(served: tuple[TestClient, FakeEngineCore]) -> None:
    client, core = served
    xargs = {"saga_retain_ttl_s": 1e300, "saga_retain_priority": 2**63 - 1}
    r = client.post("/v1/chat/completions", json={"session_id": "s", "vllm_xargs": xargs})
    assert (r.status_code, r.json()) == (200, {"generated": True})
    r = client.post("/saga/v1/retain", json={"session_id": "s", "ttl_s": 10**300, "priority": -(2**63)})
    assert r.status_code == 200
    assert core.calls == [("retain", {"session_id": "s", "ttl_s": 1e300, "priority": -(2**63)})]


LONG_ID = "s" * (MAX_SESSION_ID_CHARS + 1)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"session_id": LONG_ID, "vllm_xargs": {"saga_retain_ttl_s": 5}}, {}),
        ("/v1/chat/completions", {"vllm_xargs": {"saga_retain_ttl_s": 5, "session_id": LONG_ID}}, {}),
        ("/v1/chat/completions", {"vllm_xargs": {"saga_retain_ttl_s": 5}}, {"X-Session-ID": LONG_ID}),
        ("/saga/v1/retain", {"session_id": LONG_ID, "ttl_s": 5}, {}),
        ("/saga/v1/release", {"session_id": LONG_ID}, {}),
    ],
)
def test_a_session_id_past_the_tables_cap_answers_400_before_the_engine(
    served: tuple[TestClient, FakeEngineCore], path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    client, core = served
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert f"at most {MAX_SESSION_ID_CHARS} characters, got {MAX_SESSION_ID_CHARS + 1}" in error["message"]
    assert core.calls == []


def test_a_session_id_at_the_cap_passes(served: tuple[TestClient, FakeEngineCore]) -> None:
    client, core = served
    longest = "s" * MAX_SESSION_ID_CHARS
    r = client.post(
        "/v1/chat/completions", json={"session_id": longest, "vllm_xargs": {"saga_retain_ttl_s": 5}}
    )
    assert (r.status_code, r.json()) == (200, {"generated": True})
    assert client.post("/saga/v1/release", json={"session_id": longest}).status_code == 200
    assert core.calls == [("release", {"session_id": longest})]
    # without a retention asked for, the session id is vLLM's business, not the retention table's
    r = client.post("/v1/chat/completions", json={"session_id": LONG_ID})
    assert (r.status_code, r.json()) == (200, {"generated": True})


@pytest.mark.parametrize("priority", ["Infinity", "-Infinity", "NaN", "1e300", "1.5", "18446744073709551616"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_a_priority_that_is_no_64_bit_integer_is_a_400_on_every_route_taking_vllm_xargs(
    served: tuple[TestClient, FakeEngineCore], path: str, priority: str
) -> None:
    """vLLM's JSON parser takes `Infinity`; on `/v1/responses`, which the middleware did not check, it
    reached the engine thread and stopped vLLM (`int(inf)`), and 1e300 hung it."""
    client, _ = served
    body = XARGS + '"saga_retain_ttl_s": 5, "saga_retain_priority": ' + priority + "}}"
    r = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "saga_retain_priority" in r.json()["error"]["message"], r.text


def test_the_session_id_checked_is_the_one_vllm_takes(served: tuple[TestClient, FakeEngineCore]) -> None:
    """vLLM takes the body's `session_id` before the `X-Session-ID` header: a long header beside a short
    body id is not refused, and a long body id beside a short header is."""
    client, _ = served
    xargs = {"saga_retain_ttl_s": 5}
    short_in_body = {"session_id": "s", "vllm_xargs": xargs}
    r = client.post("/v1/chat/completions", json=short_in_body, headers={"X-Session-ID": LONG_ID})
    assert r.status_code == 200, r.text
    long_in_body = {"session_id": LONG_ID, "vllm_xargs": xargs}
    r = client.post("/v1/chat/completions", json=long_in_body, headers={"X-Session-ID": "s"})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    ("raw", "expected"), [(7, 7), (7.0, 7), ("7", 7), (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1)]
)
def test_retain_priority_takes_64_bit_integers(raw: object, expected: int) -> None:
    assert retain_priority(raw) == expected


@pytest.mark.parametrize("raw", [float("inf"), float("nan"), 1e300, 1.5, 2**63, True, None, "x", [1]])
def test_retain_priority_refuses_everything_else_with_a_value_error(raw: object) -> None:
    """What the scheduler's `retain_args` catches on the engine thread: never OverflowError or TypeError."""
    with pytest.raises(ValueError, match="retention priority"):
        retain_priority(raw)
