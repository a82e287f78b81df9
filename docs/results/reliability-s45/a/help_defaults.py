# ruff: noqa
"""Every option of every saga subcommand: the default its --help shows against the parser's real default."""

import os
from pathlib import Path

import argparse, re, sys

sys.path.insert(0, os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])))
import msgspec
from proxy.cli import build_parser
from proxy.config import ProxyConfig


def walk(parser, name):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from walk(sub, f"{name} {sub_name}")
        elif a.option_strings and a.help not in (None, argparse.SUPPRESS):
            yield name, parser, a


field_defaults = {f.name: f.default for f in msgspec.structs.fields(ProxyConfig)}
problems, n = [], 0
for cmd, parser, a in walk(build_parser(), "saga"):
    n += 1
    fmt = parser._get_formatter()
    text = fmt._expand_help(a)
    flag = a.option_strings[-1]
    where = f"{cmd} {flag}"
    shown = re.findall(r"default: ([^;)]*)", text)
    d = a.default
    if d is None and a.dest in field_defaults and cmd == "saga serve":
        d = field_defaults[a.dest]
        d = "none" if d is None else d
    if re.search(r"default: (None|\[\]|''|\"\"|)\s*[;)]", text):
        problems.append(f"{where}: shows {shown}")
    elif isinstance(d, (int, float)) and not isinstance(d, bool) and not shown and "default" not in text:
        problems.append(f"{where}: default {d!r} not shown")
    elif (
        shown
        and d is not None
        and not isinstance(a, argparse.BooleanOptionalAction)
        and a.default is not False
    ):
        sv = shown[0].strip()
        try:
            numeq = float(sv) == float(d)
        except (TypeError, ValueError):
            numeq = False
        if sv != str(d) and not numeq and not sv.endswith(str(d)):
            problems.append(f"{where}: shows {shown[0]!r}, real default {d!r}")
    elif a.default is False and not isinstance(
        a, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)
    ):
        problems.append(f"{where}: default False on {type(a).__name__}")
if problems:
    print(f"DEFECT: {len(problems)} of {n} options show a wrong or missing default: {problems}")
else:
    print(
        f"OK: all {n} options of every saga subcommand show their default correctly (0/0.0 shown, None/False/empty not shown)"
    )
