"""Each client API key's tenant salts its prefix cache (proxy/tenant_salt.py): the body a replica is sent."""

from __future__ import annotations

import json

import msgspec

from proxy.identity import decode_call
from proxy.tenant_salt import TenantSalts, salted, valid_client_salt

SALTS = TenantSalts({"key-a": "alpha", "key-b": "beta"})


def _sent(body: dict[str, object], tenant: str = "alpha") -> dict[str, object]:
    raw = json.dumps(body).encode()
    return json.loads(salted(raw, decode_call(raw).cache_salt, tenant, SALTS))


def test_every_call_of_a_tenant_carries_its_salt_and_other_tenants_others() -> None:
    alpha, beta = _sent({"model": "m"}), _sent({"model": "m"}, "beta")
    assert alpha["cache_salt"] == SALTS.salt("alpha") != beta["cache_salt"] == SALTS.salt("beta")
    assert valid_client_salt(alpha["cache_salt"]) and len(str(alpha["cache_salt"])) == 43
    assert _sent({"model": "m", "cache_salt": None})["cache_salt"] == SALTS.salt("alpha")  # null: none


def test_a_clients_own_salt_splits_its_tenants_cache_and_cannot_name_another_tenants() -> None:
    mine = _sent({"cache_salt": "user-7"})["cache_salt"]
    assert mine == SALTS.salt("alpha", "user-7") not in (SALTS.salt("alpha"), SALTS.salt("beta", "user-7"))
    assert _sent({"cache_salt": SALTS.salt("beta")})["cache_salt"] != SALTS.salt("beta")


def test_a_salt_vllm_refuses_is_left_for_its_400_and_the_rest_of_the_body_is_kept() -> None:
    for bad in ("", "a/b", 5, "x" * 129):
        assert _sent({"model": "m", "cache_salt": bad}) == {"model": "m", "cache_salt": bad}
    assert _sent({"model": "m", "messages": [{"role": "user", "content": "hi"}]})["messages"] == [
        {"role": "user", "content": "hi"}
    ]


def test_salts_do_not_change_across_restarts_but_do_with_the_key_set() -> None:
    assert TenantSalts({"key-b": "beta", "key-a": "alpha"}).salt("alpha") == SALTS.salt("alpha")
    assert TenantSalts({"key-a": "alpha"}).salt("alpha") != SALTS.salt("alpha")
    assert SALTS.prefix_seed("alpha") != SALTS.prefix_seed("beta") and SALTS.prefix_seed("alpha") != 0
    assert msgspec.json.decode(msgspec.json.encode(SALTS.salt("alpha"))) == SALTS.salt("alpha")


def test_salts_with_nul_or_a_number_past_floats_are_left_for_vllm_and_control_characters_are_mixed() -> None:
    raw = b'{"model":"m","cache_salt":1e999}'  # a number past a float: not a salt, vLLM refuses it
    assert salted(raw, decode_call(raw).cache_salt, "alpha", SALTS) == raw
    raw = b'{"model":"m","cache_salt":"a\\u0000b"}'  # NUL: vLLM's own 400
    assert salted(raw, decode_call(raw).cache_salt, "alpha", SALTS) == raw
    assert _sent({"cache_salt": "\n\t\x01"})["cache_salt"] == SALTS.salt("alpha", "\n\t\x01")
