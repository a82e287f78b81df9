"""End-to-end over loopback: security, admin API, discovery, metrics and configuration of the proxy."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.cli import _serve, build_parser
from proxy.config import DnsDiscovery, ProxyConfig
from proxy.logs import JsonFormatter
from proxy.scheduler import ConfigError, Decision, RequestInfo, SchedulerCore, build_policy
from proxy.serve_options import proxy_config
from proxy.server import running_proxy
from tests.proxy.fakes import config, fake_replica

MESSAGES = [{"role": "user", "content": "hello"}]


class ArrivalsCore(SchedulerCore):
    def __init__(self, replicas: list[str]) -> None:
        super().__init__(replicas, build_policy("round-robin"), time.monotonic)
        self.arrivals: list[RequestInfo] = []

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        self.arrivals.append(req)
        return super().request_arrived(req)


async def post_chat(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers) as r:
        return r.status, await r.json()


async def test_client_api_keys_name_the_tenant_and_stay_at_the_proxy(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica:
        core = ArrivalsCore([replica.url])
        cfg = config([replica.url], api_keys={"sk-acme": "acme"})
        async with running_proxy(cfg, core) as url:
            missing = await post_chat(http, url)
            wrong = await post_chat(http, url, Authorization="Bearer sk-nope")
            ok = await post_chat(http, url, Authorization="Bearer sk-acme", **{"X-Tenant-ID": "spoofed"})
            async with http.get(f"{url}/health") as r:
                health = r.status
    assert missing[0] == wrong[0] == 401
    assert missing[1]["error"]["type"] == "authentication_error" and "sk-nope" not in json.dumps(wrong[1])
    assert ok[0] == 200 and health == 200
    assert [a.tenant_id for a in core.arrivals] == ["acme"]
    assert "Authorization" not in replica.headers[0] and "authorization" not in replica.headers[0]


async def test_an_anthropic_clients_x_api_key_names_the_tenant_and_stays_at_the_proxy(
    http: aiohttp.ClientSession,
) -> None:
    """Anthropic's SDKs and Claude Code send their key as `x-api-key`: with `api_keys` it is read like a
    bearer key (on the call routes and on the others), never forwarded, and an `Authorization` header, when
    there is one, is the key that counts. Before: every such client got a 401."""
    async with fake_replica() as replica:
        core = ArrivalsCore([replica.url])
        cfg = config([replica.url], api_keys={"sk-acme": "acme"})
        async with running_proxy(cfg, core) as url:
            ok = await post_chat(http, url, **{"x-api-key": "sk-acme"})
            wrong = await post_chat(http, url, **{"x-api-key": "sk-nope"})
            shadowed = await post_chat(http, url, Authorization="Bearer sk-nope", **{"x-api-key": "sk-acme"})
            statuses = []
            for key in ("sk-acme", "sk-nope"):
                body = {"model": replica.model, "prompt": "hello"}
                async with http.post(f"{url}/tokenize", json=body, headers={"x-api-key": key}) as r:
                    statuses.append(r.status)
    assert ok[0] == 200, ok
    assert wrong[0] == shadowed[0] == 401 and wrong[1]["error"]["type"] == "authentication_error"
    assert statuses == [200, 401]
    assert [a.tenant_id for a in core.arrivals] == ["acme"]
    forwarded = replica.headers + replica.passthrough_headers
    assert len(forwarded) == 2 and not any("x-api-key" in {k.lower() for k in h} for h in forwarded)


async def test_each_client_key_has_sessions_of_its_own(http: aiohttp.ClientSession) -> None:
    """Two tenants' keys naming the same session id: two sessions. Without the namespace one tenant's calls
    joined the other's session (its admitted workflow, its predictions) and its `X-Session-End` ended it."""
    async with fake_replica() as replica:
        core = ArrivalsCore([replica.url])
        cfg = config([replica.url], api_keys={"sk-acme": "acme", "sk-beta": "beta"})
        async with running_proxy(cfg, core) as url:
            shown = []
            for key in ("sk-acme", "sk-beta", "sk-acme"):
                headers = {"Authorization": f"Bearer {key}", "X-Session-ID": "task-1"}
                async with http.post(
                    f"{url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
                    shown.append(r.headers["X-Session-ID"])
            assert set(core.sessions) >= {"acme:task-1", "beta:task-1"}
            headers = {"Authorization": "Bearer sk-beta", "X-Session-ID": "task-1", "X-Session-End": "true"}
            async with http.post(
                f"{url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers
            ) as r:
                assert r.status == 200
            assert "acme:task-1" in core.sessions and "beta:task-1" not in core.sessions
            async with http.post(f"{url}/saga/v1/sessions/acme:task-1/end") as r:  # the admin names it whole
                assert r.status == 200, await r.text()
            assert "acme:task-1" not in core.sessions
    assert shown == ["task-1"] * 3  # the client is told its own id
    assert [(a.tenant_id, a.session_id) for a in core.arrivals[:3]] == [
        ("acme", "acme:task-1"),
        ("beta", "beta:task-1"),
        ("acme", "acme:task-1"),
    ]
    assert replica.headers[1]["X-Session-ID"] == "beta:task-1"  # the replica's id is the proxy's


@pytest.mark.parametrize("tenant", ["", "two words", "tab\tin", "x" * 129, "caf\u00e9", "a:b"])
def test_a_client_key_tenant_name_must_be_printable_ascii(tenant: str) -> None:
    with pytest.raises(ConfigError, match="api_keys"):
        ProxyConfig(replicas=["http://a"], api_keys={"sk-1": tenant}).validate()


async def test_the_admin_api_needs_its_token(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url], admin_token="adm")) as url:
        async with http.get(f"{url}/saga/v1/state") as r:
            refused = (r.status, await r.json())
        async with http.get(f"{url}/saga/v1/state", headers={"Authorization": "Bearer adm"}) as r:
            allowed = r.status
        calls_open = (await post_chat(http, url))[0]
        async with http.get(f"{url}/metrics") as r:
            metrics_open = r.status
    assert refused[0] == 401 and refused[1]["error"]["code"] == "invalid_api_key"
    assert (allowed, calls_open, metrics_open) == (200, 200, 200)


async def test_metrics_count_calls_errors_and_latency(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        assert (await post_chat(http, url))[0] == 200
        async with http.post(f"{url}/v1/chat/completions", data=b"{bad") as r:
            assert r.status == 400
        async with http.get(f"{url}/metrics") as r:
            text = await r.text()
    assert 'saga_calls_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'saga_errors_total{cause="invalid_request_body"} 1.0' in text
    assert "saga_time_to_first_byte_seconds_count 1.0" in text
    assert "saga_call_latency_seconds_count 1.0" in text
    assert 'saga_decisions_total{kind="dispatch"} 1.0' in text


async def test_dns_discovery_adds_and_removes_replicas(http: aiohttp.ClientSession) -> None:
    async with fake_replica() as replica:
        port = int(replica.url.rsplit(":", 1)[1])
        answers = {"pods.test": ["127.0.0.1"]}

        async def resolve(name: str, _port: int) -> list[str]:
            return answers[name]

        cfg = config([], discovery=DnsDiscovery(name="pods.test", port=port, interval_s=1.0))  # the least
        async with running_proxy(cfg, resolver=resolve) as url:
            for _ in range(100):
                status, _ = await post_chat(http, url)
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            answers["pods.test"] = []
            for _ in range(100):
                async with http.get(f"{url}/saga/v1/replicas") as r:
                    left = (await r.json())["replicas"]
                if not left:
                    break
                await asyncio.sleep(0.05)
    assert status == 200 and replica.calls >= 1
    assert left == []


async def test_replicas_are_added_drained_and_removed_through_the_admin_api(
    http: aiohttp.ClientSession,
) -> None:
    metrics = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0\n'
    async with (
        fake_replica() as first,
        fake_replica(metrics=metrics) as second,
        running_proxy(config([first.url])) as url,
    ):
        async with http.post(f"{url}/saga/v1/replicas", json={"url": second.url}) as r:
            added = r.status
        async with http.post(f"{url}/saga/v1/replicas/drain", json={"url": first.url}) as r:
            drained = r.status
        await asyncio.sleep(0.3)  # health rounds pass: a draining replica stays out
        results = [await post_chat(http, url) for _ in range(4)]
        async with http.get(f"{url}/saga/v1/replicas") as r:
            views = {v["replica_id"]: v for v in (await r.json())["replicas"]}
        async with http.get(f"{url}/metrics") as r:
            exported = await r.text()
        async with http.get(f"{url}/health") as r:
            health = (r.status, await r.json())
        async with http.post(f"{url}/saga/v1/replicas/remove", json={"url": first.url}) as r:
            removed = r.status
        async with http.post(f"{url}/saga/v1/replicas", json={"url": "ftp://x"}) as r:
            bad = (r.status, await r.json())
        async with http.get(f"{url}/saga/v1/replicas") as r:
            after = [v["replica_id"] for v in (await r.json())["replicas"]]
    assert (added, drained, removed) == (201, 200, 200)
    assert [s for s, _ in results] == [200] * 4 and first.calls == 0 and second.calls == 4
    # drained, not down: its checks pass (before, reported unhealthy everywhere: SagaReplicaDown fired on
    # every planned drain); readiness counts the replicas taking new calls
    assert views[first.url]["draining"] and views[first.url]["healthy"]
    assert f'saga_replica_healthy{{replica="{first.url}"}} 1.0' in exported
    assert f'saga_replica_draining{{replica="{first.url}"}} 1.0' in exported
    assert f'saga_replica_draining{{replica="{second.url}"}} 0.0' in exported
    assert health == (200, {"healthy_replicas": 1, "replicas": 2, "draining": 1})
    assert views[second.url]["kv_capacity_tokens"] == 16000 and not views[second.url]["kv_capacity_assumed"]
    assert after == [second.url] and bad[0] == 400


async def test_adding_a_draining_replica_again_says_it_takes_new_calls_again(
    http: aiohttp.ClientSession,
) -> None:
    """Not added (it was there all along), but no longer draining: the answer says which."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        answers = []
        for path in ("/saga/v1/replicas/drain", "/saga/v1/replicas", "/saga/v1/replicas"):
            async with http.post(f"{url}{path}", json={"url": replica.url}) as r:
                answers.append((r.status, await r.json()))
        async with http.get(f"{url}/saga/v1/replicas") as r:
            draining = [v["draining"] for v in (await r.json())["replicas"]]
    assert answers[1] == (200, {"url": replica.url, "added": False, "undrained": True})
    assert answers[2] == (200, {"url": replica.url, "added": False, "undrained": False})  # nothing to undo
    assert draining == [False]


async def test_another_spelling_of_a_replica_in_the_set_acts_on_that_one(http: aiohttp.ClientSession) -> None:
    """`http://127.0.0.1:0PORT/` was added as a second replica beside `http://127.0.0.1:PORT`: one backend
    counted twice by every load figure."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        scheme, rest = replica.url.split("://")
        host, port = rest.split(":")
        other = f"{scheme}://{host}:0{port}/"
        answers = []
        for path in ("/saga/v1/replicas", "/saga/v1/replicas/drain"):
            async with http.post(f"{url}{path}", json={"url": other}) as r:
                answers.append((r.status, await r.json()))
        async with http.get(f"{url}/saga/v1/replicas") as r:
            views = [(v["replica_id"], v["draining"]) for v in (await r.json())["replicas"]]
        async with http.post(f"{url}/saga/v1/replicas/remove", json={"url": other}) as r:
            removed = (r.status, await r.json())
    assert answers[0] == (200, {"url": replica.url, "added": False, "undrained": False})
    assert answers[1][0] == 200 and answers[1][1]["url"] == replica.url
    assert views == [(replica.url, True)]
    assert removed == (200, {"url": replica.url, "removed": True})


async def test_a_head_request_says_the_length_of_the_get_answer(http: aiohttp.ClientSession) -> None:
    """RFC 9110 9.3.2: a HEAD answer carries the GET's headers without the body; under the fast server its
    `Content-Length` was 0 on every route it hands to the aiohttp app. Asked on one keep-alive connection,
    then a GET: no body follows the HEAD answer."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        for _ in range(100):  # until the health loop has seen the replica (/v1/models is a 503 before)
            async with http.get(f"{url}/v1/models") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        heads = []
        for path in ("/health", "/v1/models"):
            async with http.get(f"{url}{path}") as r:
                length = len(await r.read())
            writer.write(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            after = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # the GET's head, right after
            declared = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(int(after.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            heads.append((head.split(b" ")[1], declared, length, after.split(b" ")[1]))
        writer.close()
    assert heads == [(b"200", length, length, b"200") for _, _, length, _ in heads]
    assert all(length > 0 for _, _, length, _ in heads)


BAD_REPLICA_URLS = [
    "http://[::1",  # not a URL: an unclosed IPv6 literal
    "http://127.0.0.1:99999",  # no such port
    "http://:8000",  # no host
    "http://user:pw@127.0.0.1:8000",  # credentials the proxy would send in the Host header, not as auth
    "http://127.0.0.1:8000/?a=1",  # the API's paths would go after the query
    "http://127.0.0.1:8000#x",
    "http://127.0.0.1:9/\x1b]0;title\x07\x00",  # control characters: they went raw into logs and /metrics
    "http://a\x00b:80",
    "http://<script>:80",  # not a host name
    'http://e"}:80',
    "http://-bad-.example:80",
    "http://a..b:80",
    "http://caf\u00e9.example:80",  # a host name in Unicode (IDNA's ASCII form is a URL: xn--caf-dma)
]


async def test_the_admin_api_refuses_a_replica_url_it_could_never_reach(http: aiohttp.ClientSession) -> None:
    """Each was added (a 201) and then only ever probed as down; a path prefix is a URL the proxy can use."""
    async with fake_replica() as replica, running_proxy(config([replica.url])) as url:
        answers = []
        for bad in BAD_REPLICA_URLS:
            async with http.post(f"{url}/saga/v1/replicas", json={"url": bad}) as r:
                answers.append((bad, r.status, (await r.json())["error"]["param"]))
        async with http.post(f"{url}/saga/v1/replicas", json={"url": replica.url + "/prefix"}) as r:
            with_path = r.status
        async with http.get(f"{url}/saga/v1/replicas") as r:
            listed = [v["replica_id"] for v in (await r.json())["replicas"]]
    assert answers == [(bad, 400, "url") for bad in BAD_REPLICA_URLS]
    assert with_path == 201 and listed == [replica.url, replica.url + "/prefix"]


@pytest.mark.parametrize("bad", BAD_REPLICA_URLS)
def test_a_replica_url_it_could_never_reach_fails_at_start(bad: str) -> None:
    with pytest.raises(ConfigError, match="replica"):
        ProxyConfig(replicas=[bad]).validate()


def _args(tmp_path: Path, yaml_text: str | None, **flags: Any) -> argparse.Namespace:
    file = None
    if yaml_text is not None:
        file = tmp_path / "saga.yaml"
        file.write_text(yaml_text)
    return argparse.Namespace(config=file, **flags)


def test_config_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    args = _args(tmp_path, "replicas: [http://a:1]\nport: 9000\nmax_retries: 5\nhost: 0.0.0.0\n", port=9100)
    config = proxy_config(args, [], {"SAGA_PORT": "9050", "SAGA_MAX_RETRIES": "7"})
    assert (config.port, config.max_retries, config.host, config.replicas) == (
        9100,
        7,
        "0.0.0.0",
        ["http://a:1"],
    )


def test_time_scale_comes_from_the_flag_without_simulate(tmp_path: Path) -> None:
    """`saga serve --replica URL --time-scale K` in front of a `saga sim --time-scale K` fleet: the core keeps
    the replicas' time (it was silently left at 1.0 unless --simulate was given); without the flag the
    environment or the file still apply."""
    parser = build_parser()
    args = parser.parse_args(["serve", "--replica", "http://a:1", "--time-scale", "4"])
    assert proxy_config(args, args.replica, {"SAGA_TIME_SCALE": "2"}).time_scale == 4.0  # the flag wins
    args = parser.parse_args(["serve", "--replica", "http://a:1"])
    assert proxy_config(args, args.replica, {"SAGA_TIME_SCALE": "2"}).time_scale == 2.0
    assert proxy_config(args, args.replica, {}).time_scale == 1.0
    args = parser.parse_args(["serve", "--replica", "http://a:1", "--config", str(tmp_path / "saga.yaml")])
    (tmp_path / "saga.yaml").write_text("time_scale: 3\n")
    assert proxy_config(args, args.replica, {}).time_scale == 3.0


@pytest.mark.parametrize(
    ("flags", "environ", "scale"),
    [
        (["--config", "FILE"], {}, 3.0),
        (["--config", "FILE"], {"SAGA_TIME_SCALE": "2"}, 2.0),
        (["--config", "FILE", "--time-scale", "4"], {"SAGA_TIME_SCALE": "2"}, 4.0),
        ([], {}, 1.0),
    ],
)
def test_simulated_replicas_run_at_the_layered_time_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], environ: dict[str, str], scale: float
) -> None:
    """`saga serve --simulate N` took its fleet's (and its core's) speed from `--time-scale` alone: the file's
    and SAGA_TIME_SCALE were ignored, against the documented precedence."""
    import simulator.server

    class Started(Exception):
        pass

    speeds = []

    async def start_fleet(count: int, **options: Any) -> None:
        speeds.append(options["time_scale"])
        raise Started

    monkeypatch.setattr(simulator.server, "start_fleet", start_fleet)
    monkeypatch.delenv("SAGA_TIME_SCALE", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "saga.yaml").write_text("time_scale: 3\n")
    argv = ["serve", "--simulate", "1", *[str(tmp_path / "saga.yaml") if f == "FILE" else f for f in flags]]
    with pytest.raises(Started):
        asyncio.run(_serve(build_parser().parse_args(argv), argv))
    assert speeds == [scale]


def test_kv_events_come_from_the_file_the_environment_or_a_port_flag(tmp_path: Path) -> None:
    yaml_text = "replicas: [http://a:1]\nkv_events: {endpoints: {'http://a:1': 'tcp://a:7000'}}\n"
    config = proxy_config(_args(tmp_path, yaml_text), [], {})
    assert config.kv_events is not None
    assert (config.kv_events.port, config.kv_events.endpoints) == (5557, {"http://a:1": "tcp://a:7000"})
    # the port flag keeps the file's other keys
    config = proxy_config(_args(tmp_path, yaml_text, kv_events_port=6000), [], {})
    assert config.kv_events is not None
    assert (config.kv_events.port, config.kv_events.endpoints) == (6000, {"http://a:1": "tcp://a:7000"})
    env = {"SAGA_KV_EVENTS": '{"port": null, "max_sessions": 10}', "SAGA_REPLICAS": "http://a:1"}
    config = proxy_config(_args(tmp_path, None), [], env)
    assert config.kv_events is not None and (config.kv_events.port, config.kv_events.max_sessions) == (
        None,
        10,
    )
    config = proxy_config(
        _args(tmp_path, None), [], {"SAGA_KV_EVENTS_PORT": "7001", "SAGA_REPLICAS": "http://a:1"}
    )
    assert config.kv_events is not None and config.kv_events.port == 7001
    assert proxy_config(_args(tmp_path, "replicas: [http://a:1]\n"), [], {}).kv_events is None
    with pytest.raises(ConfigError, match="SAGA_KV_EVENTS must be a JSON object"):
        proxy_config(_args(tmp_path, None), [], {"SAGA_KV_EVENTS": "{port: 1", "SAGA_REPLICAS": "http://a:1"})
    with pytest.raises(ConfigError, match="SAGA_KV_EVENTS must be a JSON object"):  # nested past the decoder
        proxy_config(
            _args(tmp_path, None), [], {"SAGA_KV_EVENTS": "[" * 100_000, "SAGA_REPLICAS": "http://a:1"}
        )
    with pytest.raises(ConfigError, match=r"kv_events\.port"):  # a port flag of 0 is refused, not ignored
        proxy_config(_args(tmp_path, yaml_text, kv_events_port=0), [], {"SAGA_KV_EVENTS_PORT": "6000"})
    # the other mappings come the same way
    discovery = {"SAGA_DISCOVERY": '{"name": "vllm.svc", "port": 8001}'}
    found = proxy_config(_args(tmp_path, None), [], discovery).discovery
    assert found is not None and (found.name, found.port) == ("vllm.svc", 8001)
    with pytest.raises(ConfigError, match="max_sesions"):
        proxy_config(
            _args(tmp_path, None), [], {"SAGA_KV_EVENTS": '{"max_sesions": 1}', "SAGA_REPLICAS": "x"}
        )


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("replicas: [http://a:1]\nstream_idle_timeout: 3\n", "stream_idle_timeout"),
        ("replicas: [http://a:1]\ndiscovery: {name: x, prot: 1}\n", "prot"),
        ("replicas: [http://a:1]\nmax_retries: -1\n", "max_retries"),
        ("replicas: [http://a:1]\nport: eighty\n", "port"),
    ],
)
def test_bad_configuration_fails_naming_the_key(tmp_path: Path, yaml_text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        proxy_config(_args(tmp_path, yaml_text), [], {})


def test_json_logs_are_one_escaped_object_per_line() -> None:
    record = logging.LogRecord("saga.proxy", logging.WARNING, __file__, 1, "replica %s down", ("r\n1",), None)
    record.request_id = "saga-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) | {"ts": ""} == {
        "ts": "",
        "level": "WARNING",
        "logger": "saga.proxy",
        "message": "replica r\n1 down",
        "request_id": "saga-1",
    }


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"api_keys": {"sk-a": "a"}}, True),
        ({"api_keys": {"sk-a": "a"}, "admin_token": "adm"}, False),
        ({}, False),
    ],
)
def test_client_keys_without_an_admin_token_are_warned_of_at_start(
    settings: dict[str, Any], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Tenants by API key, but /saga/v1/* open to any client (every tenant's sessions listed and ended)."""
    from proxy.server import open_admin_warning

    caplog.set_level(logging.WARNING)
    open_admin_warning(config(["http://a:1"], **settings))
    assert ("admin_token is not" in caplog.text) == warned
