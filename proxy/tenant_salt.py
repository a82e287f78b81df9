"""Each client API key's tenant gets a prefix cache of its own on the replicas: vLLM's `cache_salt`.

vLLM shares its prefix cache between every request that sends the same tokens, and tells a client how many of
its prompt's tokens were cached (`usage.prompt_tokens_details.cached_tokens`): a client that guesses another's
prompt learns from that count whether it was right (the thirteenth review: 624 of 625 tokens cached for the
right guess, 0 for a wrong one). vLLM's guard is `cache_salt`: requests with different salts share no block.

Contract: `TenantSalts(api_keys).salt(tenant, client_salt)` is the salt a call of `tenant` is sent with: an
HMAC-SHA256 of the tenant and the salt the client sent, if any (so a client's own salt still splits its
cache further, and cannot name another tenant's), keyed by the configured keys (a secret no client knows,
the same in every worker and across restarts, so the replicas' caches stay warm), as 43 URL-safe base64
characters (vLLM allows up to 128, none of `@ / \\` or NUL). Changing the key set changes every salt: the
caches start cold once. `salted(body, client_salt, tenant, salts)` is the body to send (proxy/calls.py): the
salt added when the body has none (or null), put in place of a client's valid one, and left alone when the
client's is one vLLM refuses (it answers its own 400). `prefix_seed(tenant)` seeds the proxy's own prefix
hashes of the tenant's prompts (proxy/prompt_shape.py), so prefix-aware routing does not count another
tenant's cached prompt as this one's either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec
from aiohttp import web
from xxhash import xxh3_64_intdigest

from proxy.config import ProxyConfig
from proxy.directives import with_member_set

# vLLM's rule for a `cache_salt` (vllm/entrypoints/generate/base/protocol.py, validate_cache_salt)
_MAX_SALT_LENGTH = 128
_FORBIDDEN = frozenset("@/\\\x00")
_MAX_PLAIN_SALTS = 4096  # tenants' salts kept (one per tenant; tenants are the configured keys' names)


def valid_client_salt(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_SALT_LENGTH and _FORBIDDEN.isdisjoint(value)


class TenantSalts:
    """One per app (`TENANT_SALTS`, made by `tenant_salts`): the call routes and the passthrough share it."""

    def __init__(self, api_keys: dict[str, str]) -> None:
        keys = b"".join(f"{key}\x00{tenant}\x00".encode() for key, tenant in sorted(api_keys.items()))
        self._secret = hashlib.sha256(b"saga cache salt\x00" + keys).digest()
        self._plain: dict[str, str] = {}  # tenant -> its salt for bodies without one
        self._seeds: dict[str, int] = {}

    def prefix_seed(self, tenant: str) -> int:
        seed = self._seeds.get(tenant)
        if seed is None:
            seed = xxh3_64_intdigest(self.salt(tenant).encode()) or 1  # (0 is the unsalted tenants' seed)
            if len(self._seeds) < _MAX_PLAIN_SALTS:
                self._seeds[tenant] = seed
        return seed

    def salt(self, tenant: str, client_salt: str | None = None) -> str:
        if client_salt is None:
            known = self._plain.get(tenant)
            if known is not None:
                return known
        message = tenant.encode() + (b"\x00" if client_salt is None else b"\x01" + client_salt.encode())
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        salt = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if client_salt is None and len(self._plain) < _MAX_PLAIN_SALTS:
            self._plain[tenant] = salt
        return salt


def salted(
    body: bytes, client_salt: msgspec.Raw | msgspec.UnsetType, tenant: str, salts: TenantSalts
) -> bytes:
    """`body` with its `cache_salt` made `tenant`'s; `client_salt`: the body's member as sent, UNSET when it
    has none."""
    if client_salt is msgspec.UNSET:
        return with_member_set(body, "cache_salt", msgspec.json.encode(salts.salt(tenant)), absent=True)
    assert isinstance(client_salt, msgspec.Raw)
    try:
        value = msgspec.json.decode(client_salt)
    except msgspec.DecodeError:
        return body
    if value is None:
        return with_member_set(body, "cache_salt", msgspec.json.encode(salts.salt(tenant)))
    if not valid_client_salt(value):
        return body  # vLLM's 400 says what is wrong with it
    assert isinstance(value, str)
    return with_member_set(body, "cache_salt", msgspec.json.encode(salts.salt(tenant, value)))


TENANT_SALTS = web.AppKey("tenant_salts", TenantSalts)


def tenant_salts(config: ProxyConfig) -> TenantSalts | None:
    """The app's salts: with client API keys and `tenant_cache_salt`, else None (nothing salted)."""
    return TenantSalts(config.api_keys) if config.api_keys and config.tenant_cache_salt else None
