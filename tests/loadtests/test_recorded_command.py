"""What a benchmark records as its command: a line a user can type again."""

from __future__ import annotations

import argparse
import shlex

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


def test_an_option_whose_value_begins_with_a_dash_is_recorded_so_that_it_parses_again() -> None:
    """`bench overhead --saga-args "--policy round-robin"` recorded `--saga-args --policy round-robin`,
    which its own parser refuses."""
    from loadtests.bench.overhead import add_overhead_parser

    argv = ["/x/proxy/cli.py", "bench", "overhead", "--saga-args", "--workers=2", "--rounds", "1"]
    line = recorded_command(argv, joined=("--saga-args",))
    assert line == "saga bench overhead --saga-args=--workers=2 --rounds 1"
    parser = argparse.ArgumentParser()
    add_overhead_parser(parser.add_subparsers())
    args = parser.parse_args(shlex.split(line)[2:])
    assert args.saga_args == "--workers=2" and args.rounds == 1
