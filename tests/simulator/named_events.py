"""Parses a stream of named server-sent events (the Responses API's and Anthropic's), checking each event's
name against its data's `type`."""

from __future__ import annotations

import json
from typing import Any


def named_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out
