"""Overload and security end to end over loopback (issue 16).

Overload: far more calls than the replicas take, with the release queue on and small bounds: the excess gets
429 with `Retry-After` in the OpenAI shape, every admitted call completes, nothing stays queued or in flight.
Security: every admin route refuses a missing or wrong token; client API keys guard every data path; no
secret (client keys, admin token, upstream key) reaches the logs (text or JSON) or `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.logs import JsonFormatter
from proxy.passthrough import PASSTHROUGH_ROUTES
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from tests.reliability.rig import MODEL, is_openai_error, messages, rig

CLIENT_KEY = "sk-client-SECRET-4f1c9a"
ADMIN_TOKEN = "adm-SECRET-77b2e0"
UPSTREAM_KEY = "sk-upstream-SECRET-0d93"
SECRETS = (CLIENT_KEY, ADMIN_TOKEN, UPSTREAM_KEY)


async def test_overload_gets_429_with_retry_after_while_admitted_work_completes() -> None:
    queue = ReleaseQueueSpec(
        order="fifo", gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 2}), max_queued=4
    )
    async with rig(replicas=2, queue=queue, retry_after_s=2.0) as r:
        body = {"model": MODEL, "max_tokens": 200}

        async def one(i: int) -> tuple[int, str | None, dict[str, Any]]:
            payload = {**body, "messages": messages(f"load-{i}")}
            async with (
                asyncio.timeout(60),
                r.http.post(
                    f"{r.url}/v1/chat/completions", json=payload, headers={"X-Session-ID": f"load-{i}"}
                ) as resp,
            ):
                return resp.status, resp.headers.get("Retry-After"), await resp.json()

        results = await asyncio.gather(*(one(i) for i in range(80)))
        statuses = Counter(status for status, _, _ in results)
        assert set(statuses) == {200, 429}, statuses  # admitted or refused, nothing else
        assert statuses[429] > 0 and statuses[200] >= 2 * 2  # at least what the replicas hold at once
        for status, retry_after, payload in results:
            if status == 429:
                assert retry_after == "2" and is_openai_error(payload)
                assert payload["error"]["type"] == "rate_limit_error"
            else:
                assert payload["choices"][0]["message"]["content"]
        state = await r.settled()
        assert state["in_flight"] == 0 and state["queued"] == 0
        code, _, _ = await r.chat("after-the-storm")  # served once the storm has passed
        assert code == 200


def admin_routes() -> list[tuple[str, str]]:
    app = create_app(ProxyConfig(replicas=["http://127.0.0.1:1"], admin_token=ADMIN_TOKEN))
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/saga/v1/") and route.method != "HEAD":
            routes.add((route.method, path.replace("{session_id}", "s1")))
    return sorted(routes)


async def test_every_admin_route_refuses_a_missing_or_wrong_token() -> None:
    routes = admin_routes()
    assert len(routes) >= 7  # state, replicas (get, add, drain, remove), sessions, session end, queue
    async with rig(replicas=1, admin_token=ADMIN_TOKEN) as r:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
                async with r.http.request(method, f"{r.url}{path}", headers=headers, json={}) as resp:
                    assert resp.status == 401, (method, path, headers)
                    assert is_openai_error(await resp.json())
        async with r.http.get(
            f"{r.url}/saga/v1/state", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as resp:
            assert resp.status == 200


DATA_PATHS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": messages("k"), "max_tokens": 2}),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "hello there", "max_tokens": 2}),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hello there", "max_output_tokens": 2}),
    ("GET", "/v1/models", {}),
    *(("POST", path, {"model": MODEL, "prompt": "hello"}) for path in PASSTHROUGH_ROUTES),
]


async def test_client_api_keys_guard_every_data_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert {"/tokenize", "/detokenize"} & set(PASSTHROUGH_ROUTES)
    async with rig(
        replicas=1,
        api_keys={CLIENT_KEY: "team-a"},
        admin_token=ADMIN_TOKEN,
        upstream_api_key=UPSTREAM_KEY,
        access_log=True,
    ) as r:
        for method, path, body in DATA_PATHS:
            kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
            for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": CLIENT_KEY}):
                async with r.http.request(method, f"{r.url}{path}", headers=headers, **kwargs) as resp:
                    assert resp.status == 401, (path, headers)
                    text = await resp.text()
                    assert all(secret not in text for secret in SECRETS)
            good = {"Authorization": f"Bearer {CLIENT_KEY}"}
            async with r.http.request(method, f"{r.url}{path}", headers=good, **kwargs) as resp:
                text = await resp.text()
                assert resp.status not in (401, 403), (path, text)
                assert all(secret not in text for secret in SECRETS)
        # Failures that log (a crashed replica's retries) must not log secrets either.
        await r.set_fault(r.fleet.urls[0], kind="error", status=500)
        async with r.http.post(
            f"{r.url}/v1/chat/completions",
            json=DATA_PATHS[0][2],
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Session-ID": "x"},
        ) as resp:
            assert resp.status == 500
        await r.clear_fault(r.fleet.urls[0])
        async with r.http.get(f"{r.url}/metrics") as resp:
            metrics = await resp.text()
    assert "saga" in metrics
    assert all(secret not in metrics for secret in SECRETS)
    assert caplog.records  # the access log and the failure were logged
    json_lines = JsonFormatter()
    for record in caplog.records:
        for line in (record.getMessage(), json_lines.format(record), str(record.__dict__)):
            assert all(secret not in line for secret in SECRETS), line
