"""End-to-end over loopback: with client API keys, a session inferred from a conversation or found through
`previous_response_id` is the calling tenant's own (proxy/identity.py, proxy/session_chain.py).

Before, prefix chaining and the response-to-session map were keyed by content and id only: a tenant repeating
another tenant's conversation (same opening, same answer) joined that tenant's session, and one naming
another's response id was told its session (`X-Session-ID: alpha:a-private`); with `X-Session-End` both
ended it. Run in one process (both client-facing servers) and as `saga serve --workers 2`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy.identity import decode_call, identify, ownership_key
from proxy.scheduler import SchedulerCore, build_policy
from proxy.server import running_proxy
from proxy.session_chain import Answer, PrefixChains
from simulator.server import start_fleet
from tests.proxy.fakes import config, fake_replica
from tests.proxy.test_workers_e2e import saga_workers, sessions_of

KEYS = {"key-a": "alpha", "key-b": "beta"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
END = {"X-Session-End": "true"}
OPENING = [
    {"role": "system", "content": "You are the tenant-isolation test agent."},
    {"role": "user", "content": "the same task for both tenants"},
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a connection per call: with several workers the kernel picks one for each
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def chat(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]], headers: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """(the X-Session-ID the caller is told, the assistant message) of one chat call."""
    body = {"model": "saga-sim", "messages": messages, "max_tokens": 4}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Session-ID"], (await r.json())["choices"][0]["message"]


async def sessions(http: aiohttp.ClientSession, url: str) -> set[str]:
    async with http.get(f"{url}/saga/v1/sessions") as r:  # gathered from every worker
        assert r.status == 200, await r.text()
        return {s["session_id"] for s in (await r.json())["sessions"]}


async def same_conversation(http: aiohttp.ClientSession, url: str) -> tuple[list[str], list[str]]:
    """Repro A: each tenant opens the same conversation, then continues it with the same answer (alpha's);
    beta's continuation asks to end its session. The X-Session-IDs each tenant was told, in order."""
    a_first, answer = await chat(http, url, OPENING, A)
    b_first, _ = await chat(http, url, OPENING, B)
    continued = [
        *OPENING,
        {"role": "assistant", "content": answer["content"]},
        {"role": "user", "content": "go on"},
    ]
    a_next, _ = await chat(http, url, continued, A)
    b_next, _ = await chat(http, url, continued, {**B, **END})
    return [a_first, a_next], [b_first, b_next]


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_tenant_repeating_another_tenants_conversation_has_a_session_of_its_own(
    http: aiohttp.ClientSession, server: str
) -> None:
    fleet = await start_fleet(1, time_scale=200.0)
    try:
        async with running_proxy(config(fleet.urls, api_keys=KEYS, server=server, access_log=False)) as url:
            alpha, beta = await same_conversation(http, url)
            left = await sessions(http, url)
    finally:
        await fleet.close()
    assert alpha[0] == alpha[1], alpha  # alpha's conversation is one session
    assert not set(beta) & set(alpha), (alpha, beta)  # beta never joined it, nor was told its id
    assert alpha[0] in left and beta[1] not in left, left  # beta's X-Session-End ended its own only


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_another_tenants_response_id_is_not_found(http: aiohttp.ClientSession, server: str) -> None:
    """Repro B: beta names alpha's response as `previous_response_id` with `X-Session-End`: a 404 that names
    neither alpha nor its session, and alpha's session lives on. Retrieving it is a 404 too, not forwarded
    (vLLM hands a stored response to whoever asks); alpha itself still continues and retrieves it."""
    fleet = await start_fleet(1, time_scale=200.0)
    try:
        async with running_proxy(config(fleet.urls, api_keys=KEYS, server=server, access_log=False)) as url:
            body = {"model": "saga-sim", "input": "alpha's private task", "max_output_tokens": 4}
            async with http.post(
                f"{url}/v1/responses", json=body, headers={**A, "X-Session-ID": "a-private"}
            ) as r:
                assert r.status == 200, await r.text()
                response_id = (await r.json())["id"]
            follow = {**body, "input": "and then?", "previous_response_id": response_id}
            async with http.post(f"{url}/v1/responses", json=follow, headers={**B, **END}) as r:
                posted = (r.status, dict(r.headers), await r.text())
            async with http.get(f"{url}/v1/responses/{response_id}", headers=B) as r:
                got = (r.status, dict(r.headers), await r.text())
            left = await sessions(http, url)
            async with http.get(f"{url}/v1/responses/{response_id}", headers=A) as r:
                assert r.status == 200 and (await r.json())["id"] == response_id
            async with http.post(f"{url}/v1/responses", json=follow, headers=A) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Session-ID"] == "a-private"
    finally:
        await fleet.close()
    for status, headers, text in (posted, got):
        assert status == 404, text
        error = json.loads(text)["error"]
        assert (
            error["code"] == "not_found"
            and error["message"] == f"Response with id '{response_id}' not found."
        )
        shown = text + json.dumps(headers)
        assert "a-private" not in shown and "alpha" not in shown, shown
        assert "X-Saga-Replica" not in headers  # answered here, not by the replica holding it
    assert json.loads(posted[2])["error"]["param"] == "previous_response_id"
    assert "alpha:a-private" in left


async def test_two_workers_keep_each_tenants_sessions_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    """Repro A and B under `saga serve --workers 2`: the workers' chain table and the owner of a
    conversation's opening are the tenant's too, so each tenant's conversation stays one session on one
    worker; another tenant's continuation of a response goes to the worker that served it (the shared
    response table), which knows its tenant: a 404; so does its retrieval, whichever worker reads it."""
    monkeypatch.setenv("SAGA_API_KEYS", json.dumps(KEYS))
    workers = saga_workers(tmp_path)
    saga = await asyncio.to_thread(workers.__enter__)
    try:
        for _ in range(3):  # connections land on either worker: a few rounds make both orders likely
            alpha, beta = await same_conversation(http, saga.url)
            left = await sessions(http, saga.url)
            assert alpha[0] == alpha[1], alpha
            assert not set(beta) & set(alpha), (alpha, beta)
            assert alpha[0] in left and beta[1] not in left, left
        scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
        assert all(sum(s in w for w in scheduled) == 1 for s in left), scheduled  # none split

        body = {"model": "saga-sim", "input": "alpha's private task", "max_output_tokens": 4}
        async with http.post(
            f"{saga.url}/v1/responses", json=body, headers={**A, "X-Session-ID": "a-private"}
        ) as r:
            assert r.status == 200, await r.text()
            response_id = (await r.json())["id"]
            follow = {**body, "previous_response_id": response_id}
        for _ in range(4):  # fresh connections: read by either worker
            async with http.post(f"{saga.url}/v1/responses", json=follow, headers={**B, **END}) as r:
                text = await r.text()
                assert r.status == 404 and "a-private" not in text + json.dumps(dict(r.headers)), text
            # retrieving it: the worker that did not serve it asks the one that did, which knows its tenant
            async with http.get(f"{saga.url}/v1/responses/{response_id}", headers=B) as r:
                assert r.status == 404, await r.text()
            async with http.get(f"{saga.url}/v1/responses/{response_id}", headers=A) as r:
                assert r.status == 200 and (await r.json())["id"] == response_id
        assert "alpha:a-private" in await sessions(http, saga.url)
    finally:
        await asyncio.to_thread(workers.__exit__, None, None, None)


def test_sessions_are_found_only_among_the_tenants_own() -> None:
    """The key rule, without the servers: with a client API key's tenant as `scope`, the opening's id, the
    chain keys and the response map are the tenant's; without one, everything is as before."""
    chains = PrefixChains()
    fields = decode_call(json.dumps({"messages": OPENING}).encode())
    headers: CIMultiDict[str] = CIMultiDict()
    alpha = identify(headers, fields, "r1", chains=chains, scope="alpha")
    beta = identify(headers, fields, "r2", chains=chains, scope="beta")
    plain = identify(headers, fields, "r3", chains=chains)
    assert len({alpha.session_id, beta.session_id, plain.session_id}) == 3
    assert ownership_key(headers, fields, "alpha")[0] == alpha.session_id  # the owner agrees across workers
    assert ownership_key(headers, fields)[0] == plain.session_id
    assert alpha.prompt_chain is not None
    chains.remember(alpha.prompt_chain, Answer("done"), alpha.session_id)
    later = [*OPENING, {"role": "assistant", "content": "done"}, {"role": "user", "content": "next"}]
    continued = decode_call(json.dumps({"messages": later}).encode())
    assert identify(headers, continued, "r4", chains=chains, scope="alpha").session_id == alpha.session_id
    assert identify(headers, continued, "r5", chains=chains, scope="beta").session_id != alpha.session_id
    _, seen = ownership_key(headers, continued, "alpha")  # the worker path: messages read once
    assert identify(headers, continued, "r6", chains=chains, scope="alpha", seen=seen).session_id == (
        alpha.session_id
    )

    chains.remember_response("resp_1", "alpha:a-private", "http://r", "alpha")
    previous = decode_call(b'{"previous_response_id": "resp_1"}')
    assert identify(headers, previous, "r7", chains=chains, scope="alpha").session_id == "alpha:a-private"
    assert identify(headers, previous, "r8", chains=chains, scope="beta").session_id == "req-r8"
    assert (
        identify(headers, previous, "r9", chains=chains).session_id == "alpha:a-private"
    )  # no keys: as before
    assert chains.foreign_response("resp_1", "beta") and not chains.foreign_response("resp_1", "alpha")
    chains.remember_response("resp_2", "", "http://r")  # found by asking the replicas: its tenant unknown
    assert not chains.foreign_response("resp_2", "beta") and not chains.foreign_response("resp_9", "beta")


async def test_two_tenants_naming_one_body_session_id_reach_vllm_as_sessions_of_their_own(
    http: aiohttp.ClientSession,
) -> None:
    """vLLM files a call's blocks (KV events, the plugin's retention) under the body's `session_id` before
    the `X-Session-ID` header: two tenants' `"session_id": "same"` reached the replica as one session (their
    retentions replacing each other's, their KV figures merged) while the proxy scheduled them apart. The
    body now carries the session scheduled, the tenant's own."""
    async with (
        fake_replica(mode="tools") as replica,
        running_proxy(config([replica.url], api_keys=KEYS)) as url,
    ):
        for headers in (A, B):
            body = {"model": "fake", "session_id": "same", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Session-ID"] == "same"  # the client's own id, as it named it
    assert [b["session_id"] for b in replica.bodies] == ["alpha:same", "beta:same"]
    assert [h["X-Session-ID"] for h in replica.headers] == ["alpha:same", "beta:same"]


async def test_two_tenants_naming_one_agent_type_learn_graphs_of_their_own(
    http: aiohttp.ClientSession,
) -> None:
    """`X-Agent-Type` is the client's to name: with one graph per name, another key's tenant sending calls
    under this tenant's agent type taught this tenant's admission and holds (e.g. workflows that never come
    back stop holding KV between calls). With client API keys each tenant's types are its own."""
    fleet = await start_fleet(1, time_scale=200.0)
    core = SchedulerCore(fleet.urls, build_policy("saga", seed=0), time.monotonic)
    try:
        async with running_proxy(config(fleet.urls, api_keys=KEYS, access_log=False), core) as url:
            for tenant, name in ((A, "a-1"), (B, "b-1"), (A, "a-1")):
                headers = {**tenant, "X-Agent-Type": "coder", "X-Session-ID": name}
                await chat(http, url, OPENING, headers)
    finally:
        await fleet.close()
    learned = set(core.predictor.graphs)
    assert {"alpha:coder", "beta:coder"} <= learned and "coder" not in learned, learned


@pytest.mark.parametrize("salted", [True, False])
async def test_a_tenant_cannot_learn_another_tenants_prompt_from_its_cached_tokens(
    http: aiohttp.ClientSession, salted: bool
) -> None:
    """The thirteenth review: vLLM shares its prefix cache between every request with the same tokens and
    tells each caller how many of its prompt's were cached, so beta, guessing alpha's prompt, learned it was
    right (624 of 625 tokens cached; 0 for a wrong guess). Each key's tenant now sends a `cache_salt` of its
    own (`tenant_cache_salt`, on by default); switched off, the cache is shared as before."""
    secret = [{"role": "user", "content": "alpha's private plan: " + "acquire the rival company " * 40}]
    cached = {}
    fleet = await start_fleet(1, time_scale=200.0)
    try:
        settings = config(fleet.urls, api_keys=KEYS, access_log=False, tenant_cache_salt=salted)
        async with running_proxy(settings) as url:
            for name, headers in (("alpha", A), ("alpha again", A), ("beta", B)):
                body = {"model": "saga-sim", "messages": secret, "max_tokens": 1}
                async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    cached[name] = (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"]
    finally:
        await fleet.close()
    assert cached["alpha again"] > 100  # a tenant's own prefix is cached as before
    assert (cached["beta"] == 0) is salted, cached
