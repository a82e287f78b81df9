"""What a health probe reads from a replica is bounded (proxy/health.py `MAX_PROBE_BYTES`): an endless
`/metrics` or `/v1/models` is read as no figures, not into memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import health
from proxy.context import Guards
from proxy.replica_guard import GuardParams
from proxy.scheduler import ReplicaStats, SchedulerCore, build_policy
from proxy.server import running_proxy
from tests.proxy.fakes import config, serving

METRICS = b'vllm:num_requests_waiting{engine="0"} 3.0\nvllm:num_requests_running{engine="0"} 2.0\n'
MODELS = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'


@pytest.fixture
async def replica() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    bodies = {"/metrics": METRICS, "/v1/models": MODELS}

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.Response()
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64 if bodies.get("huge") else 1):  # 64 x the body: past a small limit
            await response.write(bodies[request.path] + b" " * 1024 * 16)
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url:
        yield url, bodies


async def test_a_probe_reads_figures_and_models_within_the_bound(
    replica: tuple[str, dict[str, bytes]],
) -> None:
    url, _ = replica
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
        models = await health.models_of(http, url, 5.0)
    assert (stats.healthy, stats.waiting, stats.running) == (True, 3, 2)
    assert models == frozenset({"m"})


async def test_past_the_bound_a_replica_publishes_nothing_but_stays_healthy(
    replica: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = replica
    bodies["huge"] = b"1"
    monkeypatch.setattr(health, "MAX_PROBE_BYTES", 256 * 1024)  # 64 x 16 KiB = 1 MiB sent
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
        models = await health.models_of(http, url, 5.0)
    assert (stats.healthy, stats.waiting, stats.running) == (True, 0, 0)  # no figures: cleared
    assert models is None


HUGE_CAPACITY = b'vllm:cache_config_info{num_gpu_blocks="' + b"9" * 400 + b'",block_size="16"} 1\n'


@pytest.mark.parametrize(
    ("page", "read"),
    [
        (b"vllm:num_requests_waiting NaN\nvllm:num_requests_running 2\n", {"waiting": None, "running": 2}),
        (b"vllm:num_requests_waiting 3\nvllm:num_requests_running +Inf\n", {"waiting": 3, "running": None}),
        (b"vllm:num_requests_waiting -3\nvllm:num_requests_running 2\n", {"waiting": None, "running": 2}),
        (b"vllm:kv_cache_usage_perc NaN\nvllm:num_requests_waiting 3\n", {"kv_usage": None, "waiting": 3}),
        (HUGE_CAPACITY, {"kv_capacity_tokens": 0}),  # 0: unknown (no capacity, not a huge one)
    ],
)
async def test_a_figure_that_is_no_count_is_unknown_and_the_replica_stays_healthy(
    replica: tuple[str, dict[str, bytes]], page: bytes, read: dict[str, int | None]
) -> None:
    """NaN, infinite or negative request counts, a NaN KV usage, a KV capacity past any float: the probe
    raised for the first two and the last (ValueError, OverflowError), which ended the health loop."""
    url, bodies = replica
    bodies["/metrics"] = page
    async with aiohttp.ClientSession() as http:
        stats = await health.probe(http, url, 5.0)
    assert stats.healthy is True
    assert {field: getattr(stats, field) for field in read} == read


async def test_the_health_loop_outlives_a_probe_that_raises(
    replica: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect in one replica's probe counts as that probe failing; the loop goes on probing them all."""
    url, _ = replica
    broken = "http://127.0.0.1:9"
    probe = health.probe_why

    async def probe_or_fail(
        session: aiohttp.ClientSession, replica_id: str, timeout_s: float
    ) -> tuple[ReplicaStats, str]:
        if replica_id == broken:
            raise RuntimeError("a defect in the probe")
        return await probe(session, replica_id, timeout_s)

    probes = {url: 0, broken: 0}

    async def counted(
        session: aiohttp.ClientSession, replica_id: str, timeout_s: float
    ) -> tuple[ReplicaStats, str]:
        probes[replica_id] += 1
        return await probe_or_fail(session, replica_id, timeout_s)

    monkeypatch.setattr(health, "probe_why", counted)
    core = SchedulerCore([url, broken], build_policy("round-robin"), lambda: 0.0)
    guards = Guards(GuardParams(unhealthy_after=1))
    first_round = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        loop = asyncio.create_task(
            health.replica_health_loop(core, http, lambda _: None, 0.01, guards, 5.0, None, first_round)
        )
        try:
            await asyncio.wait_for(first_round.wait(), 10)
            for _ in range(1000):  # both are probed again and again: the loop is still going
                if min(probes.values()) >= 3:
                    break
                await asyncio.sleep(0.01)
            assert min(probes.values()) >= 3, probes
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert (core.replicas[url].healthy, core.replicas[url].waiting) == (True, 3)
    assert core.replicas[broken].healthy is False


DEEP = b'{"data": [{"id": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"


async def test_a_models_list_nested_past_msgspecs_depth_is_no_list(
    replica: tuple[str, dict[str, bytes]],
) -> None:
    """msgspec raises RecursionError there; it escaped `models_of` and the health loop's gather, which ended
    the loop, so no replica was probed again."""
    url, bodies = replica
    bodies["/v1/models"] = DEEP
    async with aiohttp.ClientSession() as http:
        assert await health.models_of(http, url, 5.0) is None


@pytest.mark.parametrize(
    "listed",
    [
        b"[1, 2]",
        b'{"data": null}',
        b'{"data": "m"}',
        b'{"data": [1, {"id": 5}, {"name": "x"}]}',
        DEEP,
        b"{",
        b"huge",
    ],
    ids=["list", "null", "string", "entries-without-ids", "deep", "not-json", "past-the-bound"],
)
async def test_one_replicas_broken_models_list_leaves_the_others_in_v1_models(
    listed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /v1/models` is the union of the replicas' lists; one replica answering JSON of another shape,
    JSON nested past msgspec's depth or more than the probe bound answered a 500 (or was read whole into
    memory)."""
    monkeypatch.setattr(health, "MAX_PROBE_BYTES", 64 * 1024)
    good_entry = b'{"id": "good", "object": "model", "owned_by": "vllm", "max_model_len": 4096}'

    def app_listing(models: bytes) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            if request.path != "/v1/models":
                return web.Response()
            return web.Response(body=b"[" * 70_000 if models == b"huge" else models)

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        return app

    async with (
        serving(app_listing(b'{"object": "list", "data": [' + good_entry + b"]}")) as good,
        serving(app_listing(listed)) as bad,
        running_proxy(config([good, bad], access_log=False)) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/models") as r,
    ):
        assert r.status == 200
        assert json.loads(await r.read()) == {"object": "list", "data": [json.loads(good_entry)]}


async def test_a_replica_whose_metrics_are_slow_stays_up_with_its_load_unknown() -> None:
    """Its /health answered at once and it served calls, but a /metrics slower than the probe's timeout
    failed the whole probe: the replica was taken out (with one replica, every call a 503 no_replica)."""
    slow = web.Application()

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            await asyncio.sleep(5)
        return web.Response(text="vllm:num_requests_waiting 1\n")

    slow.router.add_get("/{tail:.*}", answer)
    async with serving(slow) as slow_url, aiohttp.ClientSession() as http:
        stats = await health.probe(http, slow_url, 0.3)
        down = await health.probe(http, "http://127.0.0.1:9", 0.3)  # no /health answer: down, as before
    assert (stats.healthy, stats.waiting, stats.kv_capacity_tokens) == (
        True,
        0,
        None,
    )  # cleared; capacity kept
    assert down.healthy is False


async def test_a_replica_that_never_answers_delays_no_other_replicas_probes() -> None:
    """The probes of a round were gathered: one replica accepting connections and never answering held
    every other replica's next probe to its timeout (a restarted replica was routed to again 4.3 s after it
    was back instead of 0.2)."""
    hung_server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    hung = f"http://127.0.0.1:{hung_server.sockets[0].getsockname()[1]}"
    ok = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 1\n")

    ok.router.add_get("/{tail:.*}", answer)
    probe, log = health.probe_why, []

    async def logged(
        session: aiohttp.ClientSession, replica_id: str, timeout_s: float
    ) -> tuple[ReplicaStats, str]:
        stats = await probe(session, replica_id, timeout_s)
        log.append(replica_id)
        return stats

    async with serving(ok) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([hung, url], build_policy("round-robin"), lambda: 0.0)
        guards = Guards(GuardParams(unhealthy_after=1))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(health, "probe_why", logged)
            loop = asyncio.create_task(
                health.replica_health_loop(core, http, lambda _: None, 0.01, guards, 2.0, None, None)
            )
            try:
                for _ in range(1000):
                    if hung in log:
                        break
                    await asyncio.sleep(0.01)
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
                hung_server.close()
    assert hung in log
    assert log.index(hung) >= 3, log  # the answering replica was probed again and again meanwhile


async def test_a_large_metrics_page_is_read_in_slices_that_let_the_calls_run() -> None:
    """A 16 MiB page of samples took the event loop 0.5-0.75 s in one step every round; now a page is read
    a slice of lines at a time, with the same result."""
    line = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="100",kv_offloading_size="None"} 1\n'
    page = line * 20_000 + "vllm:num_requests_waiting 2\n" + "x" * 100_000 + "\nvllm:num_requests_running 1\n"
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        start = ticks
        read = await health.read_load(page)
        assert ticks - start >= 20  # ~1.8 MB in slices of 32 KiB: the other task ran between them
    finally:
        other.cancel()
    assert read == health.parse_load(page.replace("x" * 100_000, ""))
    assert read["kv_capacity_tokens"] == 20_000 * 1600 and read["waiting"] == 2 and read["running"] == 1


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "vllm:num_requests_waiting 3",
                'vllm:num_requests_running{engine="1"} 2',
                "vllm:kv_cache_usage_perc 0.5",
                'vllm:cache_config_info{num_gpu_blocks="10",block_size="16",kv_offloading_size="4"} 1',
                "# HELP vllm:num_requests_waiting x",
                "",
                "y" * 40_000,
                "vllm:num_requests_waiting NaN",
            ]
        ),
        max_size=30,
    ),
    st.sampled_from(["\n", "\r\n"]),
)
async def test_read_in_slices_reads_what_one_pass_reads(lines: list[str], end: str) -> None:
    page = end.join(lines) + end
    one_pass = health.parse_load(page.replace("y" * 40_000, ""))  # a line past a slice is skipped
    assert repr(await health.read_load(page)) == repr(one_pass)  # (NaN is no NaN's equal)


async def test_a_replica_listing_past_max_models_keeps_the_first(
    replica: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica listing a million models (16 MiB) took the proxy to ~670 MB and its listing to 11 MB."""
    url, bodies = replica
    monkeypatch.setattr(health, "MAX_MODELS", 10)
    bodies["/v1/models"] = json.dumps({"data": [{"id": f"m{i}"} for i in range(50)]}).encode()
    async with aiohttp.ClientSession() as http:
        assert await health.models_of(http, url, 5.0) == frozenset(f"m{i}" for i in range(10))


async def test_v1_models_reads_the_replicas_once_for_the_requests_of_a_moment() -> None:
    """`GET /v1/models`, open to every client, read and decoded every replica's list for each request: one
    client asking in a loop took the event loop from the calls (with a replica listing a million models,
    others' calls fell from ~14,000 to 133 in 8 s)."""
    reads = 0

    async def answer(request: web.Request) -> web.Response:
        nonlocal reads
        if request.path == "/v1/models":
            reads += 1
            await asyncio.sleep(0.05)
            return web.Response(body=MODELS)
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with (
        serving(app) as replica_url,
        running_proxy(config([replica_url], access_log=False)) as url,
        aiohttp.ClientSession() as http,
    ):
        await asyncio.sleep(0.2)
        before = reads  # (the health loop reads them too, every few rounds)

        async def listing() -> tuple[int, bytes]:
            async with http.get(f"{url}/v1/models") as r:
                return r.status, await r.read()

        answers = await asyncio.gather(*(listing() for _ in range(20)))
        assert all(
            status == 200 and json.loads(body)["data"] == [{"id": "m", "object": "model"}]
            for status, body in answers
        )
        assert reads - before <= 2, reads - before  # one read for the twenty (and maybe one health read)


async def test_load_figures_read_before_metrics_broke_are_cleared_not_kept() -> None:
    """A replica whose /metrics stops answering stays up; the waiting count it reported before must not
    stay to steer routing or hold an engine-waiting gate shut (its KV capacity, the hardware's, is kept)."""
    page = {
        "body": 'vllm:num_requests_waiting 7\nvllm:cache_config_info{num_gpu_blocks="10",block_size="16"} 1\n'
    }

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/metrics" and not page["body"]:
            return web.Response(status=500)
        return web.Response(text=page["body"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([url], build_policy("round-robin"), lambda: 0.0)
        core.replica_stats(await health.probe(http, url, 5.0))
        assert (core.replicas[url].waiting, core.replicas[url].kv_capacity_tokens) == (7, 160)
        page["body"] = ""
        core.replica_stats(await health.probe(http, url, 5.0))
    replica = core.replicas[url]
    assert (replica.healthy, replica.waiting, replica.kv_capacity_tokens) == (True, 0, 160)


async def test_a_replica_up_before_any_page_of_it_is_read_takes_the_others_capacity() -> None:
    """Up with its KV capacity unknown, a replica is room for every workflow waiting for admission; held
    down until its /metrics answered, a serving replica whose /metrics was slow from the start stayed out.
    It is up, with the smallest capacity of the other replicas until a page of its own is read; alone,
    with none known, it is up with its capacity unknown."""
    slow = web.Application()

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            await asyncio.sleep(5)
        return web.Response()

    slow.router.add_get("/{tail:.*}", answer)
    async with serving(slow) as url, aiohttp.ClientSession() as http:
        for others, expected in (
            ({"http://127.0.0.1:9": 16_000, "http://127.0.0.1:8": 24_000}, 16_000),
            ({}, 0),
        ):
            core = SchedulerCore([url, *others], build_policy("round-robin"), lambda: 0.0)
            for other, capacity in others.items():
                core.replica_stats(ReplicaStats(other, healthy=False, kv_capacity_tokens=capacity))
            core.replica_stats(ReplicaStats(url, healthy=False))  # as a replica just added starts
            await one_round(core, http, 0.2)
            assert (core.replicas[url].healthy, core.replicas[url].kv_capacity_tokens) == (True, expected)


async def test_an_assumed_capacity_is_listed_as_such_and_follows_the_other_replicas() -> None:
    """A replica whose /metrics never answers kept the capacity it first assumed for good, and
    `/saga/v1/replicas` did not say it was assumed (leads of the tenth review): a smaller replica joining
    later, or the one it was taken from leaving, changed nothing. It is said (`capacity_assumed`, listed as
    `kv_capacity_assumed`) and taken again each probe from the replicas whose own page gave theirs."""
    slow = web.Application()

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            await asyncio.sleep(5)
        return web.Response()

    slow.router.add_get("/{tail:.*}", answer)
    big, small = "http://127.0.0.1:9", "http://127.0.0.1:8"
    async with serving(slow) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([url, big], build_policy("round-robin"), lambda: 0.0)
        core.replica_stats(ReplicaStats(big, healthy=False, kv_capacity_tokens=24_000))
        core.replica_stats(ReplicaStats(url, healthy=False))
        guards = Guards(GuardParams())
        loop = asyncio.create_task(
            health.replica_health_loop(core, http, lambda _: None, 0.01, guards, 0.2, None, None)
        )

        async def capacity_becomes(tokens: int) -> None:
            for _ in range(500):
                if core.replicas[url].kv_capacity_tokens == tokens:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError((tokens, core.replicas[url].kv_capacity_tokens))

        try:
            await capacity_becomes(24_000)
            assert guards[url].capacity_assumed and not guards[big].capacity_assumed
            core.add_replica(small)  # a smaller replica joins: the assumption follows it down
            core.replica_stats(ReplicaStats(small, healthy=False, kv_capacity_tokens=16_000))
            await capacity_becomes(16_000)
            assert guards[url].capacity_assumed
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)


async def test_a_replica_held_down_is_told_and_keeps_its_capacity() -> None:
    """A replica that went down may come back restarted: its KV views start afresh (`on_down`). Its capacity,
    the hardware's, is kept: cleared, a replica back up while its /metrics answered 500 was room for every
    waiting workflow (12 of 12 admitted on a 16,000-token replica)."""
    from proxy.context import down_stats

    core = SchedulerCore(["http://127.0.0.1:9"], build_policy("round-robin"), lambda: 0.0)
    core.replica_stats(ReplicaStats("http://127.0.0.1:9", healthy=True, kv_capacity_tokens=16_000))
    core.replica_stats(down_stats("http://127.0.0.1:9"))  # a failed call, or the probe
    assert core.replicas["http://127.0.0.1:9"].kv_capacity_tokens == 16_000
    told: list[str] = []
    guards = Guards(GuardParams(unhealthy_after=1))
    async with aiohttp.ClientSession() as http:
        loop = asyncio.create_task(
            health.replica_health_loop(
                core, http, lambda _: None, 0.01, guards, 1.0, None, None, None, told.append
            )
        )
        try:
            for _ in range(500):
                if told:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert told and set(told) == {"http://127.0.0.1:9"}


async def test_a_page_without_a_capacity_says_the_replica_publishes_none() -> None:
    """A replica restarted publishing no `vllm:cache_config_info` kept the 16,000 tokens it published
    before."""
    page = {"body": 'vllm:cache_config_info{num_gpu_blocks="1000",block_size="16"} 1\n'}

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=page["body"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([url], build_policy("round-robin"), lambda: 0.0)
        core.replica_stats(await health.probe(http, url, 5.0))
        assert core.replicas[url].kv_capacity_tokens == 16_000
        page["body"] = "vllm:num_requests_waiting 0\n"
        core.replica_stats(await health.probe(http, url, 5.0))
    assert core.replicas[url].kv_capacity_tokens == 0


async def test_a_replica_publishing_no_capacity_stays_up_when_its_metrics_turn_slow() -> None:
    """Its capacity is never known (a backend without `vllm:cache_config_info`), so every slow /metrics
    failed its probe and took a serving replica out (every call a 503). Once a page of it was read, a slow
    one leaves it up, as for a replica whose capacity is known."""
    slow = {"on": False}

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/metrics" and slow["on"]:
            await asyncio.sleep(5)
        return web.Response(text="vllm:num_requests_waiting 1\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([url], build_policy("round-robin"), lambda: 0.0)
        guards = Guards(GuardParams(unhealthy_after=1))
        ups: list[bool] = []

        def apply(_: object) -> None:
            ups.append(core.replicas[url].healthy)
            if len(ups) == 2:
                slow["on"] = True  # after two good rounds its /metrics turns slow

        loop = asyncio.create_task(health.replica_health_loop(core, http, apply, 0.01, guards, 0.2))
        try:
            for _ in range(1000):
                if len(ups) >= 5:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert len(ups) >= 5 and all(ups), ups


async def test_a_backend_without_metrics_is_up_with_its_capacity_unknown() -> None:
    """A server with no /metrics route (an OpenAI-compatible backend other than vLLM) answers it with a 404:
    it is up, its capacity unknown (admission by KV working set cannot apply to it), and no load read."""
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=404 if request.path == "/metrics" else 200)

    app.router.add_get("/{tail:.*}", answer)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        core = SchedulerCore([url], build_policy("round-robin"), lambda: 0.0)
        core.replica_stats(ReplicaStats(url, healthy=False))  # as a replica just added starts
        await one_round(core, http, 1.0)
    assert (core.replicas[url].healthy, core.replicas[url].kv_capacity_tokens) == (True, 0)


async def one_round(core: SchedulerCore, http: aiohttp.ClientSession, timeout_s: float) -> None:
    """The health loop run until every replica was probed once."""
    rounds = asyncio.Event()
    loop = asyncio.create_task(
        health.replica_health_loop(
            core, http, lambda _: None, 0.01, Guards(GuardParams()), timeout_s, None, rounds
        )
    )
    try:
        await asyncio.wait_for(rounds.wait(), 10)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_replica_is_never_up_with_unknown_room_while_another_replicas_page_may_give_one() -> None:
    """At the start, a replica whose /metrics answered 500 was up with its capacity unknown until its next
    probe, since the other replica's page (16,000 tokens) had not come yet: 12 of 12 workflows of ~8,000
    tokens were admitted at once there. It is held down until a capacity can be taken; a fleet of servers
    with no /metrics route (404) is up, their capacities unknown."""
    capacity = 'vllm:cache_config_info{num_gpu_blocks="1000",block_size="16"} 1\n'

    async def slow_page(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            await asyncio.sleep(0.5)
        return web.Response(text=capacity)

    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=500 if request.path == "/metrics" else 200)

    async def no_route(request: web.Request) -> web.Response:
        return web.Response(status=404 if request.path == "/metrics" else 200)

    def app(handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.Application:
        served = web.Application()
        served.router.add_get("/{tail:.*}", handler)
        return served

    async with (
        serving(app(slow_page)) as a,
        serving(app(failing)) as b,
        serving(app(no_route)) as c,
        serving(app(no_route)) as d,
        aiohttp.ClientSession() as http,
    ):
        core = SchedulerCore([a, b], build_policy("round-robin"), lambda: 0.0)
        seen: list[tuple[bool, int]] = []
        loop = asyncio.create_task(
            health.replica_health_loop(
                core,
                http,
                lambda _: seen.append((core.replicas[b].healthy, core.replicas[b].kv_capacity_tokens)),
                0.05,
                Guards(GuardParams()),
                2.0,
            )
        )
        try:
            for _ in range(300):
                if core.replicas[b].healthy and core.replicas[b].kv_capacity_tokens:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        assert (True, 0) not in seen, seen
        assert (core.replicas[b].healthy, core.replicas[b].kv_capacity_tokens) == (True, 16_000)
        fleet = SchedulerCore([c, d], build_policy("round-robin"), lambda: 0.0)
        await one_round(fleet, http, 2.0)
        assert [(r.healthy, r.kv_capacity_tokens) for r in fleet.replicas.values()] == [(True, 0), (True, 0)]
