"""CORS for clients running in a browser, as vLLM's own server answers them (its CORS middleware: every
origin allowed by default, `--allowed-origins`), so a web client that works against vLLM works through SAGA.

Contract:
- `cors_allowed_origins` (config): `*`, a comma-separated list of origins (`https://app.example.com`), or
  empty for none. `CorsPolicy.parse` reads it (ConfigError naming the key for a malformed origin).
- `cors_middleware(policy)` (proxy/cors_middleware.py) is an aiohttp middleware, outside authentication:
  a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, which a browser sends without
  credentials) is answered there on any path: 200 with the origin allowed, every method, the headers asked
  for and a max age, or a 400 for an origin not allowed. Any other answer to a request whose `Origin` is
  allowed gets `Access-Control-Allow-Origin` when it has none (the proxy's own refusals; a replica's
  answers carry vLLM's), unless its head went out already (a stream).
- `CorsPolicy.allow_origin(origin)` is the header's value for `origin` (None: not allowed), for the fast
  server's refusals on the call routes.
- With no origin allowed, nothing here runs: a preflight is a 405 as any method a route does not take.
"""

from __future__ import annotations

import re

import msgspec

from proxy.scheduler.plugin_spec import ConfigError

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

    def allow_origin(self, origin: str | None) -> str | None:
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None
