"""The worker set's environment contract and session ownership (proxy/worker_set.py)."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, ProxyConfig
from proxy.worker_set import WorkerSet, owner_of


def test_single_process_has_no_worker_set() -> None:
    assert WorkerSet.from_environ({}) is None


def test_worker_set_from_environ_and_paths() -> None:
    ws = WorkerSet.from_environ({"SAGA_WORKER_INDEX": "1", "SAGA_WORKER_COUNT": "3", "SAGA_WORKER_DIR": "/d"})
    assert ws == WorkerSet(1, 3, "/d")
    assert ws.app_socket(2) == "/d/app-2.sock" and ws.handoff_socket(0) == "/d/handoff-0.sock"
    assert ws.others() == [0, 2]


@pytest.mark.parametrize(
    "env",
    [
        {"SAGA_WORKER_INDEX": "3", "SAGA_WORKER_COUNT": "3", "SAGA_WORKER_DIR": "/d"},
        {"SAGA_WORKER_INDEX": "x", "SAGA_WORKER_COUNT": "3", "SAGA_WORKER_DIR": "/d"},
        {"SAGA_WORKER_INDEX": "0", "SAGA_WORKER_DIR": "/d"},
    ],
)
def test_malformed_worker_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        WorkerSet.from_environ(env)


def test_ownership_is_stable_and_spread() -> None:
    owners = [owner_of(f"session-{i}", 4) for i in range(400)]
    assert owners == [owner_of(f"session-{i}", 4) for i in range(400)]  # a pure function of the key
    assert all(60 <= owners.count(w) <= 140 for w in range(4))
    assert owner_of("anything", 1) == 0
    ws = WorkerSet(owners[0], 4, "/d")
    other = next(f"session-{i}" for i, o in enumerate(owners) if o != ws.index)
    assert ws.owns("session-0") and not ws.owns(other)


def test_workers_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="workers"):
        ProxyConfig(replicas=["http://a"], workers=0).validate()
    with pytest.raises(ConfigError, match="server: fast"):
        ProxyConfig(replicas=["http://a"], workers=2, server="aiohttp").validate()
    ProxyConfig(replicas=["http://a"], workers=2).validate()
