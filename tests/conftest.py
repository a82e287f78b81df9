"""`SAGA_TEST_SERVER=aiohttp` (or `fast`) runs every proxy end-to-end test with that client-facing server,
whatever the configs the tests build say (proxy/server.py's `server_kind` seam); unset, the config decides."""

from __future__ import annotations

import os

import pytest

from proxy import server


@pytest.fixture(autouse=True)
def _client_facing_server(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = os.environ.get("SAGA_TEST_SERVER")
    if kind:
        if kind not in ("fast", "aiohttp"):
            raise ValueError(f"SAGA_TEST_SERVER must be fast or aiohttp, got {kind!r}")
        monkeypatch.setattr(server, "server_kind", lambda config: kind)
