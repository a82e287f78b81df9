"""The engine's inputs and outputs (plain msgspec structs, shared by the HTTP and discrete-event drivers)."""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Sequence

import msgspec


def prompt_checksum(token_ids: Sequence[int], previous: int = 0) -> int:
    """CRC-32 of the token ids as 64-bit integers (native byte order), the seed of a request's output plan;
    `previous`: the checksum of the tokens before these (it extends: checksum(a + b) =
    prompt_checksum(b, prompt_checksum(a)))."""
    if isinstance(token_ids, array) and token_ids.typecode == "q":
        return zlib.crc32(token_ids, previous)
    try:
        return zlib.crc32(array("q", token_ids), previous)
    except OverflowError:  # ids beyond 64 bits: never from a tokenizer, but still deterministic
        return zlib.crc32(repr(list(token_ids)).encode(), previous)


class InvalidRequestError(ValueError):
    """The request can never run on this engine (vLLM answers HTTP 400 with this message)."""


class EngineRequest(msgspec.Struct, kw_only=True):
    """What the server hands the engine: token ids and the sampling parameters that shape the run."""

    request_id: str
    # a list, or an `array("q")` (the discrete-event clients' conversations): the engine copies it as one
    # buffer instead of one int object at a time
    prompt_token_ids: Sequence[int]
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    priority: int = 0
    cache_salt: str | None = None
    # Optional: the hashes of the prompt's leading full blocks, computed by the caller with the engine's
    # algorithm (and salt). A discrete-event client growing one conversation passes them, so a 50k-token
    # prompt is not re-hashed on every call; the engine hashes any block beyond them itself. A list, or an
    # `array("q")` of builtin (int) hashes, which the engine keeps as one (its pool views it as it is).
    prompt_block_hashes: Sequence[bytes | int] | None = None
    # Optional: `prompt_checksum(prompt_token_ids)`, kept up to date by a caller growing one conversation, so
    # the output plan does not checksum a 50k-token prompt on every call. Trusted as given.
    prompt_checksum: int | None = None
    # KV retention (docs/retention-api.md): the session the request belongs to and, when set, how long its
    # cached blocks stay retained for that session after it finishes (vllm_xargs.saga_retain_ttl_s).
    session_id: str | None = None
    retain_ttl_s: float | None = None
    # The retention's priority (vllm_xargs.saga_retain_priority; lower = more important); None: `priority`.
    retain_priority: int | None = None


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class RequestOutput(msgspec.Struct):
    """What one request emitted in one step; `finish_reason` and `usage` are set on its last output."""

    request_id: str
    new_token_ids: list[int]
    first_token: bool
    arrival_time: float
    first_scheduled_time: float
    finish_reason: str | None = None
    usage: Usage | None = None
    # on the last output: the request's block hash chain (prompt and output blocks hashed so far, the first
    # ones as the caller gave them), so a caller growing the conversation need not hash them again
    block_hashes: Sequence[bytes | int] | None = None


class StepResult(msgspec.Struct):
    start: float
    duration: float
    num_prefill_tokens: int
    num_decode_seqs: int
    num_preempted: int
    outputs: list[RequestOutput]

    @property
    def end(self) -> float:
        return self.start + self.duration


class EngineStats(msgspec.Struct, frozen=True):
    """A snapshot for metrics; `*_total` are counters since the engine started."""

    num_running: int
    num_waiting: int
    kv_usage: float
    num_gpu_blocks: int
    block_size: int
    prefix_cache_queries_total: int
    prefix_cache_hits_total: int
    num_preemptions_total: int
    prompt_tokens_total: int
    prompt_tokens_cached_total: int
    generation_tokens_total: int
    num_finished_total: int
    num_retained_blocks: int = 0  # distinct blocks held by KV retentions (counted in kv_usage too)
    num_retained_sessions: int = 0
    retentions_dropped_total: int = 0  # released before their TTL by the cap or memory pressure
    blocks_cached_total: int = 0  # full blocks whose hash entered the prefix cache
    blocks_reused_total: int = 0  # of those, reused by a later prefix hit before being evicted
    prefill_tokens_total: int = 0  # computed in prefill chunks, recomputation included
    # of those, tokens preempted requests had computed before and computed again once readmitted (what
    # preemption made the engine redo; KV found again, on GPU or loaded from CPU, is not redone)
    prefill_tokens_recomputed_total: int = 0
    num_loading: int = 0  # requests waiting for (or just done with) a CPU->GPU KV load
    # CPU KV offload (simulator.offload), zero without it
    num_cpu_blocks: int = 0
    cpu_kv_usage: float = 0.0
    offload_stored_tokens_total: int = 0  # GPU->CPU
    offload_loaded_tokens_total: int = 0  # CPU->GPU, instead of recomputing them
    offload_evicted_blocks_total: int = 0
