"""CORS for clients running in a browser, as vLLM's own server answers them (its `--allowed-origins`), under
the proxy's own policy.

Contract:
- `cors_allowed_origins` (config): `*`, a comma-separated list of origins (`https://app.example.com`), or
  empty (the default) for none. `CorsPolicy.parse` reads it (ConfigError naming the key for a malformed
  origin); None: no origin allowed, and nothing of CORS runs (a preflight is a 405, as a method no route
  takes; no answer names an origin).
- The proxy owns the policy: a replica's own `Access-Control-*` answer fields are never relayed
  (proxy/forward.py; vLLM allows every origin by default, which overrode the proxy's list).
- With origins allowed: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, sent
  without credentials) is answered before authentication on any path but the admin API's: 200 with every
  method, the headers asked for (only a plain list of names) and a max age, or a 400 `cors_origin` for an
  origin not allowed (proxy/cors_middleware.py). Every answer to a request from an allowed origin (relayed
  ones, the proxy's refusals, streams) carries `Access-Control-Allow-Origin` (`*`, or the origin with
  `Vary: Origin`) and `Access-Control-Expose-Headers` for the proxy's own fields (`X-Session-ID`, ...):
  `fields` for the fast server's heads, a prepare hook on the aiohttp app's; with a list, every answer says
  `Vary: Origin`. The admin API (`/saga/v1/*`) and `/metrics` never get either (`exempt`): a web page must
  not read or drive them. No credentials are allowed.
"""

from __future__ import annotations

import re

import msgspec

from proxy.paths import ADMIN_PREFIX
from proxy.scheduler.plugin_spec import ConfigError

# What a page may read of the proxy's answers besides the safelisted fields: the session and replica every
# answer names (README), when to retry a 429 or 503 (the OpenAI SDKs read it), the replica's request id
EXPOSED = "X-Session-ID, X-Saga-Replica, Retry-After, X-Request-Id"


def exempt(path: str) -> bool:
    """No CORS for the admin API and `/metrics` (replicas, sessions, tenants: no web page may read them)."""
    return path.startswith(ADMIN_PREFIX) or path.startswith("/metrics")


# An origin is `scheme://host[:port]` (RFC 6454), printable ASCII without space or comma
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[\x21-\x2b\x2d-\x7e]+")


class CorsPolicy(msgspec.Struct, frozen=True):
    any_origin: bool
    origins: frozenset[str]

    @classmethod
    def parse(cls, value: str) -> CorsPolicy | None:
        """`cors_allowed_origins`' policy; None when it allows no origin."""
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            return None
        for part in parts:
            if part != "*" and _ORIGIN.fullmatch(part) is None:
                raise ConfigError(
                    f"cors_allowed_origins: {part[:80]!r} is not an origin (scheme://host[:port]) or *",
                    key="cors_allowed_origins",
                )
        return cls("*" in parts, frozenset(part.rstrip("/") for part in parts if part != "*"))

    def answer_fields(self, origin: str | None) -> list[tuple[str, str]]:
        """The fields an answer to a request from `origin` carries: the origin allowed and the proxy's
        fields a page may read, when it is allowed; with a list, `Vary: Origin` on every answer (a shared
        cache must not give one origin's answer to another)."""
        allowed = self.allow_origin(origin)
        fields = (
            []
            if allowed is None
            else [
                ("Access-Control-Allow-Origin", allowed),
                ("Access-Control-Expose-Headers", EXPOSED),
            ]
        )
        if not self.any_origin:
            fields.append(("Vary", "Origin"))
        return fields

    def fields(self, origin: str | None) -> str:
        """`answer_fields` as head lines (CRLF-ended), for the fast server's heads."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.answer_fields(origin))

    def allow_origin(self, origin: str | None) -> str | None:
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None
