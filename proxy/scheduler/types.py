"""What flows into and out of the scheduler core.

Events carry everything a later predictor or fair queue needs (session, tenant, agent type, token counts,
timestamps); decisions are what the I/O shell must carry out. All are msgspec structs: cheap to build on the
request path and easy to log or replay.
"""

from __future__ import annotations

import msgspec

ReplicaId = str
PREFIX_CHUNK_TOKENS = 256
PREFIX_CHUNK_BYTES = 4 * PREFIX_CHUNK_TOKENS  # over HTTP: bytes of the prompt's JSON, ~4 a token


class RequestInfo(msgspec.Struct, frozen=True):
    """One LLM call as the proxy sees it on arrival (only the fields routing needs, never the body)."""

    request_id: str
    session_id: str
    arrived_at: float
    tenant_id: str = "default"
    agent_type: str = "default"
    model: str = ""
    # Bytes of the call's conversation as sent (its messages, prompt or input, with a system prompt given
    # apart), 0 where there is no body (the discrete-event cluster): what tells a call that goes on from its
    # session's last call (longer) from one repeating it, whatever else of the body changed.
    prompt_chars: int = 0
    # Estimated prompt length in tokens (exact in the discrete-event cluster; over HTTP bytes / 4 times
    # `SchedulerCore.prompt_scale`, the ratio the engines' counts showed).
    prompt_tokens: int = 0
    # Chain hashes of the prompt's leading chunks, one per chunk of PREFIX_CHUNK_TOKENS tokens (over HTTP: of
    # 4 x PREFIX_CHUNK_TOKENS characters): two calls whose first k hashes are equal share that prefix. Used by
    # prefix-aware policies as an approximate prefix tree; empty when the shell does not compute them.
    prefix_hashes: tuple[int, ...] = ()
    stream: bool = False
    # True when the session id was inferred from the conversation rather than sent by the client.
    session_inferred: bool = False
    # Names of the tools whose results this request carries (its tool messages, in order): they say which
    # tool the previous answer called when that answer's own tool calls were not seen.
    tool_names: tuple[str, ...] = ()
    # The replica holding state this call names, which no other replica has (a Responses API
    # `previous_response_id`: vLLM keeps stored responses in its own memory): the call goes there or is
    # refused, whatever the policy, admission, work stealing or a retry would choose. "" when none.
    pinned_replica: ReplicaId = ""
    # The session that spawned this one, when a subagent has a session of its own: part of the parent's
    # workflow, so admitted with it and ranked with it. "" when none. (The proxy keeps a subagent's calls in
    # the session they name; the discrete-event cluster's `swe-subagents` sets it: docs/results/subagents/.)
    parent_session: str = ""
    # Tokens of this session's context each replica reports still caching, from the replicas' KV-cache
    # events (proxy/kv_residency.py), for the replicas where the session stored blocks, in the units of
    # `prompt_tokens` (over HTTP the replica's count times the learned ratio of estimated to reported
    # prompt tokens); None when the proxy takes no KV events (then policies assume a replica holds what
    # they sent it and has not evicted it).
    kv_resident: dict[ReplicaId, int] | None = None
    # The call's cap on its answer's tokens (`max_tokens` and its other names), 0 when it names none: what
    # a call beside another of its workflow is sized by (admission.py `call_tokens`)
    max_output_tokens: int = 0
    # The answers the call asks for (`n`, vLLM's parallel sampling; 1 when it names none): its completion
    # tokens are those of every choice, so its time per token says nothing of the replica's speed
    choices: int = 1
    # Sent beside another call of its workflow to a replica other than the workflow's (the core's spill:
    # stealing.py `spill_target`): the workflow stays bound where it was, and nothing is retained for it.
    spilled: bool = False


class Usage(msgspec.Struct, frozen=True):
    """Token counts of a finished call, as the replica reported them (zeros when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # "stop" (an answer for a person), "tool_calls", "length", ...; "" when unknown.
    finish_reason: str = ""
    # Names of the tools the answer called (its `tool_calls`, streamed or not), in order.
    tool_names: tuple[str, ...] = ()


class ReplicaView(msgspec.Struct):
    """What the core knows of one replica. Owned by the core's datastore; policies only read it."""

    replica_id: ReplicaId
    healthy: bool = True
    # calls this proxy has dispatched and not yet seen finish; with `saga serve --workers N`, plus the other
    # workers' (`foreign_in_flight`, as last synced), so load scoring and gates count every worker's calls
    in_flight: int = 0
    queued: int = 0  # calls held in this proxy's release queue for this replica (0 without a queue)
    waiting: int = 0  # from the replica's metrics: vllm:num_requests_waiting
    running: int = 0  # vllm:num_requests_running
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1
    kv_capacity_tokens: int = 0  # vllm:cache_config_info num_gpu_blocks x block_size; 0 = unknown
    # vllm:cache_config_info kv_offloading_size is set: blocks evicted from the GPU can be reloaded from a
    # CPU tier instead of recomputed (vLLM's native offloading, LMCache)
    cpu_kv_tier: bool = False
    # KV the admitted workflows bound here are predicted to need (admission only), the other workers' included
    reserved_tokens: int = 0
    # The other workers' share of `in_flight` and `reserved_tokens` (`SchedulerCore.foreign_load`; 0 in a
    # single-process proxy): what this worker publishes as its own is the total less these.
    foreign_in_flight: int = 0
    foreign_reserved_tokens: int = 0
    # How many times slower than the fleet's fastest replica this one serves calls that met the same load,
    # where that is past the policy's `stealing.slower_above` (replica_speed.py); else 1.0
    slowness: float = 1.0


class ReplicaStats(msgspec.Struct, frozen=True):
    """A scrape or health-check result for one replica; None fields leave the old value."""

    replica_id: ReplicaId
    healthy: bool | None = None
    waiting: int | None = None
    running: int | None = None
    kv_usage: float | None = None
    kv_capacity_tokens: int | None = None
    cpu_kv_tier: bool | None = None


class Dispatch(msgspec.Struct, frozen=True, tag="dispatch"):
    """Send request `request_id` to `replica_id`; `priority` (lower first) is passed on to vLLM when set."""

    request_id: str
    replica_id: ReplicaId
    priority: int | None = None
    # Ask the replica to keep this call's KV cached for this many seconds after it ends (the retention
    # contract, docs/retention-api.md: sent as vllm_xargs.saga_retain_ttl_s with the session id).
    retain_ttl_s: float | None = None
    # The retention's priority (lower = more important; sent as vllm_xargs.saga_retain_priority); None: the
    # replica uses the call's own priority. Under contract v2 only more important work may break it.
    retain_priority: int | None = None


class Reject(msgspec.Struct, frozen=True, tag="reject"):
    """Refuse request `request_id`; `status` is the HTTP status the shell answers with."""

    request_id: str
    reason: str
    status: int = 503


Decision = Dispatch | Reject
