"""`python -m loadtests.bench.prompt_cost`: the body it builds has the size asked for, the hash it replaced
and the current one cut the same chunks, and the bench runs to its table."""

from __future__ import annotations

import pytest

from loadtests.bench.prompt_cost import agent_body, blake2_chain, main
from proxy.identity import decode_call
from proxy.prompt_shape import CHUNK_BYTES, prefix_hashes


def test_the_body_is_a_valid_call_of_the_size_asked() -> None:
    body = agent_body(20_000)
    assert 20_000 * 4 <= len(body) < 20_000 * 4 + 8_000
    messages = bytes(decode_call(body).messages)
    assert len(prefix_hashes(messages)) == len(blake2_chain(messages)) == len(messages) // CHUNK_BYTES


def test_the_bench_prints_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tokens", "5000", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for step in ("decode_call", "prefix_hashes (now)", "keyed BLAKE2 chain (before)", "agent_signature"):
        assert step in out
