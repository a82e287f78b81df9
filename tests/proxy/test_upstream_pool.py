"""The data path's pooled HTTP/1.1 client against raw loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.upstream_pool import BodyFailed, ConnectFailed, UpstreamPool, _Connection

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""

    async def __aenter__(self) -> Server:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def serve_many(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on a connection with ANSWER, keeping it alive."""
    while True:
        await _read_request(reader)
        writer.write(ANSWER)
        await writer.drain()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool()
    yield pool
    pool.close()


async def test_keep_alive_connections_are_reused(pool: UpstreamPool) -> None:
    async with Server(serve_many) as server:
        for _ in range(5):
            answer = await pool.request(server.url + "/v1/x", b"{}", {"X-A": "1"}, 5.0)
            assert (answer.status, answer.content_type, await answer.read()) == (
                200,
                "application/json",
                b"{}",
            )
            answer.release()
    assert server.connections == 1


async def test_a_stale_pooled_connection_is_replaced_transparently(pool: UpstreamPool) -> None:
    async def serve_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(ANSWER)  # keep-alive by default, but the server then closes: an idle timeout
        await writer.drain()

    async with Server(serve_once) as server:
        first = await pool.request(server.url + "/", b"{}", {}, 5.0)
        await first.read()
        first.release()
        await asyncio.sleep(0.05)  # let the close arrive
        second = await pool.request(server.url + "/", b"{}", {}, 5.0)
        assert await second.read() == b"{}"
        second.release()
    assert server.connections == 2


_CHUNKED_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def test_chunked_bodies_are_decoded_and_a_cut_body_fails(pool: UpstreamPool) -> None:
    async def chunked_then_cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_CHUNKED_STREAM_HEAD)
        writer.write(b"5\r\nhello\r\n")
        await writer.drain()
        writer.transport.abort()

    async with Server(chunked_then_cut) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        assert answer.content_type == "text/event-stream"
        received = []
        with pytest.raises(BodyFailed):
            while True:
                await answer.more()
                received.append(answer.ready())
        answer.close()
    assert received == [b"hello"]


async def test_a_body_without_a_length_ends_with_the_connection(pool: UpstreamPool) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"a": 1}'
        )
        await writer.drain()

    async with Server(until_close) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        assert await answer.read() == b'{"a": 1}'
        answer.release()


async def test_nothing_listening_is_a_connect_failure(pool: UpstreamPool) -> None:
    async with Server(lambda r, w: asyncio.sleep(0)) as server:
        url = server.url
    with pytest.raises(ConnectFailed):
        await pool.request(url + "/", b"{}", {}, 5.0)


def test_the_pool_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> int:
        pool = UpstreamPool()
        async with Server(serve_many) as server:
            for _ in range(3):
                answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
                assert (answer.status, await answer.read()) == (200, b"{}")
                answer.release()
        pool.close()
        return server.connections

    assert uvloop.run(scenario()) == 1


async def _drain_ready(answer: object, idle_timeout_s: float | None = 5.0) -> list[bytes]:
    """The relay's loop over `ready()` and `more()`: what each wake-up handed over."""
    from proxy.upstream_pool import UpstreamAnswer

    assert isinstance(answer, UpstreamAnswer)
    taken = []
    while True:
        data = answer.ready()
        if data:
            taken.append(data)
        elif answer.at_eof:
            return taken
        else:
            await answer.more(idle_timeout_s)


async def test_ready_hands_over_what_piled_up_as_one_buffer_and_more_waits_for_the_rest(
    pool: UpstreamPool,
) -> None:
    release = asyncio.Event()

    async def in_two_bursts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_CHUNKED_STREAM_HEAD)
        writer.write(b"2\r\nab\r\n2\r\ncd\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"2\r\nef\r\n0\r\n\r\n")
        await writer.drain()

    async with Server(in_two_bursts) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        await asyncio.sleep(0.05)  # both chunks of the first burst are in
        assert answer.ready() == b"abcd"  # taken together
        assert answer.ready() == b""
        asyncio.get_running_loop().call_later(0.05, release.set)
        assert await _drain_ready(answer) == [b"ef"]
        assert answer.at_eof
        answer.release()


async def test_more_raises_when_the_body_is_cut_or_stalls(pool: UpstreamPool) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with Server(cut) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        with pytest.raises(BodyFailed):
            await _drain_ready(answer)
        answer.close()
    async with Server(stall) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        with pytest.raises(TimeoutError):
            await _drain_ready(answer, idle_timeout_s=0.1)
        answer.close()


async def test_a_closed_connection_is_freed_without_waiting_for_a_full_collection(pool: UpstreamPool) -> None:
    """The proxy's full garbage collections are rare (proxy/server.py), so a closed connection must not sit in
    a reference cycle with its parser: before, every one of them (and what its last answer left on it) stayed
    until the next full collection."""
    import gc

    async with Server(serve_many) as server:
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                answer = await pool.request(server.url + "/v1/x", b"{}", {}, 5.0)
                assert await answer.read() == b"{}"
                answer.close()  # not pooled: the connection closes
            await asyncio.sleep(0.05)  # the transports report the closes
            alive = [c for c in gc.get_objects() if type(c).__name__ == "_Connection"]
        finally:
            gc.enable()
    assert server.connections == 20
    assert len(alive) <= 1, f"{len(alive)} closed connections still alive"


async def test_an_answer_in_tiny_pieces_is_held_in_few_buffers(pool: UpstreamPool) -> None:
    """A chunked answer of 1-byte chunks made one bytes object (~40 bytes) per byte until it was whole, so a
    whole answer within `max_answer_bytes` took ~40 times its size (a 20 MB answer, +1.7 GB); pieces are
    merged in runs now, in order."""
    body = bytes(range(256)) * 80  # 20,480 bytes, one chunk each
    chunked = b"".join(b"1\r\n%b\r\n" % body[i : i + 1] for i in range(len(body))) + b"0\r\n\r\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(chunked)
        await writer.drain()
        await asyncio.sleep(5)  # the pool reads it all before the reader asks

    async with Server(serve) as server:
        answer = await pool.request(server.url + "/x", b"{}", {}, connect_timeout_s=5)
        conn = answer._conn
        for _ in range(500):  # (bounded) until the pool read it all: no reader asked for any of it yet
            if conn.complete:
                break
            await asyncio.sleep(0.01)
        assert len(conn.chunks) <= 2 * len(body) // 256  # was one per byte
        assert await answer.read() == body


async def test_a_batched_request_goes_out_whole_at_the_end_of_the_turn_and_not_on_a_closed_connection(
    pool: UpstreamPool,
) -> None:
    """`send_pooled(batched=True)` (several calls in flight) writes at the end of the loop's turn, with the
    turn's other writes, in one buffer; a connection closed before then (the client hung up) sends nothing
    and raises nothing. Unbatched, the request is written at once."""
    from loadtests.bench.call_cost import FakeTransport

    key = ("127.0.0.1", 9, False)
    written: list[list[bytes]] = []
    for _ in range(3):
        conn = _Connection()
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        pool._put(key, conn)
        written.append(transport.written)
    sent = pool.send_pooled("http://127.0.0.1:9/v1/x", b"{}", {"X-A": "1"}, "POST", True)
    closing = pool.send_pooled("http://127.0.0.1:9/v1/x", b"{}", {}, "POST", True)
    at_once = pool.send_pooled("http://127.0.0.1:9/v1/x", b"{}", {})
    assert sent is not None and closing is not None and at_once is not None
    assert closing[1].transport is not None
    closing[1].transport.close()
    last, middle, first = written  # the pool lends its most recently pooled connection first
    assert (first, middle) == ([], []) and len(last) == 1
    await asyncio.sleep(0)
    assert middle == []
    assert len(first) == 1 and first[0].startswith(b"POST /v1/x HTTP/1.1\r\n") and first[0].endswith(b"{}")
    assert b"\r\nX-A: 1\r\n" in first[0] and b"X-A" not in last[0]


async def test_a_reader_that_falls_behind_pauses_the_replica_and_gets_every_byte_after(
    pool: UpstreamPool,
) -> None:
    """The coroutine relay waits on its client while the connection kept reading: a client that stopped
    reading left the replica's whole answer (~500 MB) piled up in the proxy until the stream timed out."""
    from proxy.upstream_pool import MAX_UNREAD_BYTES

    piece, pieces = b"x" * 65_536, 512  # 32 MiB
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(piece) * pieces))
        for _ in range(pieces):
            writer.write(piece)
            await writer.drain()
            written += 1

    async with Server(flood) as server:
        answer = await pool.request(server.url + "/", b"{}", {}, 5.0)
        await asyncio.sleep(0.5)  # the reader is busy elsewhere
        conn = answer._conn
        held = sum(len(c) for c in conn.chunks)
        assert held <= 2 * MAX_UNREAD_BYTES and written < pieces // 2, (held, written)  # the replica waits
        assert conn.flow_paused
        taken = await _drain_ready(answer)
        assert sum(len(t) for t in taken) == len(piece) * pieces and not conn.flow_paused
        answer.release()
