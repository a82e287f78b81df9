"""`saga serve --workers 2` end to end over loopback: the supervisor, one port, and client connections handed
to the worker that owns their call's session (proxy/supervisor.py, proxy/connection_handoff.py).

Each test runs the real command (`python3 -m proxy.cli serve --simulate 2 --workers 2 --port 0`) and asks
each worker's app socket what it scheduled. Fresh connections are spread over the workers by the kernel
(SO_REUSEPORT), so a call reaches a worker that does not own its session about half the time: without the
hand-off a session's calls would be split between the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import pytest

from proxy.worker_set import LOCAL_HEADER, WorkerSet, owner_of
from tests.processes import start_saga_serve, stop_process
from tests.proxy.fakes import STORED_STREAM, fake_replica

ROOT = Path(__file__).resolve().parents[2]
MODEL = "saga-sim"
START_S = 60.0


class Saga:
    def __init__(self, proc: subprocess.Popen[str], url: str, directory: Path, output: list[str]) -> None:
        self.proc, self.url, self.directory, self.output = proc, url, directory, output
        self.workers = WorkerSet(0, 2, str(directory))

    def children(self) -> list[int]:
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in text.split()]


@contextlib.contextmanager
def saga_workers(tmp_path: Path, *extra: str, replicas: list[str] | None = None) -> Iterator[Saga]:
    """Two workers in front of two simulated replicas, or of `replicas`."""
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--workers", "2", "--port", "0"]
    if replicas is None:
        cmd += ["--simulate", "2", "--time-scale", "50", *extra]
    else:
        cmd += [*(arg for url in replicas for arg in ("--replica", url)), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc, url, output = start_saga_serve(cmd, ROOT, env, START_S)  # the output is kept for failure messages
    try:
        (directory,) = tmp_path.glob("saga-workers-*")
        assert directory.stat().st_mode & 0o777 == 0o700
        yield Saga(proc, url, directory, output)
    finally:
        stop_process(proc, 30)


@pytest.fixture(scope="module")
def saga(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saga]:
    with saga_workers(tmp_path_factory.mktemp("workers")) as s:
        yield s


def chat(session: str | None, text: str = "hello", stream: bool = False, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    if session is not None:
        body["session_id"] = session
    return {**body, "stream": stream, **more}


async def fresh_call(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One call on a connection of its own (so the kernel picks the worker)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.post(f"{url}/v1/chat/completions", json=body, headers=headers or {}) as r,
    ):
        return r.status, await r.text()


async def local_get(saga: Saga, index: int, path: str, token: str | None = None) -> Any:
    """Worker `index`'s own answer to GET `path` (not gathered from the others), as JSON."""
    connector = aiohttp.UnixConnector(path=saga.workers.app_socket(index))
    headers = {LOCAL_HEADER: "1", **({"Authorization": f"Bearer {token}"} if token else {})}
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"http://worker{path}", headers=headers) as r,
    ):
        assert r.status == 200
        return await r.json()


async def sessions_of(saga: Saga, index: int) -> dict[str, int]:
    """The sessions worker `index` scheduled (its own, not gathered from the others) and their calls."""
    return {
        s["session_id"]: s["calls"] for s in (await local_get(saga, index, "/saga/v1/sessions"))["sessions"]
    }


def owned_by(owner: int, count: int, prefix: str) -> list[str]:
    return [k for k in (f"{prefix}-{i}" for i in range(100)) if owner_of(k, 2) == owner][:count]


async def test_calls_of_a_session_on_fresh_connections_are_scheduled_by_its_owner(saga: Saga) -> None:
    sessions = owned_by(0, 3, "fresh") + owned_by(1, 3, "fresh")
    for step in range(4):
        for s in sessions:  # streams too: a stream's answer goes out from the owner after a hand-off
            status, text = await fresh_call(saga.url, chat(s, f"step {step}", stream=step % 2 == 1))
            assert status == 200, text
            if step % 2 == 1:
                assert text.rstrip().endswith("data: [DONE]")
            else:
                assert json.loads(text)["object"] == "chat.completion"
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    for s in sessions:
        owner = owner_of(s, 2)
        assert scheduled[owner].get(s) == 4, (s, scheduled)
        assert s not in scheduled[1 - owner]


async def test_a_responses_conversation_continues_on_the_worker_that_served_it(tmp_path: Path) -> None:
    """A Responses API call naming only `previous_response_id` carries no session key: it goes to the worker
    that served that response (proxy/response_owners.py), which knows its session. Each call is on a fresh
    connection, so without that about half would start a session of their own on the other worker."""
    async with fake_replica() as replica:
        workers = saga_workers(tmp_path, replicas=[replica.url])
        saga = await asyncio.to_thread(workers.__enter__)  # the replica answers while the workers start
        try:
            body: dict[str, Any] = {"model": "fake", "input": "start the task"}
            sessions = []
            for step in range(8):
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                    http.post(f"{saga.url}/v1/responses", json=body) as r,
                ):
                    assert r.status == 200, await r.text()
                    sessions.append(r.headers["X-Session-ID"])
                    body = {"model": "fake", "input": f"tool result {step}"}
                    body["previous_response_id"] = (await r.json())["id"]
            assert sessions == [sessions[0]] * 8, sessions
            scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
            assert sorted(w.get(sessions[0], 0) for w in scheduled) == [0, 8], scheduled
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)


@pytest.mark.parametrize("keys", [False, True])
async def test_a_resumed_stored_stream_asked_of_another_worker_comes_event_by_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: bool
) -> None:
    """`GET /v1/responses/{id}?stream=true` reaching the worker that did not serve the response is asked of
    the one that did, which was read whole within the workers' 2 s gather timeout: a stream longer than that
    was asked again of the replicas once the 2 s were up or, with client API keys, answered 502 (the
    forty-fifth session's review). Here each worker is asked in turn (one of them served it) and the replica
    sends the rest of the stream only once the client has read its first event."""
    if keys:
        monkeypatch.setenv("SAGA_API_KEYS", json.dumps({"sk-tenant-a": "a"}))
    auth = {"Authorization": "Bearer sk-tenant-a"} if keys else {}
    async with fake_replica() as replica:
        workers = saga_workers(tmp_path, replicas=[replica.url])
        saga = await asyncio.to_thread(workers.__enter__)
        try:
            body = {"model": "fake", "input": "go"}
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{saga.url}/v1/responses", json=body, headers=auth) as r,
            ):
                assert r.status == 200, await r.text()
                stored = (await r.json())["id"]
            for index in (0, 1):
                replica.stored_stream_gate.clear()
                connector = aiohttp.UnixConnector(path=saga.workers.app_socket(index))
                async with (
                    aiohttp.ClientSession(connector=connector) as http,
                    http.get(f"http://saga/v1/responses/{stored}?stream=true", headers=auth) as r,
                ):
                    assert r.status == 200, await r.text()
                    assert r.headers["X-Saga-Replica"] == replica.url
                    assert r.headers["X-Request-Id"] == "req-fake-1"  # the replica's, relayed or not
                    assert await r.content.readuntil(b"\n\n") == STORED_STREAM[0]
                    replica.stored_stream_gate.set()
                    assert await r.content.read() == b"".join(STORED_STREAM[1:])
            assert replica.stored_stream_gets == 2  # each asked of the replica once
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)


async def _stored_on_worker_0(saga: Saga) -> str:
    """A stored response served by worker 0 (its session, named, is worker 0's); its id."""
    (session,) = owned_by(0, 1, "stored")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{saga.url}/v1/responses",
            json={"model": "fake", "input": "go"},
            headers={"X-Session-ID": session},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return str((await r.json())["id"])


async def test_more_resumed_stored_streams_than_a_connection_pool_holds_are_relayed_at_once(
    tmp_path: Path,
) -> None:
    """Each relayed stream holds a connection to the worker that served the response while it runs: on
    aiohttp's default pool of 100 a worker, the 101st waited for one with no bound, and the admin gathers
    sharing the pool timed out (the twentieth review). 120 at once, through worker 1: each has its first
    event before the replica sends the rest of any."""
    async with fake_replica() as replica:
        workers = saga_workers(tmp_path, replicas=[replica.url])
        saga = await asyncio.to_thread(workers.__enter__)
        try:
            stored = await _stored_on_worker_0(saga)
            connector = aiohttp.UnixConnector(path=saga.workers.app_socket(1), limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def resumed(firsts: asyncio.Queue[bytes]) -> bytes:
                    async with http.get(f"http://saga/v1/responses/{stored}?stream=true") as r:
                        assert r.status == 200, await r.text()
                        await firsts.put(await r.content.readuntil(b"\n\n"))
                        return await r.content.read()

                firsts: asyncio.Queue[bytes] = asyncio.Queue()
                streams = [asyncio.ensure_future(resumed(firsts)) for _ in range(120)]
                for _ in range(120):
                    assert await asyncio.wait_for(firsts.get(), 30) == STORED_STREAM[0]
                replica.stored_stream_gate.set()
                assert await asyncio.gather(*streams) == [b"".join(STORED_STREAM[1:])] * 120
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


async def test_a_stopped_worker_does_not_hold_the_stored_responses_it_served_for_good(tmp_path: Path) -> None:
    """The worker that served a response accepts the other's relay and never answers when it is stopped (a
    debugger, SIGSTOP): the relay waited up to first_byte_timeout_s (600 s). Now its head is waited for
    10 s, then the response is looked up on the replicas as when that worker is gone (the twentieth
    review)."""
    async with fake_replica() as replica:
        workers = saga_workers(tmp_path, replicas=[replica.url])
        saga = await asyncio.to_thread(workers.__enter__)
        try:
            stored = await _stored_on_worker_0(saga)
            (owner,) = [pid for pid in saga.children() if b"SAGA_WORKER_INDEX=0\0" in _environ(pid)]
            replica.stored_stream_gate.set()
            os.kill(owner, signal.SIGSTOP)
            try:
                connector = aiohttp.UnixConnector(path=saga.workers.app_socket(1))
                timeout = aiohttp.ClientTimeout(total=60)
                async with (
                    aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
                    http.get(f"http://saga/v1/responses/{stored}?stream=true") as r,
                ):
                    assert r.status == 200, await r.text()
                    assert await r.content.read() == b"".join(STORED_STREAM)
            finally:
                os.kill(owner, signal.SIGCONT)
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)


async def local_graphs(saga: Saga, index: int) -> dict[str, Any]:
    """Worker `index`'s own learned graphs (not gathered from the others), by agent type."""
    return {g["agent_type"]: g for g in (await local_get(saga, index, "/saga/v1/graphs"))["graphs"]}


async def test_each_worker_learns_from_the_sessions_the_others_own(saga: Saga) -> None:
    """Sessions all owned by worker 0: worker 1's predictor learns their agent type's graph too (shared
    through the learning rings every sync period: proxy/shared_learning.py)."""
    headers = {"X-Agent-Type": "shared-learning-test"}
    for step in range(3):
        for s in owned_by(0, 4, "learned"):
            status, text = await fresh_call(saga.url, chat(s, f"step {step}"), headers)
            assert status == 200, text

    def learned(graph: dict[str, Any] | None) -> dict[str, Any]:  # transitions seen, by node
        nodes = [] if graph is None else graph["nodes"]
        return {n["key"]: sorted((e["to"], e["count"]) for e in n["edges"]) for n in nodes}

    deadline = time.monotonic() + 10
    while True:  # a call's end is reported just after its answer is out: the last may still be on its way
        own = learned((await local_graphs(saga, 0)).get("shared-learning-test"))
        if sum(count for edges in own.values() for _, count in edges) == 12 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert sum(count for edges in own.values() for _, count in edges) == 12, own
    while True:  # the next sync period, at most a few ms away on a machine that is not overloaded
        other = learned((await local_graphs(saga, 1)).get("shared-learning-test"))
        if other == own or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert other == own, "worker 1 did not learn worker 0's sessions"
    async with aiohttp.ClientSession() as http, http.get(f"{saga.url}/metrics") as r:
        exposition = await r.text()
    counted = {
        kind: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        for kind in ("published", "replayed", "dropped")
        if line.startswith(f'saga_learned_observations_total{{kind="{kind}"}}')
    }
    assert counted["published"] >= 12 and counted["replayed"] >= 12 and counted["dropped"] == 0, counted
    assert "saga_learning_lost_bytes_total 0.0" in exposition
    scheduled = await sessions_of(saga, 1)
    assert not any(s.startswith("learned-") for s in scheduled)  # it learned them without scheduling them


async def conversation(saga: Saga, opening: list[dict[str, Any]], calls: int, tag: str) -> None:
    """An agent's conversation naming no session: each call on a fresh connection, then its answer and a
    tool result ("tool result <tag><step>") appended."""
    messages = list(opening)
    for step in range(calls):
        body = {"model": MODEL, "messages": messages, "max_tokens": 6}
        status, text = await fresh_call(saga.url, body)
        assert status == 200, text
        answer = json.loads(text)["choices"][0]["message"]
        messages = [*messages, {"role": "assistant", "content": answer["content"]}]
        messages.append({"role": "user", "content": f"tool result {tag}{step}"})


async def test_an_inferred_conversation_stays_with_one_worker(saga: Saga) -> None:
    """No session id: each later call goes to the worker that served the answer it repeats."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the inferred-conversation test agent."},
        {"role": "user", "content": "first task"},
    ]
    await conversation(saga, messages, 4, "")
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    inferred = [{k: v for k, v in w.items() if k.startswith("conv-")} for w in scheduled]
    assert sorted(len(w) for w in inferred) == [0, 1], inferred  # one session, on one worker
    assert sum(sum(w.values()) for w in inferred) == 4


async def sessions_of_opening(saga: Saga, opening: list[dict[str, Any]]) -> tuple[str, list[dict[str, int]]]:
    """The id a conversation of `opening` is owned by, and each worker's sessions of that opening."""
    from multidict import CIMultiDict

    from proxy.identity import decode_call, ownership_key

    key = ownership_key(CIMultiDict(), decode_call(json.dumps({"messages": opening}).encode()))[0]
    assert key is not None
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    return key, [{k: v for k, v in w.items() if k.startswith(key)} for w in scheduled]


async def test_conversations_sharing_an_opening_are_spread_and_each_stays_on_its_worker(saga: Saga) -> None:
    """No session id, and one opening for all (a load test's fixed prompt, or agents given one task): each
    conversation's first call is served where the kernel sent it, and every later call goes to the worker
    that served the answer it repeats (proxy/response_owners.py `ChainOwners`), so the conversations are
    spread over both workers and none is split. (Before, the opening's owner served them all.)"""
    opening: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the shared-opening test agent."},
        {"role": "user", "content": "the one task"},
    ]
    conversations = 16
    for n in range(conversations):  # one after another: every answer differs (the simulator's seed moves)
        await conversation(saga, opening, 3, f"{n}.")
    key, ours = await sessions_of_opening(saga, opening)
    assert all(calls == 3 for w in ours for calls in w.values()), ours  # no conversation split
    assert sum(len(w) for w in ours) == conversations, ours
    assert all(ours), ours  # both workers served some (all on one: a chance of 2 in 65,536)
    # ids stay apart: the bare opening's id only where its owner served a first call
    bare = [i for i, w in enumerate(ours) if key in w]
    assert bare in ([], [owner_of(key, 2)]), ours


async def test_conversations_going_on_with_any_of_n_choices_each_stay_on_their_worker(saga: Saga) -> None:
    """As above, each call asking for three choices and the conversation going on with one of them (not
    always the first): the worker that served the answer recorded every choice, so the next call finds it
    whichever choice it repeats, and no conversation is split."""
    opening: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the n-choices test agent."},
        {"role": "user", "content": "the one task"},
    ]
    conversations = 8
    for n in range(conversations):
        messages = list(opening)
        for step in range(3):
            body = {"model": MODEL, "messages": messages, "max_tokens": 6, "n": 3}
            status, text = await fresh_call(saga.url, body)
            assert status == 200, text
            picked = json.loads(text)["choices"][(n + step) % 3]["message"]["content"]
            messages = [*messages, {"role": "assistant", "content": picked}]
            messages.append({"role": "user", "content": f"tool result {n}.{step}"})
    _, ours = await sessions_of_opening(saga, opening)
    assert all(calls == 3 for w in ours for calls in w.values()), ours  # no conversation split
    assert sum(len(w) for w in ours) == conversations, ours


async def test_an_agent_that_compacts_its_history_keeps_its_session_whichever_worker_reads_it(
    saga: Saga,
) -> None:
    """An agent naming no session asks for a summary and starts a new conversation from it: only the worker
    that served the summary holds the session it goes on in (proxy/quoted_answers.py), so the new
    conversation's first call goes there, whichever worker the kernel gave its connection to
    (proxy/response_owners.py `QuoteOwners`). Before, it was served where it was read: 5-6 of 12 compactions
    kept their session with two workers."""

    async def call(messages: list[dict[str, Any]], max_tokens: int) -> tuple[str, str]:
        body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(f"{saga.url}/v1/chat/completions", json=body) as r,
        ):
            assert r.status == 200, await r.text()
            return r.headers["X-Session-ID"], (await r.json())["choices"][0]["message"]["content"]

    agents = 8  # each kept its session by chance before with probability 1/2: all 8, 1 in 256
    kept = []
    for n in range(agents):
        system = {"role": "system", "content": f"You are compacting agent {n}."}
        messages: list[dict[str, Any]] = [system, {"role": "user", "content": f"task {n}"}]
        before, text = await call(messages, 8)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Summarize."}]
        session, summary = await call(messages, 80)  # (the simulated replica's words, one long line)
        assert session == before  # asked in the conversation
        again = [system, {"role": "user", "content": f"Earlier work, summarized:\n{summary}\nGo on."}]
        kept.append((await call(again, 8))[0] == before)
    assert kept == [True] * agents, kept


async def test_a_compactions_first_call_sent_again_after_a_dropped_stream_keeps_the_session(
    saga: Saga,
) -> None:
    """As above, the new conversation's first call streamed and dropped after its first event, twice, then
    sent a third time (a client retrying): every attempt goes on in the session, whichever worker reads it.
    Before, an attempt read by the worker that had sent an earlier one on (claiming the summary's lines in
    the workers' table) found nothing there and started a session of its own: 2-7 of 8 linked."""

    async def call(messages: list[dict[str, Any]], max_tokens: int, drop: bool = False) -> tuple[str, str]:
        body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(f"{saga.url}/v1/chat/completions", json={**body, "stream": drop}) as r,
        ):
            assert r.status == 200, await r.text()
            if drop:
                await r.content.readline()  # its first event; then the client gives up
                r.close()
                return r.headers["X-Session-ID"], ""
            return r.headers["X-Session-ID"], (await r.json())["choices"][0]["message"]["content"]

    agents = 12  # an attempt read where an earlier one was sent on: 5 of 8 agents meet none, 12 of 12 0.4%
    attempts = []
    for n in range(agents):
        system = {"role": "system", "content": f"You are retrying compacting agent {n}."}
        messages: list[dict[str, Any]] = [system, {"role": "user", "content": f"task {n}"}]
        before, text = await call(messages, 8)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Summarize."}]
        _, summary = await call(messages, 80)
        again = [system, {"role": "user", "content": f"Earlier work, summarized:\n{summary}\nGo on."}]
        sessions = [(await call(again, 400, drop=True))[0] for _ in range(2)]
        sessions.append((await call(again, 8))[0])
        attempts.append(sessions == [before] * 3)
    assert attempts == [True] * agents, attempts


async def test_subagents_given_an_orchestrators_plan_are_spread_over_the_workers(saga: Saga) -> None:
    """Subagents of an orchestrator's system prompt each start a conversation quoting its plan: one takes up
    the orchestrator's session, as in one process (taken for a compaction: docs/config.md), and the others
    are served where they were read. Found by the fifty-third session's review: every subagent was sent to
    the worker that served the plan (16 of 16, three rounds), so a fan-out ran on one worker."""
    system = {"role": "system", "content": "You are a member of the fan-out test team."}
    messages: list[dict[str, Any]] = [system, {"role": "user", "content": "Plan the work."}]
    body = {"model": MODEL, "max_tokens": 8, "ignore_eos": True}
    status, text = await fresh_call(saga.url, {**body, "messages": messages})
    assert status == 200, text
    messages += [json.loads(text)["choices"][0]["message"], {"role": "user", "content": "The plan, now."}]
    status, text = await fresh_call(saga.url, {**body, "messages": messages, "max_tokens": 80})
    assert status == 200, text
    plan = json.loads(text)["choices"][0]["message"]["content"]
    subagents = 12  # all on one worker by chance, as before: 1 in 2,048
    earlier = [set(await sessions_of(saga, 0)), set(await sessions_of(saga, 1))]
    for n in range(subagents):
        quoting = {"role": "user", "content": f"Plan:\n{plan}\nYour subtask: part {n}."}
        status, text = await fresh_call(saga.url, {**body, "messages": [system, quoting]})
        assert status == 200, text
    new = [set(await sessions_of(saga, i)) - earlier[i] for i in (0, 1)]
    assert sum(map(len, new)) == subagents - 1, new  # one took the orchestrator's session up
    assert all(new), new  # both workers serve some


def request_bytes(path: str, body: dict[str, Any] | None, close: bool = False) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    method = "GET" if body is None else "POST"
    head = f"{method} {path} HTTP/1.1\r\nHost: saga\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(payload)}\r\n" + ("Connection: close\r\n" if close else "")
    return head.encode() + b"\r\n" + payload


class _Answers:
    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []
        self.parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.answers.append((self.parser.get_status_code(), b"".join(self._body)))
        self._body = []


async def pipelined(url: str, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Sends every request at once on one keep-alive connection; the answers, as they came, to the close."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"".join(requests))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 60)  # to the close the last request asks for
    writer.close()
    answers = _Answers()
    answers.parser.feed_data(data)
    return answers.answers


async def test_pipelined_requests_of_sessions_owned_by_different_workers_are_answered_in_order(
    saga: Saga,
) -> None:
    zero, one = owned_by(0, 3, "pipe"), owned_by(1, 3, "pipe")
    prompt = {"model": MODEL, "prompt": "once upon", "max_tokens": 3}
    requests = [
        request_bytes("/v1/chat/completions", chat(zero[0])),
        request_bytes("/v1/completions", {**prompt, "session_id": one[0]}),
        request_bytes("/health", None),
        request_bytes("/v1/chat/completions", chat(one[1], stream=True)),
        request_bytes("/v1/completions", {**prompt, "session_id": zero[1]}),
        request_bytes("/v1/chat/completions", chat(zero[2])),
        request_bytes("/v1/chat/completions", chat(one[2]), close=True),
    ]
    for _ in range(3):  # whichever worker accepts the connection, it changes hands on the way
        answers = await pipelined(saga.url, requests)
        assert [status for status, _ in answers] == [200] * 7, answers
        kinds = []
        for _, body in answers:
            if body.startswith(b"data:"):
                kinds.append("stream")
            else:
                kinds.append(json.loads(body).get("object", "health"))
        assert kinds == [
            "chat.completion",
            "text_completion",
            "health",
            "stream",
            "text_completion",
            "chat.completion",
            "chat.completion",
        ]
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    for s in zero + one:
        assert scheduled[owner_of(s, 2)].get(s) == 3, (s, scheduled)


async def test_refusals_are_answered_where_they_are_read(saga: Saga) -> None:
    for _ in range(6):  # fresh connections: both workers read some
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(f"{saga.url}/v1/chat/completions", data=b"{not json") as bad_json,
        ):
            assert bad_json.status == 400
            assert (await bad_json.json())["error"]["code"] == "invalid_request_body"
        status, text = await fresh_call(saga.url, chat("caf\u00e9 session"))  # not printable ASCII
        assert status == 400
        assert json.loads(text)["error"]["code"] == "invalid_identity"


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def wait_for(condition: Any, what: str, saga: Saga) -> None:
    deadline = time.monotonic() + START_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{''.join(saga.output)}"
        time.sleep(0.1)


async def test_a_killed_worker_is_restarted_and_sigterm_stops_everything(tmp_path: Path) -> None:
    with saga_workers(tmp_path) as saga:
        before = saga.children()
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: len(saga.children()) == 2 and before[0] not in saga.children(), "no restart", saga)
        ready = [Path(saga.workers.directory) / f"ready-{i}" for i in range(2)]
        wait_for(lambda: all(p.exists() for p in ready), "the restarted worker is not ready", saga)
        sessions = owned_by(0, 2, "restart") + owned_by(1, 2, "restart")
        for s in sessions * 2:  # both workers serve, and hand connections to each other again
            status, text = await fresh_call(saga.url, chat(s))
            assert status == 200, text
        scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
        for s in sessions:
            assert scheduled[owner_of(s, 2)].get(s) == 2, (s, scheduled)
        children = saga.children()
        saga.proc.send_signal(signal.SIGTERM)
        assert saga.proc.wait(timeout=30) == 0, "".join(saga.output)
        assert not any(_alive(pid) for pid in children)
        assert not saga.directory.exists()


def test_workers_need_the_fast_server(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", "http://127.0.0.1:9", "--workers", "2"]
    cmd += ["--server", "aiohttp"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "workers > 1 needs server: fast" in done.stderr


# ---- the pure parts ----------------------------------------------------------------------------------


def test_ownership_key_follows_the_session_precedence() -> None:
    from multidict import CIMultiDict

    from proxy.identity import decode_call, ownership_key

    def key(headers: dict[str, str], body: dict[str, Any]) -> str | None:
        return ownership_key(CIMultiDict(headers), decode_call(json.dumps(body).encode()))[0]

    assert key({"X-Session-Id": "h"}, {"session_id": "b", "prompt_cache_key": "p"}) == "h"
    assert key({}, {"session_id": "b", "prompt_cache_key": "p"}) == "b"
    assert key({}, {"prompt_cache_key": "p", "vllm_xargs": {"session_id": "x"}}) == "p"
    assert key({}, {"vllm_xargs": {"session_id": "x"}}) == "x"
    assert key({"X-Session-Id": "bad\x01"}, {"session_id": "b"}) is None  # refused where it is read
    # no key: the call goes to the worker that served that response (proxy/response_owners.py)
    assert key({}, {"input": "go on", "previous_response_id": "resp-1"}) is None
    assert key({}, {"prompt": "a completion of its own"}) is None
    opening = [{"role": "system", "content": "agent"}, {"role": "user", "content": "task"}]
    first = key({}, {"messages": opening})
    later = key(
        {}, {"messages": [*opening, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}
    )
    assert first is not None and first.startswith("conv-") and first == later
    # a chat call naming no session is read once: its messages and their chain, for the worker's choice
    seen = ownership_key(
        CIMultiDict(),
        decode_call(json.dumps({"messages": [*opening, {"role": "assistant", "content": "a"}]}).encode()),
    )[1]
    assert seen is not None and len(seen.chain) == 3 and seen.assistants == [2] and not seen.opening_elsewhere
    assert ownership_key(CIMultiDict(), decode_call(b'{"messages": [], "session_id": "s"}'))[1] is None
    assert (
        key({}, {"messages": [{"role": "system", "content": "agent"}, {"role": "user", "content": "other"}]})
        != first
    )


def test_message_start_finds_a_pipelined_request_after_served_ones() -> None:
    from proxy.fast_server import _message_start

    chunked = b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    plain = request_bytes("/v1/chat/completions", chat("s"))
    data = plain + chunked + b"GET /health HTTP/1.1\r\n\r\n" + plain[:20]
    assert _message_start(data, 0) == 0
    assert _message_start(data, 1) == len(plain)
    assert _message_start(data, 2) == len(plain) + len(chunked)
    assert _message_start(data, 3) == len(data) - 20


async def test_a_connection_pooled_across_sessions_moves_once_then_relays(saga: Saga) -> None:
    """One keep-alive connection carrying both workers' sessions in turn (a client pooling connections
    across agents): it moves to another worker at most once; later calls of the other worker's sessions are
    relayed to it. Either way each session is scheduled by its owner."""
    sessions = owned_by(0, 2, "pooled") + owned_by(1, 2, "pooled")
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for step in range(3):
            for s in sessions:
                body = chat(s, f"step {step}", stream=s == sessions[-1])
                async with http.post(f"{saga.url}/v1/chat/completions", json=body) as r:
                    text = await r.text()
                    assert r.status == 200, text
                    if s == sessions[-1]:
                        assert text.rstrip().endswith("data: [DONE]")
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    for s in sessions:
        assert scheduled[owner_of(s, 2)].get(s) == 3, (s, scheduled)
        assert s not in scheduled[1 - owner_of(s, 2)]


async def test_a_replica_sees_the_clients_headers_whichever_worker_served_the_call(tmp_path: Path) -> None:
    """Calls read by one worker and relayed to the other (a pooled connection), or moved to it, reach the
    replica with the client's X-Forwarded-For as sent, as a call served where it was read does (the relay
    replaced it with the reading worker's peer address)."""
    sessions = owned_by(0, 2, "forwarded") + owned_by(1, 2, "forwarded")
    headers = {"X-Forwarded-For": "203.0.113.7"}
    async with fake_replica() as replica:
        workers = saga_workers(tmp_path, replicas=[replica.url])
        saga = await asyncio.to_thread(workers.__enter__)  # the replica answers while the workers start
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
                for step in range(2):
                    for s in sessions:
                        body = chat(s, f"step {step}")
                        async with http.post(
                            f"{saga.url}/v1/chat/completions", json=body, headers=headers
                        ) as r:
                            assert r.status == 200, await r.text()
            relayed = await relayed_by(saga, 0) + await relayed_by(saga, 1)
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)
    assert relayed > 0  # some calls did cross between the workers
    assert len(replica.headers) == 2 * len(sessions)
    for seen in replica.headers:
        assert seen.get("X-Forwarded-For") == "203.0.113.7", seen
        assert LOCAL_HEADER not in seen


async def relayed_by(saga: Saga, index: int) -> float:
    """The calls worker `index` relayed to their owners (its own count, not gathered)."""
    connector = aiohttp.UnixConnector(path=saga.workers.app_socket(index))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get("http://worker/metrics", headers={LOCAL_HEADER: "1"}) as r,
    ):
        assert r.status == 200
        text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith('saga_handoffs_total{kind="relayed"}'))
    return float(line.split()[-1])


def worker_pid(saga: Saga, index: int) -> int:
    for pid in saga.children():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"SAGA_WORKER_INDEX={index}".encode() in environ:
            return pid
    raise AssertionError(f"no worker {index} among {saga.children()}")


async def test_relayed_calls_reach_their_owner_after_it_restarts(tmp_path: Path) -> None:
    """The reader keeps its connections to the owner's calls socket pooled: once the owner restarts, later
    calls of its sessions are relayed to the new process (a connection made afresh), still scheduled there."""
    with saga_workers(tmp_path) as saga:
        sessions = owned_by(0, 1, "restarted") + owned_by(1, 1, "restarted")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:

            async def calls(stream: bool) -> None:
                for s in sessions * 2:
                    body = chat(s, stream=stream)
                    async with http.post(f"{saga.url}/v1/chat/completions", json=body) as r:
                        text = await r.text()
                        assert r.status == 200, text

            await calls(False)  # the connection moves once, then the other worker's calls are relayed
            relayed = [await relayed_by(saga, 0), await relayed_by(saga, 1)]
            reader = 0 if relayed[0] > 0 else 1
            assert relayed[reader] > 0 and relayed[1 - reader] == 0, relayed
            victim = worker_pid(saga, 1 - reader)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(saga.children()) == 2 and victim not in saga.children(), "no restart", saga)
            ready = Path(saga.workers.directory) / f"ready-{1 - reader}"
            wait_for(ready.exists, "the restarted worker is not ready", saga)
            await calls(True)
            assert await relayed_by(saga, reader) == relayed[reader] + 2
        scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
        for s in sessions:
            owner = owner_of(s, 2)
            assert scheduled[owner].get(s) == (4 if owner == reader else 2), (s, scheduled)
            assert s not in scheduled[1 - owner]


async def test_a_large_request_is_handed_over_whole(saga: Saga) -> None:
    """A body bigger than a Unix socket's buffer: the hand-off frame is finished in the background."""
    sessions = owned_by(0, 1, "large") + owned_by(1, 1, "large")
    padding = "x" * (3 * 1024 * 1024)
    for _ in range(3):
        for s in sessions:
            status, text = await fresh_call(saga.url, chat(s, metadata={"padding": padding}))
            assert status == 200, text[:300]
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    for s in sessions:
        assert scheduled[owner_of(s, 2)].get(s) == 3, (s, scheduled)


async def test_pipelined_requests_over_the_hand_off_bound_are_relayed_to_their_owners(tmp_path: Path) -> None:
    """What a connection keeps for a move is bounded (max_body_bytes + the head limit): past it, the
    connection stays where it is and the calls of other workers' sessions on it are relayed."""
    with saga_workers(tmp_path, "--max-body-bytes", "4096") as saga:
        sessions = owned_by(0, 3, "bound") + owned_by(1, 3, "bound")
        padding = {"padding": "p" * 3000}
        prompt = {"model": MODEL, "prompt": "once upon", "max_tokens": 3, "metadata": padding}
        requests = []
        for i in range(30):  # ~100 kB at once: over 4 kB + 64 kB
            s = sessions[i % len(sessions)]
            if i % 2:
                requests.append(request_bytes("/v1/completions", {**prompt, "session_id": s}, close=i == 29))
            else:
                requests.append(request_bytes("/v1/chat/completions", chat(s, metadata=padding)))
        answers = await pipelined(saga.url, requests)
        assert [status for status, _ in answers] == [200] * 30, answers[:3]
        kinds = [json.loads(body)["object"] for _, body in answers]
        assert kinds == ["chat.completion", "text_completion"] * 15
        scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
        for s in sessions:
            assert scheduled[owner_of(s, 2)].get(s) == 5, (s, scheduled)


async def test_calls_on_a_connection_that_declined_an_upgrade_or_ends_in_a_refusal_reach_their_owners(
    saga: Saga,
) -> None:
    """A connection whose first request offered an upgrade (`curl --http2` on http://: `Upgrade: h2c`) is
    read again without it, so its bytes cannot be handed on as they came; nor can those of pipelined calls
    ahead of a malformed request. Their calls are relayed to their owners, not served where they were read
    (which split a session between the workers)."""
    upgrade = (
        "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    )
    sessions = []
    for k in range(3):  # whichever worker accepts each connection, some of its calls are the other's
        zero, one = owned_by(0, 1, f"upgrade{k}")[0], owned_by(1, 1, f"upgrade{k}")[0]
        sessions += [zero, one]
        offer = request_bytes("/v1/chat/completions", chat(zero)).replace(
            b"\r\n\r\n", f"\r\n{upgrade}\r\n".encode(), 1
        )
        follow = [request_bytes("/v1/chat/completions", chat(s)) for s in (one, zero)]
        answers = await pipelined(
            saga.url, [offer, *follow, request_bytes("/v1/chat/completions", chat(one), close=True)]
        )
        assert [status for status, _ in answers] == [200] * 4, answers
        zero, one = owned_by(0, 1, f"refused{k}")[0], owned_by(1, 1, f"refused{k}")[0]
        sessions += [zero, one]
        calls = [request_bytes("/v1/chat/completions", chat(s)) for s in (zero, one)]
        answers = await pipelined(saga.url, [*calls, b"NOT HTTP\x00\r\n\r\n"])
        assert [status for status, _ in answers] == [200, 200, 400], answers
    scheduled = [await sessions_of(saga, 0), await sessions_of(saga, 1)]
    for s in sessions:
        assert s in scheduled[owner_of(s, 2)], (s, scheduled)
        assert s not in scheduled[1 - owner_of(s, 2)], (s, scheduled)


async def test_a_relayed_call_gets_one_access_log_line(saga: Saga) -> None:
    """docs/config.md `access_log`: one line per request. A call relayed to its owner is logged by the
    worker that read it (with the client's address), not by the owner as well."""
    sessions = owned_by(0, 2, "logged") + owned_by(1, 2, "logged")
    url = f"{saga.url}/v1/chat/completions?trace=relayed-once"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        for step in range(2):  # one connection across both workers' sessions: it moves once, then relays
            for s in sessions:
                async with http.post(url, json=chat(s, f"step {step}")) as r:
                    assert r.status == 200, await r.text()
    calls = 2 * len(sessions)

    def logged() -> list[str]:
        return [line for line in list(saga.output) if "relayed-once" in line and "saga.access" in line]

    wait_for(lambda: len(logged()) >= calls, "the calls' access-log lines", saga)
    await asyncio.sleep(1.0)  # access lines are written in batches every 0.2 s: any more are out by now
    lines = logged()
    assert len(lines) == calls, lines
    assert all(" 127.0.0.1 " in line for line in lines), lines


def test_workers_that_keep_exiting_stop_the_supervisor(tmp_path: Path) -> None:
    with saga_workers(tmp_path) as saga:
        for _ in range(5):  # supervisor.MAX_EXITS within EXIT_WINDOW_S
            victims = saga.children()
            assert victims, "".join(saga.output)
            os.kill(victims[0], signal.SIGKILL)
            wait_for(
                lambda v=victims[0]: saga.proc.poll() is not None or v not in saga.children(),
                "no exit seen",
                saga,
            )
            wait_for(lambda: saga.proc.poll() is not None or len(saga.children()) == 2, "no restart", saga)
        assert saga.proc.wait(timeout=60) == 1
        wait_for(
            lambda: any("saga: error: workers exited 5 times" in x for x in saga.output), "no message", saga
        )
        assert not saga.directory.exists()


async def replica_rows(saga: Saga, index: int) -> dict[str, bool]:
    """Worker `index`'s own replicas (not gathered): URL -> draining."""
    return {
        r["replica_id"]: r["draining"]
        for r in (await local_get(saga, index, "/saga/v1/replicas"))["replicas"]
    }


async def test_a_restarted_worker_applies_the_replica_changes_made_before_it_started(tmp_path: Path) -> None:
    """Replicas added, drained and removed through the admin API before a worker is restarted: the new
    process starts from the configuration, and without `replica-changes.json` it would route to the removed
    replica, never to the added one, and keep serving from the draining one."""
    async with fake_replica() as kept, fake_replica() as drained, fake_replica() as removed:
        added = "http://127.0.0.1:9"  # never answers: only the replica set is checked
        workers = saga_workers(tmp_path, replicas=[kept.url, drained.url, removed.url])
        saga = await asyncio.to_thread(workers.__enter__)  # the replicas answer while the workers start
        try:
            async with aiohttp.ClientSession() as http:
                for path, url in (("", added), ("/drain", drained.url), ("/remove", removed.url)):
                    async with http.post(f"{saga.url}/saga/v1/replicas{path}", json={"url": url}) as r:
                        assert r.status in (200, 201), await r.text()
            wanted = {kept.url: False, drained.url: True, added: False}
            assert [await replica_rows(saga, 0), await replica_rows(saga, 1)] == [wanted, wanted]
            victim = worker_pid(saga, 1)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + START_S
            while True:  # until the new worker 1 answers on its app socket
                assert time.monotonic() < deadline, "".join(saga.output)
                if victim not in saga.children():
                    with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                        rows = await replica_rows(saga, 1)
                        break
                await asyncio.sleep(0.1)
            assert rows == wanted, "".join(saga.output[-20:])
            async with (  # a change after the restart still reaches every worker, and the record
                aiohttp.ClientSession() as http,
                http.post(f"{saga.url}/saga/v1/replicas", json={"url": removed.url}) as r,
            ):
                assert r.status == 201, await r.text()
            record = json.loads((saga.directory / "replica-changes.json").read_text())
            assert record == {"added": sorted([added, removed.url]), "draining": [drained.url], "removed": []}
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)


async def test_a_restarted_worker_runs_the_configuration_the_proxy_started_with(tmp_path: Path) -> None:
    """The file was read again by each restarted worker: edited since, one worker took the new admin token and
    the other kept the old; left half written, every restart failed until the supervisor stopped them all."""
    file = tmp_path / "saga.yaml"
    file.write_text("admin_token: first-token\n")
    with saga_workers(tmp_path, "--config", str(file)) as saga:
        config_file = saga.directory / "config.json"
        assert config_file.stat().st_mode & 0o777 == 0o600  # it holds the admin token
        file.write_text("admin_token: [\n")  # an operator's edit, half written
        victim = worker_pid(saga, 1)
        os.kill(victim, signal.SIGKILL)
        bearer = {LOCAL_HEADER: "1", "Authorization": "Bearer first-token"}
        connector = aiohttp.UnixConnector(path=saga.workers.app_socket(1))
        deadline = time.monotonic() + START_S
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:  # until the new worker 1 answers on its app socket
                assert time.monotonic() < deadline and saga.proc.poll() is None, "".join(saga.output[-20:])
                if victim not in saga.children():
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get("http://worker/saga/v1/state", headers=bearer) as r:
                            restarted = r.status
                            break
                await asyncio.sleep(0.1)
        assert restarted == 200
        for index in (0, 1):
            await local_get(saga, index, "/saga/v1/state", token="first-token")
        status, text = await fresh_call(saga.url, chat("after-restart"))
        assert status == 200, text


async def test_another_tenants_response_is_not_continued_whatever_session_the_call_names(
    tmp_path: Path,
) -> None:
    """A call naming a session went to that session's worker, which had no record of the response it named:
    tenant B continued tenant A's stored response (its input and all) whenever B's session was owned by the
    worker that had not served it."""
    file = tmp_path / "saga.yaml"
    file.write_text("api_keys: {sk-a: team-a, sk-b: team-b}\n")
    with saga_workers(tmp_path, "--config", str(file)) as saga:
        a, b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
        body = {"model": MODEL, "input": "tenant A's secret", "store": True, "max_output_tokens": 3}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(f"{saga.url}/v1/responses", json=body, headers=a) as r,
        ):
            assert r.status == 200, await r.text()
            stored = (await r.json())["id"]
        answers = []
        sessions = owned_by(0, 3, "b") + owned_by(1, 3, "b")  # some on each worker
        for tenant, session in [(b, s) for s in sessions] + [
            (a, s) for s in owned_by(0, 1, "a") + owned_by(1, 1, "a")
        ]:
            body = {"model": MODEL, "input": "go on", "previous_response_id": stored, "max_output_tokens": 3}
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                http.post(
                    f"{saga.url}/v1/responses", json=body, headers={**tenant, "X-Session-ID": session}
                ) as r,
            ):
                answers.append(r.status)
    assert answers == [404] * 6 + [200] * 2, answers


async def test_the_replicas_listing_counts_each_call_in_flight_once(tmp_path: Path) -> None:
    """`GET /saga/v1/replicas` summed every worker's `in_flight`, each of which counts the other workers'
    calls as last synced: 4 calls in flight were listed as 8 with two workers (`/metrics` and
    `/saga/v1/state` said 4). Each worker's row now says which part is the others' and the sum takes its
    own."""
    with saga_workers(tmp_path, "--time-scale", "1") as s:
        sessions = owned_by(0, 2, "left")[:2] + owned_by(1, 2, "right")[:2]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            streams = [
                await http.post(
                    f"{s.url}/v1/chat/completions",
                    json=chat(sid, stream=True, max_tokens=2000, ignore_eos=True),
                )
                for sid in sessions
            ]
            try:
                for r in streams:
                    await r.content.readline()
                state: dict[str, Any] = {}
                for _ in range(100):  # until both workers synced the others' calls (every 15 ms)
                    async with http.get(f"{s.url}/saga/v1/state") as r:
                        state = await r.json()
                    if state["in_flight"] == 4:
                        break
                    await asyncio.sleep(0.05)
                assert state["in_flight"] == 4, state
                async with http.get(f"{s.url}/saga/v1/replicas") as r:
                    rows = (await r.json())["replicas"]
                assert sum(row["in_flight"] for row in rows) == 4, rows
                assert all("foreign_in_flight" not in row for row in rows)
            finally:
                for r in streams:
                    r.close()


async def test_one_api_key_names_one_tenant_on_every_worker(saga: Saga) -> None:
    """Tenants named by API key are keyed with a secret (proxy/identity.py): the supervisor's, so both workers
    name a client's key the same (else its sessions on one worker and the other were two tenants)."""
    sessions = [owned_by(0, 1, "keyed-a")[0], owned_by(1, 1, "keyed-b")[0]]
    for sid in sessions:
        status, _ = await fresh_call(saga.url, chat(sid), {"Authorization": "Bearer sk-one-client"})
        assert status == 200
    tenants = set()
    for index, sid in enumerate(sessions):
        listed = (await local_get(saga, index, "/saga/v1/sessions"))["sessions"]
        tenants |= {s["tenant_id"] for s in listed if s["session_id"] == sid}
    assert len(tenants) == 1 and next(iter(tenants)).startswith("key-"), tenants


async def test_an_admin_refusal_relayed_between_workers_keeps_its_allow_header(saga: Saga) -> None:
    """An admin call read by worker 1 is carried out by worker 0, whose answer was relayed without its header
    fields: a 405 lost its `Allow` about half the time (found by the eighth review)."""
    for _ in range(8):  # fresh connections: the kernel picks either worker
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(f"{saga.url}/saga/v1/state") as r,
        ):
            assert r.status == 405 and r.headers.get("Allow") == "GET,HEAD", dict(r.headers)


async def test_a_worker_restarted_without_the_tenant_key_says_so(tmp_path: Path) -> None:
    """A worker restarted after `tenant.key` was removed from the worker directory took a random secret of its
    own without a word: one API key named two tenants (found by the eighth review)."""
    with saga_workers(tmp_path) as s:
        await asyncio.to_thread((s.directory / "tenant.key").unlink)
        os.kill(worker_pid(s, 1), signal.SIGKILL)
        wait_for(lambda: any("no tenant.key" in line for line in s.output), "the restarted worker's error", s)
