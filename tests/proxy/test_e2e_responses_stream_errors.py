"""End-to-end over loopback: a Responses API stream cut mid-answer (its replica dies or goes silent past the
stream idle timeout) ends with the Responses API's error event (`event: error`, `"type": "error"`, the code,
the message, the sequence number after the replica's last event), which clients typed on the Responses events
parse, and the `openai` client raises an APIError with the proxy's message. It ended with chat's error event
(`data: {"error": ...}`, no type): no Responses event at all to a typed client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy

_CREATED = {"id": "resp_cut", "status": "in_progress"}
_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "sequence_number": 0, "response": _CREATED},
    {"type": "response.in_progress", "sequence_number": 1, "response": {"id": "resp_cut"}},
    {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "delta": "partial"},
]


def _event(e: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())


def _replica(ending: str, tail: tuple[bytes, ...] = ()) -> Any:
    """A replica that starts a Responses stream, sends each of `tail` in a chunk of its own, then dies
    (`ending` "dies") or goes silent ("stalls")."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
        await reader.readexactly(length)
        if head.startswith(b"GET /v1/responses/resp_cut?stream=true"):  # a resumed stored stream
            resumed = b"".join(_event({**_EVENTS[2], "sequence_number": n}) for n in (5, 6))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(resumed), resumed)
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()
            return
        if not head.startswith(b"POST"):  # health and metrics probes, and the stored response's lookup
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        payload = b"".join(_event(e) for e in _EVENTS)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(payload), payload)
        )
        await writer.drain()
        for piece in tail:
            await asyncio.sleep(0.05)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        await asyncio.sleep(0.05 if ending == "dies" else 5.0)
        writer.transport.abort()

    return serve


def _events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data) of each event of an SSE body."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        if data is not None:
            out.append((name, data))
    return out


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
@pytest.mark.parametrize("ending", ["dies", "stalls"])
async def test_a_cut_responses_stream_ends_with_the_responses_error_event(server: str, ending: str) -> None:
    openai = pytest.importorskip("openai")
    replica_server = await asyncio.start_server(_replica(ending), "127.0.0.1", 0)
    replica = f"http://127.0.0.1:{replica_server.sockets[0].getsockname()[1]}"
    config = ProxyConfig(
        replicas=[replica], port=0, access_log=False, server=server, stream_idle_timeout_s=0.5
    )
    try:
        async with running_proxy(config) as url:
            body = {"model": "saga-sim", "input": "hi", "stream": True}
            async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/responses", json=body) as r:
                assert r.status == 200
                events = _events(await r.text())

            def sdk() -> tuple[list[str], Any]:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
                seen: list[str] = []
                with pytest.raises(openai.APIError) as cut:
                    for event in client.responses.create(model="saga-sim", input="hi", stream=True):
                        seen.append(event.type)
                client.close()
                return seen, cut.value

            seen, cut = await asyncio.to_thread(sdk)
    finally:
        replica_server.close()
    assert [data["type"] for _, data in events[:3]] == [e["type"] for e in _EVENTS]
    name, last = events[-1]
    code, message = (
        ("upstream_error", "the replica failed mid-answer")
        if ending == "dies"
        else ("upstream_timeout", "stream idle timeout")
    )
    assert name == "error" and last["type"] == "error" and last["code"] == code, last
    assert message in last["message"] and last["param"] is None, last
    assert last["sequence_number"] == 3, last  # the one after the replica's last
    from openai.types.responses import ResponseErrorEvent  # (a typed client's reading of it)

    assert ResponseErrorEvent.model_validate(last).code == code
    assert seen == [e["type"] for e in _EVENTS], seen
    assert message in str(cut), cut


_FOURTH = _event(
    {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "delta": "!"}
)


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
@pytest.mark.parametrize(
    ("tail", "number"),
    [
        ((b": keep-alive\n\n",), 3),  # a comment last: the number of the last event that had one
        ((_FOURTH[:-1], b"\n"), 4),  # an event's blank line in the next chunk: the event went out whole
        ((_FOURTH[:-1],), 3),  # an event never finished: never sent, so not counted
        ((_FOURTH.replace(b"\n", b"\r\n"),), 4),  # CRLF lines
    ],
)
async def test_the_error_event_numbers_itself_after_the_last_event_the_client_got(
    server: str, tail: tuple[bytes, ...], number: int
) -> None:
    """The review of the change: the number was read from the last lines the scanner read, which is neither
    the last event sent (a half event read is held back) nor the last with a number (a keep-alive)."""
    replica_server = await asyncio.start_server(_replica("dies", tail), "127.0.0.1", 0)
    replica = f"http://127.0.0.1:{replica_server.sockets[0].getsockname()[1]}"
    config = ProxyConfig(replicas=[replica], port=0, access_log=False, server=server)
    try:
        async with running_proxy(config) as url:
            body = {"model": "saga-sim", "input": "hi", "stream": True}
            async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/responses", json=body) as r:
                events = _events(await r.text())
    finally:
        replica_server.close()
    name, last = events[-1]
    assert name == "error" and last["type"] == "error", events
    assert last["sequence_number"] == number, events
    assert [data.get("sequence_number") for _, data in events[:-1]] == list(range(number)), events


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_resumed_stored_stream_cut_short_ends_with_the_responses_error_event(server: str) -> None:
    """`GET /v1/responses/{id}?stream=true` relayed from the replica holding it, which fails after events 5
    and 6: it ended with chat's error event (the relay was not told its route; the second review of the
    change)."""
    replica_server = await asyncio.start_server(_replica("dies"), "127.0.0.1", 0)
    replica = f"http://127.0.0.1:{replica_server.sockets[0].getsockname()[1]}"
    config = ProxyConfig(replicas=[replica], port=0, access_log=False, server=server)
    try:
        async with running_proxy(config) as url:
            resumed = f"{url}/v1/responses/resp_cut?stream=true&starting_after=4"
            async with aiohttp.ClientSession() as http, http.get(resumed) as r:
                assert r.status == 200
                events = _events(await r.text())
    finally:
        replica_server.close()
    assert [data.get("sequence_number") for _, data in events] == [5, 6, 7], events
    name, last = events[-1]
    assert name == "error" and last["type"] == "error" and last["code"] == "upstream_error", last
