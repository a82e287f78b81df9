"""The simulated replica against a real vLLM (CPU build, tiny random Llama): same hashes, same prefix hits.

- Block hashes: the simulator's chains equal those vLLM's engine computes (its own code, run in the vLLM
  venv) for both sha256 variants, block sizes 16 and 128, with and without a cache salt and PYTHONHASHSEED.
- Prefix caching: one real server with a small KV cache (`--num-gpu-blocks-override`) and one simulated
  replica with the same number of blocks get the same token-id prompts, one at a time; every request's
  `usage.prompt_tokens_details.cached_tokens` must be equal. Scripted scenarios (each after a prefix-cache
  reset on both) pin down what the simulator must model: block granularity, the last prompt token always
  recomputed, salts, vLLM's reserved null block, LRU eviction with partial blocks reused first, duplicate
  blocks of one hash (with a second request kept running); a seeded random sequence with evictions covers
  their mixtures. Outputs differ (random weights vs the simulator's plan),
  so no prompt contains an output token; their KV blocks are allocated, and cached, alike on both sides.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from simulator.block_hash import DEFAULT_NONE_HASH_SEED, block_hashes
from simulator.server import ReplicaFleet, start_fleet
from tests.real_vllm.real_vllm import ROOT, require_real_vllm, running_vllm

NUM_GPU_BLOCKS = 20  # 19 usable blocks of 128 tokens: a 2047-token prompt takes 16, so eviction comes fast
BLOCK = 128
MAX_PROMPT = 2047  # --max-model-len 2048 minus one output token


def tokens(seed: int, n: int) -> list[int]:
    """`n` token ids, fixed by `seed`, that every tiny-model tokenizer has: past its 3 special tokens and
    within its 256 byte tokens (how many merges it learns does not matter)."""
    rng = random.Random(seed)
    return [rng.randrange(3, 259) for _ in range(n)]


# ---- block hashes ---------------------------------------------------------------------------------------


def _hash_cases() -> list[dict[str, Any]]:
    rng = random.Random(3)
    # ids past 255 and 65535 change pickle's int opcodes and CBOR's int widths
    long_ids = [rng.choice((0, 7, 255, 256, 65535, 65536, 151_000)) for _ in range(300)]
    cases = []
    for algo in ("sha256", "sha256_cbor"):
        for block_size in (16, BLOCK):
            for salt in (None, "tenant-a"):
                for toks in (tokens(1, 15), tokens(2, 16), tokens(3, 300), long_ids):
                    cases.append({"tokens": toks, "block_size": block_size, "algo": algo, "cache_salt": salt})
    return cases


def _vllm_hashes(cases: list[dict[str, Any]], seed: str | None, out_path: str) -> list[list[str]]:
    python, _ = require_real_vllm()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if seed is not None:
        env["PYTHONHASHSEED"] = seed
    script = ROOT / "tests" / "real_vllm" / "vllm_block_hashes.py"
    proc = subprocess.run(
        [str(python), str(script), out_path],
        input=json.dumps(cases).encode(),
        capture_output=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    with open(out_path) as f:
        result: list[list[str]] = json.load(f)
    return result


@pytest.mark.parametrize("seed", [None, "12345"], ids=["default-seed", "pythonhashseed"])
def test_block_hash_chains_equal_vllms(seed: str | None, tmp_path: Any) -> None:
    cases = _hash_cases()
    theirs = _vllm_hashes(cases, seed, str(tmp_path / "hashes.json"))
    assert sum(map(len, theirs)) > 50  # the cases have full blocks
    for case, expected in zip(cases, theirs, strict=True):
        ours = block_hashes(
            case["tokens"],
            case["block_size"],
            case["algo"],
            cache_salt=case["cache_salt"],
            seed=DEFAULT_NONE_HASH_SEED if seed is None else seed,
        )
        label = {k: v for k, v in case.items() if k != "tokens"} | {"len": len(case["tokens"])}
        assert [h.hex() for h in ours if isinstance(h, bytes)] == expected, label


# ---- the real server and its simulated twin ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_url() -> Iterator[str]:
    with running_vllm(["--num-gpu-blocks-override", str(NUM_GPU_BLOCKS)]) as url:
        yield url


def cache_config(metrics_text: str) -> dict[str, str]:
    """The labels of `vllm:cache_config_info`."""
    line = next(ln for ln in metrics_text.splitlines() if ln.startswith("vllm:cache_config_info{"))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


@asynccontextmanager
async def twin(
    http: aiohttp.ClientSession, real_url: str, time_scale: float = 100.0
) -> AsyncIterator[ReplicaFleet]:
    """A simulated replica configured from the real server's cache config (KV blocks, hash algorithm)."""
    async with http.get(f"{real_url}/metrics") as r:
        config = cache_config(await r.text())
    assert (config["block_size"], config["num_gpu_blocks"]) == (str(BLOCK), str(NUM_GPU_BLOCKS))
    fleet = await start_fleet(
        1,
        profile="tiny-cpu",
        time_scale=time_scale,
        num_gpu_blocks=int(config["num_gpu_blocks"]),
        hash_algo=config["prefix_caching_hash_algo"],
    )
    try:
        yield fleet
    finally:
        await fleet.close()


async def complete(
    http: aiohttp.ClientSession, url: str, prompt: list[int], salt: str | None = None, max_tokens: int = 1
) -> int:
    """Send one token-id completion; its cached prompt tokens."""
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    if salt is not None:
        body["cache_salt"] = salt
    async with http.post(f"{url}/v1/completions", json=body) as r:
        answer = await r.json()
        assert r.status == 200, (url, answer)
    usage = answer["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(prompt), max_tokens)
    cached: int = usage["prompt_tokens_details"]["cached_tokens"]
    return cached


async def reset(http: aiohttp.ClientSession, *urls: str) -> None:
    """Empty the prefix caches; retried while an aborted request is still being freed (reset is refused
    while any request holds blocks)."""
    for url in urls:
        for _ in range(100):
            async with http.post(f"{url}/reset_prefix_cache") as r:
                assert r.status == 200, await r.text()
                if (await r.json())["success"]:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"{url} kept refusing to reset its prefix cache")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def test_the_twin_reports_the_real_cache_config(real_url: str, http: aiohttp.ClientSession) -> None:
    async with twin(http, real_url) as fleet:
        async with http.get(f"{real_url}/metrics") as r:
            real = cache_config(await r.text())
        async with http.get(f"{fleet.urls[0]}/metrics") as r:
            sim = cache_config(await r.text())
    for label in ("block_size", "num_gpu_blocks", "prefix_caching_hash_algo", "enable_prefix_caching"):
        assert sim[label] == real[label], label


A = tokens(1, 300)  # two full blocks and 44 tokens
P = tokens(2, 2 * BLOCK)  # exactly two blocks
X = tokens(3, MAX_PROMPT)  # 15 full blocks and 127 tokens: 16 blocks
FLOODS = [tokens(100 + i, 900) for i in range(8)]  # 7 full blocks and 4 tokens each: 8 blocks

# (label, prompt, cache salt, cached tokens vLLM gives); each scenario starts from an empty prefix cache
SCENARIOS: dict[str, list[tuple[str, list[int], str | None, int]]] = {
    "block granularity": [
        ("first sight", A, None, 0),
        ("repeat: its full blocks", A, None, 2 * BLOCK),
        ("two shared blocks, new tail", A[:256] + tokens(4, 100), None, 2 * BLOCK),
        ("diverges inside block 2", A[:200] + tokens(5, 60), None, BLOCK),
        ("one block: its last token is recomputed", A[:BLOCK], None, 0),
        ("one block and a token", A[: BLOCK + 1], None, BLOCK),
        ("block-aligned: the last block is recomputed", A[: 2 * BLOCK], None, BLOCK),
    ],
    "cache salt": [
        ("salted", A, "t1", 0),
        ("same salt", A, "t1", 2 * BLOCK),
        ("other salt", A, "t2", 0),
        ("no salt", A, None, 0),
        ("no salt again", A, None, 2 * BLOCK),
        ("first salt again", A, "t1", 2 * BLOCK),
        ("salted prefix, new tail", A[:256] + tokens(6, 10), "t2", 2 * BLOCK),
    ],
    # A repeated block-aligned prompt recomputes its last block into a second block with the same hash (the
    # free queue then holds 16 untouched blocks, P's block 2, its duplicate, P's block 1); once the first
    # copy is evicted, the duplicate still gives the hit.
    "duplicate blocks": [
        ("P", P, None, 0),
        ("P again: block 2 recomputed", P, None, BLOCK),
        ("16 blocks take the untouched ones", X, None, 0),
        ("X's partial block, then P's first block 2", tokens(7, 200), None, 0),
        ("P and a tail: a hit through the duplicate", P + tokens(8, 100), None, 2 * BLOCK),
    ],
    # vLLM reserves block 0 (its null block): of 20 blocks, 19 hold KV
    "null block": [
        ("16 blocks", X, None, 0),
        ("5 blocks: X's partial, 3 untouched, X's last full", tokens(9, 5 * BLOCK), None, 0),
        ("X again: its 14 leading blocks remain", X, None, 14 * BLOCK),
    ],
    # Freed cached blocks queue LRU, tail blocks first; a freed partial block is reused before any cached
    # block is evicted. After 8 floods of 8 blocks the queue holds flood 7's partial block, 4 blocks of
    # flood 5, then floods 6 and 7: a new 8-block prompt evicts 3 of flood 6's 7 cached blocks.
    "lru eviction": [
        *[(f"flood {i}", f, None, 0) for i, f in enumerate(FLOODS)],
        ("the oldest was evicted", FLOODS[0], None, 0),
        ("the newest is whole (its new block was a partial)", FLOODS[7], None, 7 * BLOCK),
        ("the one before keeps its 4 leading blocks", FLOODS[6], None, 4 * BLOCK),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_scripted_prefix_hits_equal_vllms(
    scenario: str, real_url: str, http: aiohttp.ClientSession
) -> None:
    async with twin(http, real_url) as fleet:
        sim_url = fleet.urls[0]
        await reset(http, real_url, sim_url)
        steps = SCENARIOS[scenario]
        real = [await complete(http, real_url, prompt, salt) for _, prompt, salt, _ in steps]
        sim = [await complete(http, sim_url, prompt, salt) for _, prompt, salt, _ in steps]
    labels = [label for label, *_ in steps]
    expected = [cached for *_, cached in steps]
    assert list(zip(labels, real, strict=True)) == list(zip(labels, expected, strict=True)), "vLLM itself"
    assert list(zip(labels, sim, strict=True)) == list(zip(labels, real, strict=True))


def random_requests(seed: int, n: int) -> list[tuple[list[int], str | None, int]]:
    """Prompts cut from a few shared documents with fresh tails, some salted, 1-3 output tokens."""
    rng = random.Random(seed)
    documents = [tokens(1000 * seed + d, MAX_PROMPT) for d in range(5)]
    requests = []
    for i in range(n):
        max_tokens = rng.randint(1, 3)
        prefix = rng.choice(documents)[: rng.choice((BLOCK - 1, BLOCK, 2 * BLOCK, rng.randint(1, 1800)))]
        tail = tokens(10_000 * seed + i, rng.randint(0, 200))
        prompt = (prefix + tail)[: 2048 - max_tokens]
        salt = rng.choice((None, None, None, "a", "b"))
        requests.append((prompt, salt, max_tokens))
    return requests


async def test_random_prefix_hits_with_eviction_equal_vllms(
    real_url: str, http: aiohttp.ClientSession
) -> None:
    requests = random_requests(seed=1, n=60)
    async with twin(http, real_url) as fleet:
        sim_url = fleet.urls[0]
        await reset(http, real_url, sim_url)
        real = [await complete(http, real_url, *req) for req in requests]
        sim = [await complete(http, sim_url, *req) for req in requests]
        assert fleet.replicas[0].engine.pool.num_evictions > 20  # the cache turned over several times
    assert sum(1 for c in real if c > 0) > 10  # and hits were common
    assert sim == real


async def with_a_running_duplicate(http: aiohttp.ClientSession, url: str) -> list[int]:
    """P, then P again kept running (decoding 128 tokens, which fit its third block) while a 16-block prompt
    takes every free block, evicting P's first copy of block 2; P's duplicate, held by the running request,
    still gives the next hit in vLLM. (One request at a time, a duplicate changes no hit: it is always the
    more recently freed copy, and reusing it as if uncached evicts the same blocks.)"""
    await reset(http, url)
    cached = [await complete(http, url, P)]
    body = {"prompt": P, "max_tokens": 128, "ignore_eos": True, "temperature": 0, "stream": True}
    async with http.post(f"{url}/v1/completions", json=body) as running:
        assert running.status == 200
        await running.content.readline()  # its first token: it holds P's block 1 and the duplicate
        cached.append(await complete(http, url, X))
        cached.append(await complete(http, url, P + tokens(8, 100)))
    return cached  # leaving the block aborts the running request


async def test_a_duplicate_block_held_by_a_running_request_gives_hits_as_in_vllm(
    real_url: str, http: aiohttp.ClientSession
) -> None:
    real = await with_a_running_duplicate(http, real_url)
    async with twin(http, real_url, time_scale=0.2) as fleet:  # slow: the decode outlasts the prefill
        sim = await with_a_running_duplicate(http, fleet.urls[0])
    assert real == [0, 0, 2 * BLOCK]
    assert sim == real
