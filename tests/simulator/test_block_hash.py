"""Block hashes: vLLM 0.32's own values (golden, so this runs without vLLM installed) and the seed rules."""

from __future__ import annotations

import pytest

from simulator.block_hash import (
    DEFAULT_NONE_HASH_SEED,
    block_hashes,
    first_block_extra_keys,
    hash_function,
    none_hash,
)

# Computed with vLLM 0.32.0: init_none_hash(get_hash_fn_by_name(algo)) without PYTHONHASHSEED, then
# hash_block_tokens(fn, None, range(16), (("cache_salt", "s1"),)).
GOLDEN = {
    "sha256": (
        "066b1e8987e027138e98701c46128929378935f9b6cd1549105ae6b4f0d71198",
        "b74b8848c4b44dc0baf43d1135dd783777a8016db0e723a361860f8df659b6e4",
    ),
    "sha256_cbor": (
        "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0",
        "37a188ca0f395fb17edb7613ec9f0f06e16dd32556cf8209ea1772c6a9134909",
    ),
}


@pytest.mark.parametrize("algo", sorted(GOLDEN))
def test_hashes_equal_vllms(algo: str) -> None:
    root_hex, salted_hex = GOLDEN[algo]
    root = none_hash(algo, DEFAULT_NONE_HASH_SEED)
    assert isinstance(root, bytes) and root.hex() == root_hex
    salted = hash_function(algo)(root, list(range(16)), first_block_extra_keys("s1"))
    assert isinstance(salted, bytes) and salted.hex() == salted_hex


def test_the_seed_is_pythonhashseed_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert none_hash("sha256") == none_hash("sha256", DEFAULT_NONE_HASH_SEED)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert none_hash("sha256") == none_hash("sha256", "0") != none_hash("sha256", DEFAULT_NONE_HASH_SEED)


def test_the_salt_is_tagged_on_the_first_block_only_and_an_empty_salt_is_none() -> None:
    assert first_block_extra_keys("t") == (("cache_salt", "t"),)
    assert first_block_extra_keys("") is None and first_block_extra_keys(None) is None
    tokens = list(range(40))
    plain = block_hashes(tokens, 16, "sha256", seed="x")
    salted = block_hashes(tokens, 16, "sha256", cache_salt="t", seed="x")
    assert len(plain) == len(salted) == 2 and plain[0] != salted[0] and plain[1] != salted[1]
    h = hash_function("sha256")
    assert salted[1] == h(salted[0], tokens[16:32], None)  # later blocks: no extra keys, salt via the parent
    assert block_hashes(tokens[:15], 16) == []


def test_unknown_algorithms_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="sha256_cbor"):
        hash_function("xxhash")
    with pytest.raises(ValueError, match="known"):
        none_hash("md5")
