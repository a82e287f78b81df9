"""Proxy configuration: one msgspec struct, every field defaulted, validated when the proxy starts.

Every key is documented in docs/config.md. Unknown keys are errors naming the key (msgspec's
`forbid_unknown_fields`); `validate()` checks values and names the offending key.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec

from fairness.tenants import TenantsConfig
from proxy.arg_types import EMPTY_HOST
from proxy.cors import CorsPolicy
from proxy.kv_event_sources import SourcesError, reachable
from proxy.replica_guard import GuardParams
from proxy.scheduler.registry import PRESETS, ConfigError, PolicySpec
from proxy.scheduler.release import ReleaseQueueSpec

_TENANT_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # printable ASCII but ':' (it ends a session's prefix)


# What RFC 3986 lets a URL hold (unreserved, reserved, percent signs): no controls, spaces, quotes, <>\^`{|}
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")  # a DNS name: labels, dotted


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def credential_problem(value: str) -> str | None:
    """Why `value` cannot be a bearer token, or None. A header cannot carry a line break (one sent to a
    replica would inject header lines) and the proxy strips the token a client presents, so a key with a
    control character or surrounding whitespace (a secret file's final newline) could never match.
    The message never shows the value: it is a secret."""
    if not value:
        return "must be non-empty (leave it unset for none)"
    if value != value.strip() or any(c < " " or c == "\x7f" for c in value):
        return "holds a control character or leading/trailing whitespace (a secret file's final newline?)"
    if not value.isascii():  # the head of a request to a replica is written one byte a character (latin-1)
        return "holds a character outside ASCII"
    return None


def replica_url_problem(url: str) -> str | None:
    """Why `url` cannot name a replica, or None. The proxy appends the API's paths to it (a path prefix is
    fine) and connects to its host and port, so it needs both, and no user info, query or fragment."""
    if len(url) > 2048 or not url.startswith(("http://", "https://")) or not _URL_CHARS.fullmatch(url):
        return "is not an http(s) URL (RFC 3986: printable ASCII, no spaces, quotes or angle brackets)"
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError when out of range
    except ValueError as e:
        return f"is not a URL ({e})"
    if not parts.hostname:
        return "names no host"
    if not _HOST_NAME.fullmatch(parts.hostname) and not _is_ip(parts.hostname):
        return "names no valid host (a DNS name, an IPv4 address or a bracketed IPv6 address)"
    if port == 0:
        return "names port 0"
    if "@" in parts.netloc:
        return "holds user info (the replica's API key is upstream_api_key)"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "holds a query or fragment"
    return None


def replica_identity(url: str) -> tuple[str, str, int, str]:
    """What a replica URL names, however it is spelled (a URL `replica_url_problem` passed): scheme, host in
    lower case, port (the scheme's default when none is given), path without its trailing slashes. Two URLs
    with one identity are one replica: `http://LOCALHOST:018000/` and `http://localhost:8000`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def same_replica(url: str, known: Iterable[str]) -> str | None:
    """The URL among `known` that names the same replica as `url` (`replica_identity`), or None."""
    identity = replica_identity(url)
    return next((k for k in known if replica_identity(k) == identity), None)


MIN_HEALTH_INTERVAL_S = 0.05  # below it the probes spin the event loop (and the replicas) to no end
MIN_DISCOVERY_INTERVAL_S = 1.0  # DNS answers change no faster; a lookup loop must not hammer the resolver


class DnsDiscovery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Replicas found by resolving a DNS name (a Kubernetes headless service: one address per pod)."""

    name: str
    port: int = 8000
    scheme: str = "http"
    interval_s: float = 10.0

    def validate(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ConfigError("discovery.scheme must be http or https")
        if not (math.isfinite(self.interval_s) and self.interval_s >= MIN_DISCOVERY_INTERVAL_S):
            raise ConfigError(
                f"discovery.interval_s must be >= {MIN_DISCOVERY_INTERVAL_S}, got {self.interval_s}"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"discovery.port must be a TCP port (1-65535), got {self.port}")
        if len(self.name) > 253 or not (_HOST_NAME.fullmatch(self.name) or _is_ip(self.name)):
            raise ConfigError(f"discovery.name must be a DNS name or an IP address, got {self.name[:100]!r}")


class KvEventsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Subscribe to the replicas' vLLM KV-cache events (proxy/kv_events.py): which prefix of each session
    every replica still caches, exactly, for work stealing and prefix scoring."""

    # Ask each replica not in `endpoints` where its ranks publish (vLLM 0.32+ `GET /kv_event_sources`,
    # proxy/kv_event_sources.py); `port` is the fallback where it cannot say.
    discover: bool = True
    # The replicas' publisher port (vLLM `--kv-events-config` endpoint `tcp://*:PORT`), on each replica's
    # host.
    port: int | None = 5557
    # Replica URL -> its ZMQ endpoint, where it is not `tcp://<host>:<port>` (one rank; not discovered).
    endpoints: dict[str, str] = msgspec.field(default_factory=dict)
    # Session chains kept per view (one per replica and data-parallel rank; least recently extended dropped
    # first) and cached blocks per view (past it, the view starts afresh): bounds on memory, ~100 bytes a
    # block.
    max_sessions: int = 100_000
    max_blocks: int = 4_000_000

    def validate(self) -> None:
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError("kv_events.port must be a TCP port (1-65535)")
        if self.max_sessions <= 0 or self.max_blocks <= 0:
            raise ConfigError("kv_events.max_sessions and kv_events.max_blocks must be > 0")
        for url, endpoint in self.endpoints.items():
            problem = replica_url_problem(url)
            if problem is not None:
                raise ConfigError(f"kv_events.endpoints: the key {url!r} {problem}")
            try:  # the rule a replica's own /kv_event_sources answer is held to
                reachable(endpoint, url)
            except SourcesError as e:
                raise ConfigError(f"kv_events.endpoints[{url!r}]: {e}") from None
        if len({url.rstrip("/") for url in self.endpoints}) != len(self.endpoints):
            raise ConfigError("kv_events.endpoints: a replica URL is listed twice")

    def normalised(self) -> KvEventsConfig:
        """Validated, with the endpoints' keys as the replicas' ids (their URLs without a trailing slash, as
        proxy/app.py makes them) and a wildcard host as the replica's, as for a discovered endpoint."""
        self.validate()
        endpoints = {url.rstrip("/"): reachable(endpoint, url) for url, endpoint in self.endpoints.items()}
        return msgspec.structs.replace(self, endpoints=endpoints)


class ProxyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    replicas: list[str] = msgspec.field(default_factory=list)
    discovery: DnsDiscovery | None = None
    policy: str | PolicySpec = "saga"
    host: str = "127.0.0.1"
    port: int = 8000
    seed: int | None = None
    health_interval_s: float = 2.0
    health_timeout_s: float = 5.0  # one probe (/health, then /metrics)
    # Simulated fleets only (`saga sim --time-scale`, the demo, `bench live`): the replicas' time runs this
    # many times faster than the wall clock, and the scheduler core's clock with it, so the gaps the
    # predictor learns and the retention TTLs it sends are in the replicas' seconds. 1 for real replicas.
    time_scale: float = 1.0
    # Consecutive failed / good health probes before a replica is marked down / up again.
    unhealthy_after: int = 1
    healthy_after: int = 1
    # Consecutive failed calls that open a replica's circuit breaker, and how long it stays open.
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0
    connect_timeout_s: float = 5.0
    # Until the replica's status line: a non-streaming answer comes whole, so this bounds a whole generation.
    first_byte_timeout_s: float = 600.0
    # Between two chunks of a streamed answer: bounds only a stalled replica.
    stream_idle_timeout_s: float = 120.0
    # Retries on another replica after a connect error or a 5xx before the first byte.
    max_retries: int = 2
    # A replica that refused a request priority (vLLM without `--scheduling-policy priority`) gets its calls
    # without one for this long, then is asked again (a restart with the priority policy is picked up).
    priority_reprobe_s: float = 300.0
    # On SIGTERM / SIGINT `saga serve` stops accepting connections and lets the calls in progress finish for
    # up to this long (a rolling update must not cut agents' streams); a second signal stops it at once.
    shutdown_grace_s: float = 30.0
    # Sent as Retry-After (seconds, rounded up to at least 1) with 429 and 503 refusals.
    retry_after_s: float = 1.0
    max_body_bytes: int = 64 * 1024 * 1024  # agent prompts reach 100k+ tokens of JSON
    # A replica's whole (non-streaming) answer is held in memory before it is sent on: above this, the
    # call is answered 502 instead (streams are relayed as they come; what the proxy keeps of one for session
    # inference is bounded by it too, and dropped past it).
    max_answer_bytes: int = 64 * 1024 * 1024
    session_idle_ttl_s: float = 3600.0
    # A session whose id was inferred (the client sent none) and that made one call is forgotten sooner.
    single_call_session_ttl_s: float = 120.0
    # Sessions the scheduler remembers at most; beyond it the least recently seen idle one is forgotten.
    max_sessions: int = 100_000
    # Tenants' identity sources, weights and SLO classes (fairness/tenants.py).
    tenants: TenantsConfig = msgspec.field(default_factory=TenantsConfig)
    # Hold calls in the proxy and release them in a fair order (proxy/scheduler/release.py); off when None.
    queue: ReleaseQueueSpec | None = None
    # Sent as `Authorization: Bearer ...` to replicas started with vLLM's `--api-key`.
    upstream_api_key: str | None = None
    # Client API keys -> tenant names; when set, every OpenAI route needs `Authorization: Bearer <key>`.
    api_keys: dict[str, str] | None = None
    # With api_keys: each key's tenant gets a prefix cache of its own on the replicas (vLLM's `cache_salt`,
    # proxy/tenant_salt.py), so no tenant learns another's prompts from its cached-token counts.
    tenant_cache_salt: bool = True
    # Required (as `Authorization: Bearer <token>`) by every /saga/v1/* admin route when set.
    admin_token: str | None = None
    # Who holds client connections: "fast" (proxy/fast_server.py serves the call routes, aiohttp the rest)
    # or "aiohttp" (aiohttp serves everything).
    server: str = "fast"
    # Worker processes sharing the port (proxy/worker_set.py); each session is scheduled by one of them.
    workers: int = 1
    access_log: bool = True
    # vLLM KV-cache events: off when None (the prefix-cache view is then the proxy's own estimate).
    kv_events: KvEventsConfig | None = None
    log_format: str = "text"  # or "json": one JSON object per log line
    # Origins whose browser clients may call the proxy (CORS, as vLLM's `--allowed-origins`): `*`,
    # comma-separated origins, or empty for none (proxy/cors.py). Off by default (vLLM allows every origin):
    # agents send no `Origin`, and each call would look for one
    cors_allowed_origins: str = ""

    def guard_params(self) -> GuardParams:
        return GuardParams(
            unhealthy_after=self.unhealthy_after,
            healthy_after=self.healthy_after,
            breaker_failures=self.breaker_failures,
            breaker_cooldown_s=self.breaker_cooldown_s,
        )

    def validate(self) -> None:
        if not self.replicas and self.discovery is None:
            raise ConfigError("no replicas: give at least one --replica URL, --simulate N or discovery")
        if self.discovery is not None:
            self.discovery.validate()
        if not 0 <= self.port <= 65535:  # the socket layer would take 99999 as 34463 (modulo 2**16)
            raise ConfigError(f"port must be a TCP port (0-65535; 0: any free one), got {self.port}")
        if self.server not in ("fast", "aiohttp"):
            raise ConfigError(f"server must be 'fast' or 'aiohttp', got {self.server!r}")
        if not self.host.strip():  # the socket layer takes "" for every interface, not the default
            raise ConfigError(f"host {EMPTY_HOST}")
        if self.api_keys is not None and not self.api_keys:  # else {} would quietly mean "no authentication"
            raise ConfigError("api_keys is empty: map at least one key to a tenant, or leave api_keys out")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers must be between 1 and 256, got {self.workers}")
        if self.workers > 1 and self.server != "fast":
            raise ConfigError("workers > 1 needs server: fast (it hands client connections between workers)")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be 'text' or 'json'")
        CorsPolicy.parse(self.cors_allowed_origins)
        for name in ("upstream_api_key", "admin_token"):
            value = getattr(self, name)
            if value is not None and (problem := credential_problem(value)) is not None:
                raise ConfigError(f"{name} {problem}")
        for key, tenant in (self.api_keys or {}).items():
            if not key or not tenant:
                raise ConfigError("api_keys: every key and tenant must be non-empty")
            if (problem := credential_problem(key)) is not None:
                raise ConfigError(f"api_keys: the key of tenant {tenant[:128]!r} {problem}")
            if not _TENANT_NAME.fullmatch(tenant) or len(tenant) > 128:
                # "<tenant>:" prefixes the tenant's session ids, which go to the replicas in a header
                raise ConfigError(
                    "api_keys: a tenant name must be 1 to 128 printable ASCII characters, no space or ':'"
                )
        for url in self.replicas:
            problem = replica_url_problem(url)
            if problem is not None:
                raise ConfigError(f"replica {url!r} {problem}", key="replicas")
        spellings: dict[tuple[str, str, int, str], str] = {}  # each identity once: no pair-wise comparison
        for url in self.replicas:
            identity = replica_identity(url)
            twin = spellings.get(identity)
            if twin is None:
                spellings[identity] = url
            else:
                shown = "twice" if twin == url else f"twice ({twin!r} and {url!r} name the same replica)"
                raise ConfigError(f"a replica URL is listed {shown}", key="replicas")
        if isinstance(self.policy, str) and self.policy not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise ConfigError(f"unknown policy {self.policy!r}; known: {known}", key="policy")
        positive = (
            "time_scale",
            "health_interval_s",
            "health_timeout_s",
            "connect_timeout_s",
            "first_byte_timeout_s",
            "stream_idle_timeout_s",
            "session_idle_ttl_s",
            "single_call_session_ttl_s",
            "breaker_cooldown_s",
            "retry_after_s",
            "unhealthy_after",
            "healthy_after",
            "breaker_failures",
            "max_body_bytes",
            "max_answer_bytes",
            "max_sessions",
            "priority_reprobe_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.health_interval_s < MIN_HEALTH_INTERVAL_S:
            raise ConfigError(
                f"health_interval_s must be >= {MIN_HEALTH_INTERVAL_S}, got {self.health_interval_s}"
            )
        for field in msgspec.structs.fields(self):  # NaN passes `<= 0`; inf is no timeout at all
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{field.name} must be a finite number, got {value}")
        try:
            self.tenants.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if self.queue is not None:
            self.queue.validate()
        if self.kv_events is not None:
            self.kv_events.validate()
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown_grace_s must be >= 0")
