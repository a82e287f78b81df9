"""With workers, /metrics and the /saga/v1/* API answer for every worker process (proxy/worker_gather.py).

In process: N proxies, each given `WorkerSet(i, N, dir)` (its aiohttp app on `app_socket(i)`), in front of
fake replicas; calls are sent to each worker directly and any worker is asked for the whole proxy."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy import server
from proxy.graph_routes import merge_graphs
from proxy.metrics import GAUGE_RULES, merge_expositions
from proxy.scheduler.release import ReleaseQueueSpec
from proxy.server import running_proxy
from proxy.worker_gather import Gathered, Gatherer, WorkerAnswer, merge_replica_rows
from proxy.worker_set import LOCAL_HEADER, WorkerSet
from tests.proxy.fakes import config, fake_replica, session_owned_by

ADMIN = {"Authorization": "Bearer adm"}
CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def _fast_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers need the fast server (proxy/config.py): only it puts each worker's app on its app socket.
    monkeypatch.setattr(server, "server_kind", lambda config: "fast")


@pytest.fixture
def worker_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="saga-w-")  # short: a Unix socket's path has a length limit
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Workers:
    """N proxies as the workers of one; each can be stopped on its own."""

    def __init__(self, directory: str, count: int) -> None:
        self.directory, self.count = directory, count
        self.urls: list[str] = []
        self.stacks: list[contextlib.AsyncExitStack] = []

    async def start(self, replicas: list[str], **settings: Any) -> None:
        self.replicas, self.settings = replicas, settings
        for i in range(self.count):
            url, stack = await self._start(i)
            self.urls.append(url)
            self.stacks.append(stack)

    async def _start(self, index: int) -> tuple[str, contextlib.AsyncExitStack]:
        stack = contextlib.AsyncExitStack()
        workers = WorkerSet(index, self.count, self.directory)
        proxy = running_proxy(config(self.replicas, **self.settings), workers=workers)
        return await stack.enter_async_context(proxy), stack

    async def restart(self, index: int) -> None:
        """A new process for worker `index`, as the supervisor starts after one exited."""
        await self.stop(index)
        self.urls[index], self.stacks[index] = await self._start(index)

    async def stop(self, index: int) -> None:
        await self.stacks[index].aclose()

    async def close(self) -> None:
        for stack in self.stacks:
            await stack.aclose()

    async def local(self, index: int, path: str) -> dict[str, Any]:
        """Worker `index`'s own answer, asked over its app socket as another worker would."""
        connector = aiohttp.UnixConnector(path=WorkerSet(index, self.count, self.directory).app_socket(index))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get("http://saga" + path, headers={LOCAL_HEADER: "1", **ADMIN}) as r,
        ):
            assert r.status == 200
            answer: dict[str, Any] = await r.json()
            return answer


@contextlib.asynccontextmanager
async def workers_of(
    directory: str, count: int, replicas: list[str], **settings: Any
) -> AsyncIterator[Workers]:
    workers = Workers(directory, count)
    try:
        await workers.start(replicas, **settings)
        yield workers
    finally:
        await workers.close()


@contextlib.asynccontextmanager
async def one_of_two_added(directory: str, count: int) -> AsyncIterator[tuple[Any, Any, Workers]]:
    """`count` workers (admin token "adm") in front of the first of two fake replicas; the second to add."""
    async with (
        fake_replica() as first,
        fake_replica() as second,
        workers_of(directory, count, [first.url], admin_token="adm") as w,
    ):
        yield first, second, w


async def chat(http: aiohttp.ClientSession, url: str, session_id: str) -> int:
    body = {"messages": [{"role": "user", "content": "hello"}]}
    headers = {"X-Session-ID": session_id, "X-Agent-Type": "coder"}
    async with http.post(url + CHAT, json=body, headers=headers) as r:
        await r.read()
        return r.status


async def metrics(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> dict[tuple[str, tuple[Any, ...]], float]:
    async with http.get(url + "/metrics", headers=headers) as r:
        assert r.status == 200
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):  # raises on an invalid exposition
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def get_json(http: aiohttp.ClientSession, url: str, path: str, **headers: str) -> dict[str, Any]:
    async with http.get(url + path, headers={**ADMIN, **headers}) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


async def post_json(
    http: aiohttp.ClientSession, url: str, path: str, body: object = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(url + path, json=body, headers={**ADMIN, **headers}) as r:
        return r.status, await r.json()


async def test_any_worker_answers_metrics_and_sessions_for_all(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    async with fake_replica() as replica, workers_of(worker_dir, 3, [replica.url], admin_token="adm") as w:
        sent = {f"s-{i}-{k}" for i in range(3) for k in range(i + 1)}  # 1, 2 and 3 sessions to workers 0-2
        for session_id in sorted(sent):
            assert await chat(http, w.urls[int(session_id.split("-")[1])], session_id) == 200
        by_worker = [await metrics(http, url) for url in w.urls]
        listings = [await get_json(http, url, "/saga/v1/sessions") for url in w.urls]
        state = await get_json(http, w.urls[1], "/saga/v1/state")
        replicas = await get_json(http, w.urls[2], "/saga/v1/replicas")
        queue = await get_json(http, w.urls[0], "/saga/v1/queue")
        own = [(await w.local(i, "/saga/v1/sessions"))["total"] for i in range(3)]
        pages: list[list[str]] = []
        offset: int | None = 0
        while offset is not None:  # `offset` and `limit` page each worker's own table
            page = await get_json(http, w.urls[0], f"/saga/v1/sessions?limit=1&offset={offset}")
            pages.append(sorted(s["session_id"] for s in page["sessions"]))
            offset = page["next_offset"]
    assert [len(p) for p in pages] == [3, 2, 1] and sorted(s for p in pages for s in p) == sorted(sent)
    for samples in by_worker:
        assert value(samples, "saga_calls_total", route=CHAT, status="200") == 6
        assert value(samples, "saga_call_latency_seconds_count") == 6
        assert value(samples, "saga_call_latency_seconds_bucket", le="+Inf") == 6
        assert value(samples, "saga_sessions") == 6
        assert value(samples, "saga_replica_healthy", replica=replica.url) == 1  # one value, not three
        assert value(samples, "saga_workers") == 3 and value(samples, "saga_workers_reporting") == 3
    assert sum(own) == 6  # each worker alone knows only its own
    for listing in listings:
        assert {s["session_id"] for s in listing["sessions"]} == sent and listing["total"] == 6
        assert all(s["worker"] in (0, 1, 2) for s in listing["sessions"]) and listing["workers_missing"] == []
    assert state["sessions"] == 6 and state["in_flight"] == 0 and len(state["replicas"]) == 1
    assert replicas["replicas"][0]["replica_id"] == replica.url and replicas["replicas"][0]["healthy"]
    assert queue["queued"] == 0 and queue["calls"] == [] and queue["workers"] == 3


async def test_an_admin_change_reaches_every_worker(http: aiohttp.ClientSession, worker_dir: str) -> None:
    async with one_of_two_added(worker_dir, 3) as (first, second, w):
        async with http.post(w.urls[0] + "/saga/v1/replicas", json={"url": second.url}) as r:
            refused = r.status  # no token: refused where it arrived, sent to no one
        unchanged = [len((await w.local(i, "/saga/v1/state"))["replicas"]) for i in range(3)]
        added = await post_json(http, w.urls[0], "/saga/v1/replicas", {"url": second.url})
        after_add = [
            [r["replica_id"] for r in (await w.local(i, "/saga/v1/state"))["replicas"]] for i in range(3)
        ]
        drained = await post_json(http, w.urls[1], "/saga/v1/replicas/drain", {"url": second.url})
        draining = [(await w.local(i, "/saga/v1/replicas"))["replicas"][1]["draining"] for i in range(3)]
        removed = await post_json(http, w.urls[2], "/saga/v1/replicas/remove", {"url": second.url})
        after_remove = [len((await w.local(i, "/saga/v1/state"))["replicas"]) for i in range(3)]
        unknown = await post_json(http, w.urls[0], "/saga/v1/replicas/remove", {"url": second.url})
    assert refused == 401 and unchanged == [1, 1, 1]
    assert added == (
        201,
        {"url": second.url, "added": True, "undrained": False, "workers_applied": [0, 1, 2]},
    )
    assert after_add == [[first.url, second.url]] * 3
    assert drained[0] == 200 and drained[1]["workers_applied"] == [0, 1, 2] and draining == [True] * 3
    assert removed[0] == 200 and removed[1]["workers_applied"] == [0, 1, 2] and after_remove == [1, 1, 1]
    assert unknown[0] == 404 and unknown[1]["error"]["code"] == "unknown_replica"  # refused by all: as is


async def test_conflicting_changes_read_by_two_workers_at_once_leave_them_alike(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    """An add and a remove of one replica, read by two workers at once: each applied its own first and the
    other's broadcast second, so one worker kept the replica and the other did not (11 rounds of 30)."""
    async with one_of_two_added(worker_dir, 3) as (_first, second, w):
        views = []
        for round_ in range(12):
            paths = ["/saga/v1/replicas", "/saga/v1/replicas/remove"]
            readers = [1, 2] if round_ % 2 else [2, 0]  # the coordinator among them, or not
            answers = await asyncio.gather(
                *(
                    post_json(http, w.urls[i], path, {"url": second.url})
                    for i, path in zip(readers, paths, strict=True)
                )
            )
            assert all(status in (200, 201, 404) for status, _ in answers), answers
            views.append(
                [
                    [r["replica_id"] for r in (await w.local(i, "/saga/v1/state"))["replicas"]]
                    for i in range(3)
                ]
            )
    assert all(view[0] == view[1] == view[2] for view in views), views


async def test_a_change_read_while_the_coordinator_is_down_is_broadcast_from_where_it_was_read(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    async with one_of_two_added(worker_dir, 3) as (_first, second, w):
        await w.stop(0)
        status, answer = await post_json(http, w.urls[1], "/saga/v1/replicas", {"url": second.url})
        applied = [len((await w.local(i, "/saga/v1/state"))["replicas"]) for i in (1, 2)]
    assert status == 502 and answer["workers_missing"] == [0] and answer["workers_applied"] == [1, 2]
    assert applied == [2, 2]


async def test_a_session_end_reaches_the_worker_that_knows_it(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    async with fake_replica() as replica, workers_of(worker_dir, 2, [replica.url]) as w:
        task = session_owned_by(1, 2, "task")  # scheduled by worker 1, which it is sent to
        assert await chat(http, w.urls[1], task) == 200
        ended = await post_json(http, w.urls[0], f"/saga/v1/sessions/{task}/end")
        again = await post_json(http, w.urls[0], f"/saga/v1/sessions/{task}/end")
        left = await get_json(http, w.urls[0], "/saga/v1/sessions")
        counted = await metrics(http, w.urls[1], **ADMIN)
    assert ended == (200, {"session_id": task, "ended": True, "workers_applied": [1]})
    assert again[0] == 404 and again[1]["error"]["code"] == "unknown_session"
    assert left["total"] == 0
    # The client saw one refusal: counted once, by the worker it asked, not once by every worker refusing
    assert value(counted, "saga_errors_total", cause="unknown_session") == 1


async def test_graphs_are_gathered_and_a_dot_comes_from_the_worker_that_learned_it(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    async with fake_replica() as replica, workers_of(worker_dir, 2, [replica.url]) as w:
        assert await chat(http, w.urls[1], session_owned_by(1, 2, "g")) == 200
        graphs = await get_json(http, w.urls[0], "/saga/v1/graphs")
        async with http.get(w.urls[0] + "/saga/v1/graphs/coder.dot") as r:
            dot = (r.status, await r.text())
        async with http.get(w.urls[0] + "/saga/v1/graphs/nobody.dot") as r:
            unknown = (r.status, await r.json())
    # one copy per agent type (worker 0 may hold a replayed copy by now: proxy/shared_learning.py)
    assert graphs["agent_types"] == ["coder"] and [g["agent_type"] for g in graphs["graphs"]] == ["coder"]
    assert dot[0] == 200 and "digraph" in dot[1]
    assert unknown[0] == 404 and unknown[1]["error"]["code"] == "unknown_agent_type"


async def test_a_clients_local_header_is_ignored(http: aiohttp.ClientSession, worker_dir: str) -> None:
    async with one_of_two_added(worker_dir, 2) as (_first, second, w):
        assert await chat(http, w.urls[0], "a") == 200
        assert await chat(http, w.urls[1], "b") == 200
        samples = await metrics(http, w.urls[0], **{LOCAL_HEADER: "1"})
        listing = await get_json(http, w.urls[0], "/saga/v1/sessions", **{LOCAL_HEADER: "1"})
        added = await post_json(
            http, w.urls[1], "/saga/v1/replicas", {"url": second.url}, **{LOCAL_HEADER: "1"}
        )
        on_worker_0 = len((await w.local(0, "/saga/v1/state"))["replicas"])
    assert value(samples, "saga_calls_total", route=CHAT, status="200") == 2
    assert value(samples, "saga_workers_reporting") == 2
    assert listing["total"] == 2
    assert added[1]["workers_applied"] == [0, 1] and on_worker_0 == 2


async def test_a_stopped_worker_is_named_and_the_others_still_answer(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    async with one_of_two_added(worker_dir, 3) as (_first, second, w):
        for i, url in enumerate(w.urls):  # one session scheduled by each worker
            assert await chat(http, url, session_owned_by(i, 3, "s")) == 200
        await w.stop(2)
        samples = await metrics(http, w.urls[0])
        listing = await get_json(http, w.urls[1], "/saga/v1/sessions")
        status, answer = await post_json(http, w.urls[0], "/saga/v1/replicas", {"url": second.url})
        applied = [len((await w.local(i, "/saga/v1/state"))["replicas"]) for i in (0, 1)]
    assert value(samples, "saga_workers") == 3 and value(samples, "saga_workers_reporting") == 2
    assert value(samples, "saga_calls_total", route=CHAT, status="200") == 2
    assert listing["workers_missing"] == [2] and listing["total"] == 2
    assert (
        status == 502 and answer["error"]["code"] == "workers_missing" and "[2]" in answer["error"]["message"]
    )
    assert answer["workers_missing"] == [2] and answer["workers_applied"] == [0, 1]
    assert applied == [2, 2]  # the change stands where it was applied


async def test_summed_counters_never_go_down_when_a_worker_is_missing_or_restarted(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    """A worker that does not answer is counted by what it last reported, and a restarted worker's counts go
    on from its predecessor's (proxy/metrics_carry.py): before, `saga_calls_total` went 3 -> 2 -> 3 when
    a worker missed a scrape, and to 1 after it restarted, which Prometheus reads as resets, counting the
    whole new value as calls made."""
    async with fake_replica() as replica, workers_of(worker_dir, 3, [replica.url]) as w:
        for i, url in enumerate(w.urls):  # one session scheduled by each worker
            assert await chat(http, url, session_owned_by(i, 3, "s")) == 200
        seen = [value(await metrics(http, w.urls[0]), "saga_calls_total", route=CHAT, status="200")]
        await w.stop(2)
        stopped = await metrics(http, w.urls[1])
        seen.append(value(stopped, "saga_calls_total", route=CHAT, status="200"))
        await w.restart(2)
        assert await chat(http, w.urls[2], session_owned_by(2, 3, "t")) == 200
        for url in w.urls:
            seen.append(value(await metrics(http, url), "saga_calls_total", route=CHAT, status="200"))
        await w.restart(2)  # restarted again before answering any scrape: nothing is counted twice
        after = await metrics(http, w.urls[2])
        seen.append(value(after, "saga_calls_total", route=CHAT, status="200"))
    assert seen == [3, 3, 4, 4, 4, 4]
    assert value(stopped, "saga_workers_reporting") == 2
    count = value(stopped, "saga_call_latency_seconds_count")
    assert count == 3 and value(stopped, "saga_call_latency_seconds_bucket", le="+Inf") == count
    assert value(stopped, "saga_sessions") == 2  # a gauge of a worker that did not answer is left out


async def test_every_gauge_the_proxy_exports_has_a_rule(http: aiohttp.ClientSession) -> None:
    async with (
        fake_replica() as replica,
        running_proxy(config([replica.url], queue=ReleaseQueueSpec())) as url,
        http.get(url + "/metrics") as r,
    ):
        text = await r.text()
    gauges = {f.name for f in text_string_to_metric_families(text) if f.type == "gauge"}
    assert "saga_replica_healthy" in gauges and "saga_tenant_share_lead_seconds" in gauges
    assert gauges <= set(GAUGE_RULES), f"say how these combine across workers: {gauges - set(GAUGE_RULES)}"


EXPOSITION = """# HELP saga_calls_total LLM calls
# TYPE saga_calls_total counter
saga_calls_total{{route="/v1/completions",status="200"}} {calls}
# HELP saga_call_latency_seconds Arrival to end
# TYPE saga_call_latency_seconds histogram
saga_call_latency_seconds_bucket{{le="0.1"}} {fast}
saga_call_latency_seconds_bucket{{le="+Inf"}} {calls}
saga_call_latency_seconds_count {calls}
saga_call_latency_seconds_sum {total}
# HELP saga_replica_healthy 1 if healthy
# TYPE saga_replica_healthy gauge
saga_replica_healthy{{replica="http://r1"}} {healthy}
# HELP saga_in_flight Calls in flight
# TYPE saga_in_flight gauge
saga_in_flight {in_flight}
# HELP saga_tenant_ttft_slo_calls_total Calls with a target
# TYPE saga_tenant_ttft_slo_calls_total counter
saga_tenant_ttft_slo_calls_total{{tenant="{tenant}"}} {calls}
# HELP saga_tenant_ttft_slo_met_total Calls that met it
# TYPE saga_tenant_ttft_slo_met_total counter
saga_tenant_ttft_slo_met_total{{tenant="{tenant}"}} {fast}
# HELP saga_tenant_ttft_slo_attainment Share met
# TYPE saga_tenant_ttft_slo_attainment gauge
saga_tenant_ttft_slo_attainment{{tenant="{tenant}"}} {share}
"""


def test_expositions_merge_by_each_metrics_rule() -> None:
    one = EXPOSITION.format(calls=4, fast=3, total=1.5, healthy=1, in_flight=2, tenant="a", share=0.75)
    two = EXPOSITION.format(calls=6, fast=1, total=2.5, healthy=0, in_flight=5, tenant="a", share=1 / 6)
    three = EXPOSITION.format(calls=1, fast=1, total=0.1, healthy=1, in_flight=0, tenant="b", share=1.0)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(merge_expositions([one, two, three], 4).decode())
        for s in f.samples
    }
    assert value(samples, "saga_calls_total", route="/v1/completions", status="200") == 11
    assert value(samples, "saga_call_latency_seconds_bucket", le="0.1") == 5
    assert value(samples, "saga_call_latency_seconds_bucket", le="+Inf") == 11
    assert value(samples, "saga_call_latency_seconds_sum") == pytest.approx(4.1)
    assert value(samples, "saga_replica_healthy", replica="http://r1") == 0  # the worst any worker sees
    assert value(samples, "saga_in_flight") == 7
    assert value(samples, "saga_tenant_ttft_slo_attainment", tenant="a") == pytest.approx(4 / 10)
    assert value(samples, "saga_tenant_ttft_slo_attainment", tenant="b") == 1.0
    assert value(samples, "saga_workers") == 4 and value(samples, "saga_workers_reporting") == 3


async def test_a_worker_that_hangs_is_reported_missing_after_the_timeout(worker_dir: str) -> None:
    workers = WorkerSet(0, 3, worker_dir)
    held: list[asyncio.StreamWriter] = []

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing

    hung = await asyncio.start_unix_server(never_answers, workers.app_socket(1))
    gatherer = Gatherer(workers, timeout_s=0.2)
    try:
        answers, missing = await gatherer.ask_others("GET", "/metrics", {}, b"")
    finally:
        await gatherer.close()
        for writer in held:
            writer.close()
        hung.close()
        await hung.wait_closed()
    assert answers == [] and missing == [1, 2]  # 1 hangs, 2 has no socket at all


async def test_one_workers_exposition_merges_to_itself(http: aiohttp.ClientSession) -> None:
    async with (
        fake_replica() as replica,
        running_proxy(config([replica.url], queue=ReleaseQueueSpec())) as url,
    ):
        assert await chat(http, url, "s") == 200
        async with http.get(url + "/metrics") as r:
            text = await r.text()

    def parsed(exposition: str) -> dict[tuple[str, str, tuple[Any, ...]], float]:
        return {
            (f.type, s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(exposition)
            for s in f.samples
        }

    merged = parsed(merge_expositions([text], 1).decode())
    assert (
        merged.pop(("gauge", "saga_workers", ())) == 1
        and merged.pop(("gauge", "saga_workers_reporting", ())) == 1
    )
    assert merged == parsed(text) and len(merged) > 50


def test_replica_rows_sum_each_workers_own_calls_not_the_shared_totals() -> None:
    # With the shared load view each worker's row already includes the others' calls (foreign_*): the merge
    # must count every call once.
    worker0 = {
        "replica_id": "r",
        "in_flight": 5,
        "foreign_in_flight": 3,
        "reserved_tokens": 900,
        "foreign_reserved_tokens": 400,
        "waiting": 2,
    }
    worker1 = {
        "replica_id": "r",
        "in_flight": 5,
        "foreign_in_flight": 2,
        "reserved_tokens": 900,
        "foreign_reserved_tokens": 500,
        "waiting": 1,
    }
    (row,) = merge_replica_rows([[worker0], [worker1]])
    assert row["in_flight"] == 5 and row["reserved_tokens"] == 900
    assert "foreign_in_flight" not in row and row["waiting"] == 2
    (alone,) = merge_replica_rows([[{"replica_id": "r", "in_flight": 4, "reserved_tokens": 10}]])
    assert alone["in_flight"] == 4 and alone["reserved_tokens"] == 10


def test_gathered_graphs_list_each_agent_type_once_the_copy_that_learned_most() -> None:
    def graph(agent_type: str, count: float, ends: float = 0.0) -> dict[str, object]:
        edges = [{"to": "read#1", "count": count}]
        return {"agent_type": agent_type, "nodes": [{"key": "search#0", "ends": ends, "edges": edges}]}

    def answer(worker: int, *graphs: dict[str, object]) -> WorkerAnswer:
        body = {"agent_types": [g["agent_type"] for g in graphs], "live_sessions": 1, "graphs": list(graphs)}
        return WorkerAnswer(worker, 200, msgspec.json.encode(body))

    answers = [  # this worker (1) first, as gathered
        answer(1, graph("coder", 5.0), graph("browser", 2.0)),
        answer(0, graph("coder", 4.0, ends=2.0), graph("browser", 2.0)),
        answer(2, graph("coder", 3.0)),
    ]
    merged = msgspec.json.decode(merge_graphs(Gathered(answers, [], 3)).body)  # type: ignore[arg-type]
    assert merged["agent_types"] == ["coder", "browser"] and merged["live_sessions"] == 3
    assert [(g["agent_type"], g["worker"]) for g in merged["graphs"]] == [("coder", 0), ("browser", 0)]


async def test_unreadable_carried_metrics_leave_the_live_figures(
    http: aiohttp.ClientSession, worker_dir: str
) -> None:
    """A carried file that is no exposition (proxy/metrics_carry.py) is logged and left out: the workers
    start, and /metrics answers with the live figures rather than a 500."""
    bad = '# TYPE saga_calls counter\nsaga_calls_total{route="x"} oops\n'
    for index in range(2):
        (Path(worker_dir) / f"metrics-{index}.last").write_text(f"# saga-incarnation x\n{bad}")
    async with fake_replica() as replica, workers_of(worker_dir, 2, [replica.url]) as w:
        assert await chat(http, w.urls[0], session_owned_by(0, 2, "s")) == 200
        (Path(worker_dir) / "metrics-1.base").write_text(f"# saga-incarnation y\n{bad}")
        samples = await metrics(http, w.urls[0])
    assert value(samples, "saga_calls_total", route=CHAT, status="200") == 1


def test_workers_keep_their_tenants_records_so_summed_counters_never_go_down(worker_dir: str) -> None:
    """A worker dropping a tenant idle on it (its ledger full) while the other worker still counts that
    tenant took the tenant's summed counters on /metrics down (19 -> 14 TTFT observations), which
    Prometheus reads as a reset. With workers each keeps its records, as before records could be dropped;
    one process still gives an idle tenant's place to a new one (tests/fairness/test_tenant_ledger.py)."""
    from fairness.stats import TENANT_RECORD_IDLE_S
    from proxy.app import create_app
    from proxy.context import CORE

    one = create_app(config(["http://127.0.0.1:9"]), workers=None)
    two = create_app(config(["http://127.0.0.1:9"]), workers=WorkerSet(0, 2, worker_dir))
    assert one[CORE].tenant_stats.idle_s == TENANT_RECORD_IDLE_S
    ledger = two[CORE].tenant_stats
    assert ledger.idle_s == float("inf")
    ledger.max_records = 1
    ledger.first_token("x", 0.1, now=0.0)
    ledger.first_token("y", 0.1, now=1e9)  # idle for ever: still x's place
    assert "x" in ledger.records and "y" not in ledger.records
