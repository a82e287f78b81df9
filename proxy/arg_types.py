"""argparse `type=` functions for the command line's numbers: a bad value is argparse's one-line usage error
(exit 2) that names the flag, never a traceback or a run that hangs (a negative duration, zero replicas, NaN).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def at_least(low: int) -> Callable[[str], int]:
    """A whole number >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"needs a whole number >= {low}, got {value}")
        return value

    parse.__name__ = f"whole number >= {low}"  # what argparse calls the type in its messages
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"needs a finite number, got {text}")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"needs a number above 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"needs a number >= 0, got {text}")
    return value


def output_file(text: str) -> Path | None:
    """A file a run will write at its end: its folder must exist and be writable now, so a long run does not
    fail on a typo after its work is done (a bench that ran for minutes, then `FileNotFoundError`). "" is
    None: no file (as the flag left out)."""
    if not text:
        return None
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"needs a file path, got {text!r}")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}")
    return path


def output_folder(text: str) -> Path:
    """A folder a run will write into (made if missing): it or the folder it would be made in must be
    writable now."""
    path = Path(text)
    existing = path if path.exists() else path.parent
    if not text or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"needs a folder, got {text!r}")
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {str(existing)!r}")
    return path


def input_file(text: str) -> Path:
    """A file a run reads: it must exist now."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}")
    return path


def number_list(each: Callable[[str], float]) -> Callable[[str], list[float]]:
    """Comma-separated numbers, each checked by `each` (`positive`, `non_negative`); "" is an empty list."""

    def parse(text: str) -> list[float]:
        return [each(part) for part in (p.strip() for p in text.split(",")) if part]

    parse.__name__ = f"comma-separated list ({each.__name__})"
    return parse


# an empty host to listen on: the socket layer takes it for every interface, which 0.0.0.0 says openly
EMPTY_HOST = "is empty (the default is 127.0.0.1; 0.0.0.0 is every interface)"


def listen_host(text: str) -> str:
    """A host to listen on: not empty (`EMPTY_HOST`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(EMPTY_HOST)
    return text


def whole_between(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""
    lowest = at_least(low)

    def parse(text: str) -> int:
        value = lowest(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"needs a whole number <= {high:,}, got {value:,}")
        return value

    parse.__name__ = f"whole number in [{low}, {high}]"
    return parse


def with_defaults_shown(parser: argparse.ArgumentParser) -> None:
    """Every option's help, in `parser` and its subcommands, says its default where it has one and does not
    say it already (`saga sim --help` showed `--base-port` with no word on its 8100: the forty-fourth
    session's review); an option without help is a bug (tests/proxy/test_config_file.py checks)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                with_defaults_shown(sub)
            continue
        default = action.default
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            continue
        # (`is`, not `in`: 0 == False, and a default of 0 is worth saying)
        if default is None or default is False or default is argparse.SUPPRESS or default in ([], ""):
            continue
        if "default" in action.help:
            continue
        action.help += " (default: %(default)s)"
