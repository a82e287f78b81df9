"""Prefix-cache block hashes: one chain hash per full block, byte-identical to vLLM's.

Contract: `hash_function(algo)(parent, tokens, extra_keys)` is a pure, process-independent function; the
hash of a block depends on every token before it through `parent` (the previous block's hash, or
`none_hash(algo)` for the first block). `extra_keys` is `None` or a tuple; for a request with a cache salt,
the first block's is `(("cache_salt", salt),)` and later blocks' `None` (`first_block_extra_keys`). Hash
values are only compared for equality, so an algorithm may return `bytes` or `int`.

Algorithms (vLLM 0.32: `vllm/v1/core/kv_cache_utils.py` `hash_block_tokens`, `init_none_hash` and
`generate_block_hash_extra_keys`; `vllm/utils/hashing.py`):
- "sha256" (vLLM's default): SHA-256 of `pickle.dumps((parent, tuple(tokens), extra_keys), HIGHEST_PROTOCOL)`.
- "sha256_cbor": SHA-256 of `cbor2.dumps((parent, tuple(tokens), extra_keys), canonical=True)`.
- "builtin": Python's tuple hash over ints (not salted per process); several times faster, for large
  discrete-event runs, and not vLLM's.
The first block's parent is the algorithm applied to the seed alone: `PYTHONHASHSEED` if set, else
"vllm-none-hash", as vLLM does for its cryptographic algorithms. So a router that knows the block size, the
algorithm and the seed reproduces a vLLM server's block hashes (and its KV events' hashes) from token ids.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence

import cbor2

BlockHash = bytes | int
ExtraKeys = tuple[object, ...] | None
HashFn = Callable[[BlockHash, Sequence[int], ExtraKeys], BlockHash]

DEFAULT_NONE_HASH_SEED = "vllm-none-hash"


def _sha256_of(value: object) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _sha256_cbor_of(value: object) -> bytes:
    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


def _stable_int(value: object) -> int:
    """A process-independent 64-bit integer for a salt or other extra key (str hashes are randomised)."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _sha256(parent: BlockHash, tokens: Sequence[int], extra_keys: ExtraKeys) -> BlockHash:
    return _sha256_of((parent, tuple(tokens), extra_keys))


def _sha256_cbor(parent: BlockHash, tokens: Sequence[int], extra_keys: ExtraKeys) -> BlockHash:
    return _sha256_cbor_of((parent, tuple(tokens), extra_keys))


def _builtin(parent: BlockHash, tokens: Sequence[int], extra_keys: ExtraKeys) -> BlockHash:
    extra = None if extra_keys is None else _stable_int(extra_keys)
    return hash((parent, tuple(tokens), extra))


HASH_FUNCTIONS: dict[str, HashFn] = {"sha256": _sha256, "sha256_cbor": _sha256_cbor, "builtin": _builtin}
_SEED_HASHES: dict[str, Callable[[object], BlockHash]] = {
    "sha256": _sha256_of,
    "sha256_cbor": _sha256_cbor_of,
    "builtin": _stable_int,
}


def hash_function(algo: str) -> HashFn:
    """The block hash function named `algo`; raises ValueError naming the known ones."""
    try:
        return HASH_FUNCTIONS[algo]
    except KeyError:
        raise ValueError(
            f"unknown prefix caching hash algorithm {algo!r}; known: {sorted(HASH_FUNCTIONS)}"
        ) from None


def none_hash_seed() -> str:
    """The seed of the first block's parent hash: `PYTHONHASHSEED` if set (vLLM reads it too), else vLLM's
    fixed default, so independent processes agree."""
    return os.environ.get("PYTHONHASHSEED", DEFAULT_NONE_HASH_SEED)


def none_hash(algo: str, seed: str | None = None) -> BlockHash:
    """The parent hash of a request's first block: the algorithm over `seed` (default `none_hash_seed()`)."""
    hash_function(algo)  # the same error for an unknown name
    return _SEED_HASHES[algo](none_hash_seed() if seed is None else seed)


def first_block_extra_keys(cache_salt: str | None) -> ExtraKeys:
    """Extra keys of a request's first block: vLLM tags the salt, and an empty salt counts as none."""
    return (("cache_salt", cache_salt),) if cache_salt else None


def block_hashes(
    tokens: Sequence[int],
    block_size: int,
    algo: str = "sha256",
    *,
    cache_salt: str | None = None,
    seed: str | None = None,
) -> list[BlockHash]:
    """The hash chain of every full block of `tokens` (what vLLM stores in `Request.block_hashes`)."""
    hash_fn = hash_function(algo)
    parent = none_hash(algo, seed)
    extra = first_block_extra_keys(cache_salt)
    out: list[BlockHash] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash_fn(parent, tokens[start : start + block_size], extra)
        extra = None
        out.append(parent)
    return out
