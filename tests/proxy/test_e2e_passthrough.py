"""End-to-end over loopback: the routes the proxy relays without scheduling (pooling, audio, tokenize) reach a
replica that serves the model they name, the least busy one first."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import msgspec
from aiohttp import web

from proxy.config import ProxyConfig
from proxy.passthrough import PASSTHROUGH_GETS, model_of
from proxy.server import running_proxy
from proxy.tenant_salt import TenantSalts
from tests.proxy.fakes import FakeReplica, fake_replica, replica_app, serving


def config(replicas: list[str]) -> ProxyConfig:
    return ProxyConfig(replicas=replicas, port=0, seed=1, health_interval_s=0.2, access_log=False)


async def models_known(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):  # until the health loop has read every replica's model list
        async with http.get(f"{url}/saga/v1/replicas") as r:
            if all(v["models"] for v in (await r.json())["replicas"]):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy never learned the replicas' models")


async def test_pooling_audio_and_tokenize_go_to_the_replica_serving_their_model(
    http: aiohttp.ClientSession,
) -> None:
    """A chat model and an embedding model behind one URL: every request reaches the replica that serves what
    it names (taken in turn, every other one would be the wrong replica's 404)."""
    async with (
        fake_replica(model="chat") as chat,
        fake_replica(model="embed") as embed,
        running_proxy(config([chat.url, embed.url])) as url,
    ):
        await models_known(http, url)
        answers = []
        for i in range(6):
            for path, model in (("/v1/embeddings", "embed"), ("/v1/rerank", "embed"), ("/tokenize", "chat")):
                body = {"model": model, "input": f"def f{i}(): pass", "prompt": "x", "query": "q"}
                async with http.post(url + path, json=body) as r:
                    answers.append((path, r.status, r.headers.get("X-Saga-Replica"), await r.json()))
            form = aiohttp.FormData()
            form.add_field("file", b"RIFF....WAVE", filename="a.wav", content_type="audio/wav")
            form.add_field("model", "chat")
            async with http.post(f"{url}/v1/audio/transcriptions", data=form) as r:
                answers.append(("audio", r.status, r.headers.get("X-Saga-Replica"), await r.json()))
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    assert [status for _, status, _, _ in answers] == [200] * 24, answers
    assert all(
        replica == (embed.url if body["model"] == "embed" else chat.url) for _, _, replica, body in answers
    )
    assert embed.passthrough_paths == ["/v1/embeddings", "/v1/rerank"] * 6
    assert chat.passthrough_paths == ["/tokenize", "/v1/audio/transcriptions"] * 6
    assert 'saga_calls_total{route="/v1/embeddings",status="200"} 6.0' in metrics


async def test_a_replica_busy_with_a_passthrough_request_gets_the_next_ones_after_an_idle_one(
    http: aiohttp.ClientSession,
) -> None:
    """Both replicas serve the model; one holds every answer. Once it holds one request, the next go to the
    idle replica (in turn, every other one would wait behind the held one)."""
    held = FakeReplica(model="embed")
    held.hold = asyncio.Event()
    await held.start()
    waiting: list[asyncio.Task[int]] = []
    try:
        async with fake_replica(model="embed") as idle, running_proxy(config([held.url, idle.url])) as url:
            await models_known(http, url)
            body = {"model": "embed", "input": "hello"}

            async def embed_status() -> int:
                async with http.post(f"{url}/v1/embeddings", json=body) as r:
                    return r.status

            while True:  # until one request is held (the first goes to either replica)
                task = asyncio.create_task(embed_status())
                await asyncio.sleep(0.2)
                if not task.done():
                    waiting.append(task)
                    break
                assert task.result() == 200
            served_before = len(idle.passthrough_paths)
            for _ in range(8):
                assert await asyncio.wait_for(embed_status(), 10) == 200
            assert len(idle.passthrough_paths) == served_before + 8
            held.hold.set()
            assert await asyncio.wait_for(waiting[0], 10) == 200
    finally:
        for task in waiting:
            task.cancel()
        await held.stop()


async def test_vllms_other_read_and_generate_routes_reach_a_replica_and_its_operator_routes_do_not(
    http: aiohttp.ClientSession,
) -> None:
    """The thirteenth review: `GET /version`, `/tokenizer_info`, `/ping`, token-in token-out generation and
    the derenderers were the proxy's 404 and reached no replica, and the README did not say so."""
    seen: list[tuple[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.json_response({"path": request.path})

    app = replica_app(answer)
    for path in PASSTHROUGH_GETS:
        app.router.add_get(path, answer)
    posts = ("/inference/v1/generate", "/v1/chat/completions/derender", "/generative_scoring")
    for path in (*posts, "/v1/load_lora_adapter"):
        app.router.add_post(path, answer)
    got = {}
    async with serving(app) as replica, running_proxy(config([replica])) as url:
        for method, path in [("GET", p) for p in ("/version", "/tokenizer_info", "/ping")] + [
            ("POST", p) for p in (*posts, "/ping", "/v1/load_lora_adapter")
        ]:
            async with http.request(
                method, url + path, json=None if method == "GET" else {"model": "m"}
            ) as r:
                got[method, path] = (r.status, await r.json())
    for path in PASSTHROUGH_GETS:
        assert got["GET", path] == (200, {"path": path})
    for path in posts:
        assert got["POST", path] == (200, {"path": path})
    assert got["GET", "/ping"][0] == got["POST", "/ping"][0] == 200  # the proxy's health
    status, error = got["POST", "/v1/load_lora_adapter"]
    assert status == 404 and error["error"]["message"]  # an operator's route: not relayed
    assert ("POST", "/v1/load_lora_adapter") not in seen and ("GET", "/ping") not in seen


async def test_an_api_key_tenants_token_in_generation_carries_its_cache_salt(
    http: aiohttp.ClientSession,
) -> None:
    """vLLM's `/inference/v1/generate` reads the prefix cache and takes `cache_salt`: relayed for an API-key
    tenant, it carries the tenant's salt as its scheduled calls do (the fourteenth review); `/tokenize`
    reads no cache and goes as sent."""
    bodies: dict[str, dict[str, object]] = {}

    async def answer(request: web.Request) -> web.Response:
        bodies[request.path] = await request.json()
        return web.json_response({})

    app = replica_app(answer)
    for path in ("/inference/v1/generate", "/tokenize"):
        app.router.add_post(path, answer)
    settings = msgspec.structs.replace(config([]), api_keys={"key-a": "alpha"})
    async with serving(app) as replica:
        settings = msgspec.structs.replace(settings, replicas=[replica])
        async with running_proxy(settings) as url:
            for path in ("/inference/v1/generate", "/tokenize"):
                body = {"model": "m", "token_ids": [1, 2, 3]}
                async with http.post(url + path, json=body, headers={"Authorization": "Bearer key-a"}) as r:
                    assert r.status == 200
            salt = TenantSalts({"key-a": "alpha"}).salt("alpha")
            assert bodies["/inference/v1/generate"]["cache_salt"] == salt
            assert "cache_salt" not in bodies["/tokenize"]
            # (the fifteenth review: a BOM or UTF-16 body went unsalted, and vLLM's parser reads both)
            raw = json.dumps({"model": "m", "token_ids": [4]})
            refused = []
            for data in (b"\xef\xbb\xbf" + raw.encode(), raw.encode("utf-16")):
                headers = {"Authorization": "Bearer key-a", "Content-Type": "application/json"}
                async with http.post(url + "/inference/v1/generate", data=data, headers=headers) as r:
                    refused.append(r.status)
    assert refused == [200, 400] and bodies["/inference/v1/generate"] == {
        "model": "m",
        "token_ids": [4],
        "cache_salt": salt,
    }


def test_the_model_is_read_from_json_and_multipart_bodies_and_anything_else_is_none() -> None:
    assert model_of(b'{"input": "x", "model": "bge"}', "application/json") == "bge"
    assert model_of(b'{"input": "x"}', "application/json") is None
    assert model_of(b'{"model": 5}', "application/json") is None  # the replica answers that one
    assert model_of(b"[" * 100_000, "application/json") is None
    assert model_of(b"not json", "application/json") is None
    form = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n"
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-large\r\n--b--\r\n'
    )
    assert model_of(form, "multipart/form-data") == "whisper-large"
    assert model_of(form.replace(b'name="model"', b'name="modelx"'), "multipart/form-data") is None
