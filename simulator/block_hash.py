"""Prefix-cache block hashes: one chain hash per full block, as vLLM computes them.

Contract: `hash_of(parent, tokens, extra_keys)` is a pure, process-independent function; the hash of a block
depends on every token before it through `parent` (the previous block's hash, or `none_hash(algo)` for the
first block). `extra_keys` is `None` or a tuple (e.g. `(cache_salt,)` on the first block only). Hash values
are only compared for equality, so an algorithm may return `bytes` or `int`.

Algorithms: "sha256" (SHA-256 over a pickle of `(parent, tuple(tokens), extra_keys)`, vLLM's default scheme)
and "builtin" (Python's tuple hash over ints, which is not salted per process; several times faster, for
large discrete-event runs). Making "sha256" byte-identical to vLLM's is a later step; it only touches here.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence

BlockHash = bytes | int
ExtraKeys = tuple[object, ...] | None
HashFn = Callable[[BlockHash, Sequence[int], ExtraKeys], BlockHash]

_SEED = "vllm-none-hash"


def _sha256(parent: BlockHash, tokens: Sequence[int], extra_keys: ExtraKeys) -> BlockHash:
    data = pickle.dumps((parent, tuple(tokens), extra_keys), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(data).digest()


def _stable_int(value: object) -> int:
    """A process-independent 64-bit integer for a salt or other extra key (str hashes are randomised)."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _builtin(parent: BlockHash, tokens: Sequence[int], extra_keys: ExtraKeys) -> BlockHash:
    extra = None if extra_keys is None else _stable_int(extra_keys)
    return hash((parent, tuple(tokens), extra))


HASH_FUNCTIONS: dict[str, HashFn] = {"sha256": _sha256, "builtin": _builtin}


def hash_function(algo: str) -> HashFn:
    """The block hash function named `algo`; raises ValueError naming the known ones."""
    try:
        return HASH_FUNCTIONS[algo]
    except KeyError:
        raise ValueError(
            f"unknown prefix caching hash algorithm {algo!r}; known: {sorted(HASH_FUNCTIONS)}"
        ) from None


def none_hash(algo: str) -> BlockHash:
    """The parent hash of a request's first block."""
    if algo == "builtin":
        return _stable_int(_SEED)
    return hashlib.sha256(_SEED.encode()).digest()


def first_block_extra_keys(cache_salt: str | None) -> ExtraKeys:
    """Extra keys of a request's first block: the salt isolates requests that carry different salts."""
    return None if cache_salt is None else (cache_salt,)
