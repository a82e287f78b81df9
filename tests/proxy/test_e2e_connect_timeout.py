"""End-to-end over loopback: a replica whose TCP connect never completes (its accept queue is full, so the
kernel drops the SYN) costs one connect timeout, then the call is answered by another replica."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import aiohttp

from proxy.server import running_proxy
from tests.proxy.fakes import config, fake_replica

MESSAGES = [{"role": "user", "content": "hello"}]


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A listener that never accepts, with its accept queue filled: further connects hang (no RST)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    try:
        for _ in range(16):
            client = socket.socket()
            client.settimeout(0.3)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                client.close()
                break  # the queue is full: the next connect hangs too
            held.append(client)
        else:
            raise AssertionError("could not fill the listener's accept queue")
        yield f"http://127.0.0.1:{port}"
    finally:
        for client in held:
            client.close()
        listener.close()


async def test_a_replica_whose_connect_hangs_is_retried_on_another(http: aiohttp.ClientSession) -> None:
    with black_hole() as hole:
        async with (
            fake_replica() as good,
            # Each probe of the black hole fails after health_timeout_s (the proxy serves after the first
            # round, so after 1 s); it is marked down only by 100 of them in a row, so the calls meet it.
            running_proxy(
                config(
                    [hole, good.url],
                    policy="round-robin",
                    connect_timeout_s=0.3,
                    health_timeout_s=1.0,
                    unhealthy_after=100,
                )
            ) as url,
        ):
            answered = []
            for _ in range(2):  # round robin: one of the two calls goes to the black hole first
                payload = {"model": "fake", "messages": MESSAGES}
                async with http.post(f"{url}/v1/chat/completions", json=payload) as r:
                    answered.append((r.status, r.headers.get("X-Saga-Replica")))
            async with http.get(f"{url}/metrics") as r:
                metrics = await r.text()
    assert answered == [(200, good.url), (200, good.url)]
    retries = [line for line in metrics.splitlines() if line.startswith("saga_retries_total")]
    assert retries and float(retries[0].split()[-1]) >= 1
    assert f'saga_upstream_failures_total{{cause="upstream_unreachable",replica="{hole}"}}' in metrics
