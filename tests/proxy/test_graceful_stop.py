"""`saga serve` on SIGTERM (a rolling update, `docker stop`): it stops accepting connections and lets the
calls in progress finish (`shutdown_grace_s`) before it exits 0. Before, a streamed answer in flight was cut
mid-way (the process died of the signal, exit -15), with workers too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.processes import start_saga_serve, stop_process

ROOT = Path(__file__).resolve().parents[2]


def start(
    tmp_path: Path, *extra: str, own_group: bool = False
) -> tuple[subprocess.Popen[str], str, list[str]]:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--time-scale", "5", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    return start_saga_serve([*cmd, *extra], ROOT, env, own_group=own_group)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_lets_a_stream_in_progress_finish_and_takes_no_new_connection(
    tmp_path: Path, workers: str
) -> None:
    proc, url, output = start(tmp_path, "--workers", workers)
    try:
        body = {"model": "saga-sim", "messages": [{"role": "user", "content": "go"}], "max_tokens": 300}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/v1/chat/completions", json={**body, "stream": True}) as r,
        ):
            assert r.status == 200
            await r.content.readline()  # the answer has started
            proc.send_signal(signal.SIGTERM)
            await listener_closed(url, output)
            text = await r.text()
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
    finally:
        stop_process(proc, 30)


BODY = {"model": "saga-sim", "messages": [{"role": "user", "content": "go"}]}


async def listener_closed(url: str, output: list[str]) -> None:
    for _ in range(200):  # a bounded wait, not a timing assertion
        try:
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/health") as probe:
                await probe.read()
        except aiohttp.ClientConnectionError:
            return
        await asyncio.sleep(0.05)
    pytest.fail("a new connection was still taken after the signal:\n" + "".join(output))


async def in_flight(url: str, calls: int) -> None:
    for _ in range(200):
        async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/saga/v1/state") as r:
            if (await r.json())["in_flight"] >= calls:
                return
        await asyncio.sleep(0.05)
    pytest.fail(f"{calls} calls never were in flight")


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_client_reusing_its_connection_is_told_to_reconnect_and_no_call_of_it_is_cut(
    tmp_path: Path, workers: str
) -> None:
    """An agent reusing one connection, as the OpenAI SDK's pool does: answers during the drain carried no
    `Connection: close`, so it kept sending calls to the stopping proxy, which took them on the open
    connection until one was cut at the deadline (or the connection reset between two calls). Now the
    answer in progress says `Connection: close`, an idle kept-alive connection is closed at once, and the
    client's next call finds the listener closed: refused before it is sent, never cut."""
    proc, url, output = start(tmp_path, "--workers", workers)
    try:
        async with aiohttp.ClientSession() as agent, aiohttp.ClientSession() as idle:
            for http in (agent, idle):  # each holds a kept-alive connection
                async with http.post(f"{url}/v1/chat/completions", json={**BODY, "max_tokens": 5}) as r:
                    assert r.status == 200 and r.headers.get("Connection") != "close"
                    await r.read()
            slow = asyncio.create_task(
                agent.post(f"{url}/v1/chat/completions", json={**BODY, "max_tokens": 300})
            )
            await in_flight(url, 1)
            proc.send_signal(signal.SIGTERM)
            await listener_closed(url, output)
            async with await slow as r:
                assert r.status == 200
                assert r.headers.get("Connection") == "close"
                assert (await r.json())["usage"]["completion_tokens"] > 0
            for http in (agent, idle):  # refused on connecting: never sent, so never half served
                with pytest.raises(aiohttp.ClientConnectorError):
                    async with http.post(f"{url}/v1/chat/completions", json={**BODY, "max_tokens": 5}):
                        pass
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
    finally:
        stop_process(proc, 30)


@pytest.mark.parametrize("stop", ["SIGINT to the process group", "SIGHUP"])
async def test_a_signal_to_the_whole_process_group_or_a_hang_up_drains_the_workers(
    tmp_path: Path, stop: str
) -> None:
    """Ctrl-C (or systemd's stop) signals every process of the group: each worker began to drain, then the
    supervisor's own SIGTERM reached it as a second signal, which stops a process at once: every call in
    progress was cut. SIGHUP was not handled (the process died of it, calls and all). Both drain now."""
    workers = ["--workers", "2"] if stop.startswith("SIGINT") else []
    proc, url, output = start(tmp_path, *workers, own_group=True)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/v1/chat/completions", json={**BODY, "max_tokens": 300, "stream": True}) as r,
        ):
            assert r.status == 200
            await r.content.readline()
            if stop.startswith("SIGINT"):
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGHUP)
            text = await r.text()
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
        left = await asyncio.to_thread(lambda: list(tmp_path.glob("saga-*")))
        assert not left, "the private directory was left behind"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stop_process(proc, 30)


QUEUE_GATE_1 = """
queue:
  order: afs
  gate: {type: max-in-flight-gate, params: {max_in_flight: 1}}
shutdown_grace_s: 1.0
"""


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_what_the_drain_leaves_gets_the_proxys_own_end(tmp_path: Path, server: str) -> None:
    """Past `shutdown_grace_s` the proxy only closed the connections: a call held in its queue (never sent
    to a replica) got no answer at all, a stream no end, and both were logged as the client hanging up.
    Now the held call gets a 503 `shutting_down` with Retry-After and the stream an error event."""
    config = tmp_path / "saga.yaml"
    config.write_text(QUEUE_GATE_1)
    proc, url, output = start(tmp_path, "--config", str(config), "--server", server)
    try:
        async with aiohttp.ClientSession() as http:
            stream = await http.post(
                f"{url}/v1/chat/completions",
                json={**BODY, "max_tokens": 4000, "ignore_eos": True, "stream": True},
            )
            await stream.content.readline()
            held = asyncio.create_task(
                http.post(f"{url}/v1/chat/completions", json={**BODY, "max_tokens": 5})
            )
            for _ in range(200):  # until it is held behind the gate
                async with http.get(f"{url}/saga/v1/queue") as q:
                    if (await q.json())["waiting"]:
                        break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            async with await held as r:
                assert r.status == 503 and r.headers.get("Retry-After") == "1"
                assert (await r.json())["error"]["code"] == "shutting_down"
            text = await stream.text()
            assert '"code":"shutting_down"' in text.replace(" ", ""), text[-400:]
            stream.release()
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
        assert not any("client hung up" in line for line in output), "".join(output)
    finally:
        stop_process(proc, 30)


async def test_the_aiohttp_server_keeps_to_the_grace_period(tmp_path: Path) -> None:
    """`server: aiohttp` ignored `shutdown_grace_s`: aiohttp let the handlers run for its own 60 s, past a
    pod's grace period (45 s), which then killed it mid-call. A call needing far longer than the grace is
    now ended when the grace is over."""
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--port", "0"]
    cmd += ["--server", "aiohttp"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc, url, output = start_saga_serve([*cmd, "--shutdown-grace-s", "1"], ROOT, env)  # (in real time)
    try:
        async with aiohttp.ClientSession() as http:
            call = asyncio.create_task(
                http.post(
                    f"{url}/v1/chat/completions",
                    json={**BODY, "max_tokens": 4000, "ignore_eos": True, "stream": True},
                )
            )
            await in_flight(url, 1)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)  # (aiohttp's own 60 s would be past this)
            assert code == 0, "".join(output)
            call.cancel()
    finally:
        stop_process(proc, 30)


def raw_call(body: dict[str, object], version: str = "1.1") -> bytes:
    data = json.dumps(body).encode()
    head = f"POST /v1/chat/completions HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(data), data)


async def test_at_the_deadline_pipelined_calls_and_plain_http_streams_get_an_answer_and_an_access_line(
    tmp_path: Path,
) -> None:
    """Found by the seventh review: at the drain's deadline, calls a client had pipelined behind a call in
    progress got no answer; an HTTP/1.0 stream (not chunked) got no error event; and the calls ended there
    had no access-log line."""
    proc, url, output = start(tmp_path, "--shutdown-grace-s", "1")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    long = {**BODY, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    try:
        pipelined_r, pipelined_w = await asyncio.open_connection(host, int(port))
        pipelined_w.write(raw_call(long) + raw_call({**BODY, "max_tokens": 5}) * 2)
        plain_r, plain_w = await asyncio.open_connection(host, int(port))
        plain_w.write(raw_call(long, version="1.0"))
        for reader in (pipelined_r, plain_r):
            assert (await reader.readline()).startswith(b"HTTP/1.")  # both streams began
        proc.send_signal(signal.SIGTERM)
        pipelined = await asyncio.wait_for(pipelined_r.read(), 60)  # to the close
        plain = await asyncio.wait_for(plain_r.read(), 60)
        assert b'"code":"shutting_down"' in pipelined.replace(b" ", b"")
        assert pipelined.count(b"HTTP/1.1 503") == 2, pipelined[-600:]
        last = pipelined[pipelined.rindex(b"HTTP/1.1 503") :]
        assert b"Connection: close" in last and b"Retry-After: 1" in last
        assert b'"code":"shutting_down"' in plain.replace(b" ", b""), plain[-300:]
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
        access = [line for line in output if '"POST /v1/chat/completions' in line]
        assert sum(" 503 " in line for line in access) == 2, access
        assert sum('HTTP/1.1" 200 ' in line or 'HTTP/1.0" 200 ' in line for line in access) == 2, access
        pipelined_w.close()
        plain_w.close()
    finally:
        stop_process(proc, 30)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_second_signal_stops_at_once_and_leaves_no_private_directory(
    tmp_path: Path, workers: str
) -> None:
    """As a second signal stops one process at once: the supervisor waited out the drain; and one process
    (`os._exit`) left its private directory (the inner socket) in TMPDIR."""
    proc, url, output = start(tmp_path, "--workers", workers, "--shutdown-grace-s", "120")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/v1/chat/completions",
                json={**BODY, "max_tokens": 4000, "ignore_eos": True, "stream": True},
            ) as r,
        ):
            await r.content.readline()
            assert await asyncio.to_thread(lambda: list(tmp_path.glob("saga-*")))
            proc.send_signal(signal.SIGTERM)
            await listener_closed(url, output)
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(aiohttp.ClientPayloadError):
                text = await r.text()
                assert not text.rstrip().endswith("data: [DONE]")
        assert await asyncio.to_thread(proc.wait, 60) == (1 if workers == "1" else 0), "".join(output)
        assert not await asyncio.to_thread(lambda: list(tmp_path.glob("saga-*")))
    finally:
        stop_process(proc, 30)


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_with_no_grace_the_calls_in_progress_get_the_proxys_own_end(
    tmp_path: Path, server: str
) -> None:
    """`shutdown_grace_s: 0` skipped the deadline's ends: a stream stopped mid-answer and a whole answer got
    a bare close (found by the eighth review)."""
    proc, url, output = start(tmp_path, "--shutdown-grace-s", "0", "--server", server, "--retry-after-s", "7")
    long = {**BODY, "max_tokens": 4000, "ignore_eos": True}
    try:
        async with aiohttp.ClientSession() as http:
            stream = await http.post(f"{url}/v1/chat/completions", json={**long, "stream": True})
            await stream.content.readline()
            whole = asyncio.create_task(http.post(f"{url}/v1/chat/completions", json=long))
            await in_flight(url, 2)
            proc.send_signal(signal.SIGTERM)
            text = await stream.text()
            assert '"code":"shutting_down"' in text.replace(" ", ""), text[-300:]
            async with await whole as r:
                assert r.status == 503 and (await r.json())["error"]["code"] == "shutting_down"
                assert r.headers["Retry-After"] == "7"  # `retry_after_s`, as every 503 (it was "1")
            stream.release()
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
    finally:
        stop_process(proc, 30)


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_responses_stream_cut_by_the_stop_ends_with_the_responses_error_event(
    tmp_path: Path, server: str
) -> None:
    """A Responses API stream the proxy cuts as it stops ends with that API's error event, numbered after
    the last event sent (the forty-sixth session's review: it had no `sequence_number`)."""
    proc, url, output = start(tmp_path, "--shutdown-grace-s", "0", "--server", server)
    body = {"model": "saga-sim", "input": "hi", "max_output_tokens": 4000, "ignore_eos": True, "stream": True}
    try:
        async with aiohttp.ClientSession() as http:
            stream = await http.post(f"{url}/v1/responses", json=body)
            assert stream.status == 200
            await stream.content.readuntil(b"response.output_text.delta")  # under way
            await in_flight(url, 1)
            proc.send_signal(signal.SIGTERM)
            text = await stream.text()
            stream.release()
        assert await asyncio.to_thread(proc.wait, 60) == 0, "".join(output)
    finally:
        stop_process(proc, 30)
    numbers = [int(n) for n in re.findall(r'"sequence_number":\s*(\d+)', text)]
    last = json.loads(text.rstrip().rsplit("\ndata: ", 1)[1])
    assert text.rstrip().rsplit("\n", 2)[-2] == "event: error", text[-300:]
    assert last["type"] == "error" and last["code"] == "shutting_down", last
    sent = numbers[:-1]  # (those after the events read before the signal)
    assert last["sequence_number"] == sent[-1] + 1 and sent == list(range(sent[0], sent[-1] + 1)), numbers
