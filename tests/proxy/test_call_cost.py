"""The in-process per-call CPU harness (loadtests/bench/call_cost.py) runs and counts its calls: every call
went upstream once and was answered in full. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench import call_cost


@pytest.mark.parametrize(
    ("policy", "mode", "segments", "kind"),
    [
        ("round-robin", "json", "one", "plain"),
        ("saga", "sse", "one", "plain"),
        ("round-robin", "sse", "each", "plain"),
        ("saga", "json", "one", "agent"),
    ],
)
async def test_every_call_is_sent_and_answered(policy: str, mode: str, segments: str, kind: str) -> None:
    result = await call_cost.measure(policy, mode, calls=30, repeats=2, segments=segments, request_kind=kind)
    warm_up = 30
    assert result["calls"] == 60
    assert result["answered"] == 60 + warm_up
    assert result["upstream_requests"] == 60 + warm_up
    assert len(result["cpu_us_per_call_each"]) == 2
    assert result["cpu_us_per_call_min"] > 0


async def test_a_broken_path_is_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer the client does not get in full stops the run instead of counting as a fast call."""
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    monkeypatch.setattr(call_cost, "answer_segments", lambda stream, segments: [not_found])
    with pytest.raises(RuntimeError, match="not answered in full"):
        await call_cost.measure("round-robin", "json", calls=3, repeats=1)


def test_the_command_line_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    call_cost.main(["--calls", "20", "--repeats", "1", "--policy", "round-robin", "--json", str(out)])
    results = json.loads(out.read_text())
    assert [r["mode"] for r in results] == ["json", "sse"]
    assert all(r["answered"] == 40 for r in results)  # 20 warm-up calls, 20 measured


def test_an_unknown_mode_is_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        call_cost.main(["--mode", "json,xml"])
    assert refused.value.code == 2 and "'xml'" in capsys.readouterr().err
