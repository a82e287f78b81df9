"""What flows into and out of the scheduler core.

Events carry everything a later predictor or fair queue needs (session, tenant, agent type, token counts,
timestamps); decisions are what the I/O shell must carry out. All are msgspec structs: cheap to build on the
request path and easy to log or replay.
"""

from __future__ import annotations

import msgspec

ReplicaId = str


class RequestInfo(msgspec.Struct, frozen=True):
    """One LLM call as the proxy sees it on arrival (only the fields routing needs, never the body)."""

    request_id: str
    session_id: str
    arrived_at: float
    tenant_id: str = "default"
    agent_type: str = "default"
    model: str = ""
    prompt_chars: int = 0
    stream: bool = False
    # True when the session id was inferred from the conversation rather than sent by the client.
    session_inferred: bool = False


class Usage(msgspec.Struct, frozen=True):
    """Token counts of a finished call, as the replica reported them (zeros when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class ReplicaView(msgspec.Struct):
    """What the core knows of one replica. Owned by the core's datastore; policies only read it."""

    replica_id: ReplicaId
    healthy: bool = True
    in_flight: int = 0  # calls this proxy has dispatched and not yet seen finish
    waiting: int = 0  # from the replica's metrics: vllm:num_requests_waiting
    running: int = 0  # vllm:num_requests_running
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1


class ReplicaStats(msgspec.Struct, frozen=True):
    """A scrape or health-check result for one replica; None fields leave the old value."""

    replica_id: ReplicaId
    healthy: bool | None = None
    waiting: int | None = None
    running: int | None = None
    kv_usage: float | None = None


class Dispatch(msgspec.Struct, frozen=True, tag="dispatch"):
    """Send request `request_id` to `replica_id`; `priority` (lower first) is passed on to vLLM when set."""

    request_id: str
    replica_id: ReplicaId
    priority: int | None = None


class Reject(msgspec.Struct, frozen=True, tag="reject"):
    """Refuse request `request_id`; `status` is the HTTP status the shell answers with."""

    request_id: str
    reason: str
    status: int = 503


Decision = Dispatch | Reject
