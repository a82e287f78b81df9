"""A replica that fails its health check is said down with the reason, in the log and in its
`/saga/v1/replicas` row: a replica refusing connections, one whose name does not resolve and one answering
404 to `/health` all read alike before (the forty-fourth session's review)."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp import web

from proxy.server import running_proxy
from tests.proxy.fakes import config, serving


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_down_replica_is_said_down_with_why(caplog: pytest.LogCaptureFixture) -> None:
    async def not_found(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/health", not_found)
    refusing = f"http://127.0.0.1:{_closed_port()}"
    unresolved = "http://saga-no-such-host.invalid:8000"
    caplog.set_level(logging.WARNING)
    async with (
        serving(app) as answering_404,
        running_proxy(config([refusing, unresolved, answering_404], unhealthy_after=1)) as url,
        aiohttp.ClientSession() as http,
    ):
        rows: dict[str, dict[str, object]] = {}
        for _ in range(100):  # until every replica's first probes are in
            async with http.get(f"{url}/saga/v1/replicas") as r:
                rows = {row["replica_id"]: row for row in (await r.json())["replicas"]}
            if all(row["probe_error"] for row in rows.values()):
                break
            await asyncio.sleep(0.1)
    assert "cannot connect" in str(rows[refusing]["probe_error"]), rows
    assert "cannot connect" in str(rows[unresolved]["probe_error"]), rows
    assert rows[answering_404]["probe_error"] == "GET /health answered 404", rows
    said = [r.getMessage() for r in caplog.records if "is now down" in r.getMessage()]
    for replica, why in ((refusing, "cannot connect"), (answering_404, "GET /health answered 404")):
        assert any(replica in line and why in line for line in said), said
