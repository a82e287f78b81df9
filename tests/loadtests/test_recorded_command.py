"""What a benchmark records as its command: a line a user can type again."""

from __future__ import annotations

from loadtests.bench.report import recorded_command


def test_a_recorded_command_reads_as_the_user_would_type_it_again() -> None:
    assert (
        recorded_command(["/x/proxy/cli.py", "bench", "grid", "--loads", "0.5,1"])
        == "saga bench grid --loads 0.5,1"
    )
    assert (
        recorded_command(["/usr/bin/saga", "bench", "des", "--title", "a b"])
        == "saga bench des --title 'a b'"
    )
    assert recorded_command(["run.py", "x"]) == "run.py x"
