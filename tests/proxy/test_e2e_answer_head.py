"""End-to-end over loopback, under both servers: a replica's answer head is read within the bounds of
proxy/http_limits.py. One with more header fields than `MAX_HEADERS`, or more header bytes than
`MAX_HEAD_BYTES`, fails like a malformed answer (the reason in the proxy's log, an OpenAI-style error to the
client, the call's accounting released); before, 200,000 fields or one header of 16 MB were held in memory
and relayed to the client whole. An answer with many fields within the bounds is relayed as before."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from proxy.http_limits import MAX_HEAD_BYTES, MAX_HEADERS
from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, config, raw_replica


def _head(prompt: bytes) -> bytes:
    if b"many-fields" in prompt:
        return b"".join(b"X-Extra-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    if b"long-field" in prompt:
        return b"X-Long: " + b"v" * MAX_HEAD_BYTES + b"\r\n"
    return b"".join(b"X-Extra-%d: v\r\n" % i for i in range(100))  # many, within the bounds


async def _answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    if head.startswith(b"GET"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + _head(body))
    writer.write(b"Content-Length: %d\r\n\r\n%b" % (len(OK_JSON), OK_JSON))


async def _call(http: aiohttp.ClientSession, url: str, prompt: str) -> tuple[int, dict[str, object], int]:
    body = {"model": "fake", "messages": [{"role": "user", "content": prompt}]}
    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
        extra = sum(1 for name in r.headers if name.lower().startswith("x-extra-"))
        return r.status, json.loads(await r.read()), extra


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_an_answer_head_past_its_bounds_fails_like_a_malformed_answer(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        raw_replica(_answer) as replica,
        running_proxy(config([replica], server=server, access_log=False)) as url,
    ):
        status, answer, extra = await _call(http, url, "fine")
        assert (status, extra) == (200, 100)  # relayed, every field
        for prompt, reason in (
            ("many-fields", f"more than {MAX_HEADERS} header fields"),
            ("long-field", f"headers over {MAX_HEAD_BYTES} bytes"),
        ):
            for _ in range(100):  # the replica marked down by the last failure: until it is back (bounded)
                if (await _call(http, url, "fine"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            status, answer, extra = await _call(http, url, prompt)
            assert status in (502, 503) and extra == 0, (status, answer)
            assert set(answer["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
            assert reason in caplog.text
            async with http.get(f"{url}/saga/v1/state") as r:
                assert (await r.json())["in_flight"] == 0
