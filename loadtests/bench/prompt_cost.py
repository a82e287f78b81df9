"""`python -m loadtests.bench.prompt_cost`: the CPU the proxy spends reading one long agent prompt, by step.

A coding agent's later calls carry 100k tokens and more (WORKLOADS.md: Claude Code / Codex rounds have a
median cached prefix of 118k tokens). For one chat body of that size this times, in the proxy's own
(compiled, when built) code: decoding the routing fields (`decode_call`), the prefix-chunk hashes the
prefix-aware policies use (`prefix_hashes`, on the messages' bytes), the agent signature, and the previous
prefix hash (keyed BLAKE2 per chunk, chained through its key: kept here as the baseline it replaced), and
the conversation's chain a call naming no session is inferred from (`conversation_chain`; again with
answers written in lines: their escaped newlines make the answers dearer to decode).
Prints the median of `--repeats` timings per step, in µs of this thread's CPU time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable

from proxy.arg_types import at_least
from proxy.identity import decode_call
from proxy.prompt_shape import CHUNK_BYTES, agent_signature, prefix_hashes
from proxy.session_chain import conversation_chain


def agent_body(tokens: int, answer_lines: bool = False) -> bytes:
    """A chat body of about `tokens` tokens (4 bytes a token): a system prompt, then turns of tool output.
    `answer_lines`: the assistant messages are lines of text (escaped newlines, as most answers have)."""
    messages = [{"role": "system", "content": "You are a coding agent in a terminal. " * 200}]
    turn = 0
    while len(json.dumps(messages)) < tokens * 4:
        role = "user" if turn % 2 == 0 else "assistant"
        line = f"tool output line {turn}" + ("\n" if answer_lines and role == "assistant" else " ")
        messages.append({"role": role, "content": line * 110})
        turn += 1
    return json.dumps({"model": "m", "messages": messages, "max_tokens": 100, "stream": True}).encode()


def blake2_chain(raw: bytes) -> tuple[int, ...]:
    """The prefix hash before 2026-12-02: keyed BLAKE2 of each chunk, keyed by the previous digest."""
    hashes: list[int] = []
    parent = b""
    view = memoryview(raw)
    for start in range(0, len(raw) - CHUNK_BYTES + 1, CHUNK_BYTES):
        parent = hashlib.blake2b(view[start : start + CHUNK_BYTES], digest_size=8, key=parent).digest()
        hashes.append(int.from_bytes(parent, "big"))
    return tuple(hashes)


def timed(step: Callable[[], object], repeats: int) -> float:
    costs = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        step()
        costs.append(time.thread_time_ns() - start)
    return statistics.median(costs) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.prompt_cost", description=__doc__)
    parser.add_argument("--tokens", type=at_least(1), default=118_000, help="prompt length (about)")
    parser.add_argument("--repeats", type=at_least(1), default=50)
    args = parser.parse_args(argv)
    body = agent_body(args.tokens)
    messages = bytes(decode_call(body).messages)
    with_lines = bytes(decode_call(agent_body(args.tokens, answer_lines=True)).messages)
    assert len(prefix_hashes(messages)) == len(blake2_chain(messages))
    print(f"one chat body of {len(body) // 1024} kB (~{len(body) // 4:,} tokens), median of {args.repeats}:")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("decode_call (routing fields)", lambda: decode_call(body)),
        ("prefix_hashes (now)", lambda: prefix_hashes(messages)),
        ("keyed BLAKE2 chain (before)", lambda: blake2_chain(messages)),
        ("agent_signature", lambda: agent_signature(messages, b"", b"")),
        ("conversation_chain (no session)", lambda: conversation_chain(messages)),
        ("  the same, answers in lines", lambda: conversation_chain(with_lines)),
    ]
    for name, step in steps:
        print(f"  {name:32} {timed(step, args.repeats):9.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
