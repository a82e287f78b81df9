"""The Anthropic-shaped tool the `/v1/messages` tests give the simulated model: Claude Code's shell."""

from __future__ import annotations

TOOLS = [
    {
        "name": "Bash",
        "description": "Run a shell command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    }
]
