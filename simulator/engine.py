"""A sans-IO model of one vLLM engine (v1 scheduler) on a virtual clock.

Contract:
- No I/O and no clock reads: callers pass `now` (simulated seconds) to `add_request` and `step`. `step(now)`
  schedules one continuous-batching step, advances every scheduled request, and returns how long the step
  takes on the modelled GPU plus what each request emitted; the results are as of `now + duration`.
- Scheduling (as vLLM's v1 scheduler): running requests first, in order, each getting its remaining prefill
  (chunked to the step's token budget) or one decode token; a running request that cannot get a KV block
  preempts the lowest-priority, newest running request (itself last), which loses its blocks and goes back
  to the head of the waiting queue to be recomputed. If nothing was preempted, waiting requests are admitted
  in queue order while the token budget, `max_num_seqs` and free blocks allow; the first that does not fit
  stops admission.
- Prefix caching: on admission a request reuses the longest chain of cached full blocks from its start,
  capped so that at least its last token is computed; `cached_tokens` in its usage is that hit at first
  admission. Full blocks of prompt and output are cached as they are scheduled; finished or preempted
  requests free their blocks last-first, which stay cached until evicted LRU. The profile's KV capacity
  is the usable blocks; `num_gpu_blocks` in stats is one more, as vLLM reports it (block 0 is its null
  block).
- Output: the last prefill chunk emits the first token, each decode step one more. The length is
  `max_tokens` with `ignore_eos`, else a deterministic function of the prompt (32..724 tokens, at least
  `min_tokens`), ending in EOS (finish reason "stop") unless capped by `max_tokens` or `max_model_len`
  ("length").
- A step that schedules nothing while requests are pending (only right after a request preempted itself)
  is followed by one that does.
- KV retention (simulator.retention, docs/retention-api.md): a request with `session_id` and `retain_ttl_s`
  retains its cached full blocks (prompt and output) when it finishes, its reference taken before its own
  free; aborted requests retain nothing. The session's next request drops that retention once it is admitted
  (running, holding its own references through its prefix hit). Expired retentions are released at the
  start of `step(now)` and by `expire_retentions(now)`. Contract v2 (priorities, lower = more important;
  a retention's is `retain_priority`, else the request's `priority`): a running request that needs a block
  releases retentions, least important first, before anything is preempted; the waiting queue's head may
  release only retentions strictly less important than itself, and only if that lets it in; when nothing
  is running, it may release any, so retention never deadlocks the engine. Retentions are not pending work
  (`has_unfinished`).
- Coalesced decoding (`coalesce_decode=True`; the discrete-event cluster's default, off for the HTTP
  replicas, which stream every token): a step that certainly only decodes one token for every running
  request (`_next_step_is_quiet_decode` says when) runs in O(1) plus the block allocations and prefix-cache
  registrations due in it (simulator.decode_run), instead of touching every request. Its StepResult is
  exact but carries no outputs: the tokens it sampled are returned, in order, ahead of the next ordinary
  step's outputs (one RequestOutput per request, `new_token_ids` holding all of them); `quiet_step(now)`
  runs such a step and returns just its duration, or None and `ordinary_step(now)` runs the step. Every
  step, its duration, block, preemption, admission and finish is the same as with coalescing off (tests
  compare runs).
- CPU KV offload (`kv_offload_gib`, simulator.offload, docs/offload.md): prompt blocks are stored to a CPU
  LRU pool as they are computed; a waiting request whose prefix continues in that pool beyond its GPU hit
  gets GPU blocks for it and waits (not running, not blocking the requests behind it) until the load is
  done, then joins the running batch with those tokens computed. `next_event_time()` is when the next load
  completes: a step that schedules nothing while loads are pending is followed by one at that time.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from mypy_extensions import mypyc_attr

from simulator.block_hash import BlockHash, first_block_extra_keys, hash_function, none_hash
from simulator.block_pool import BlockPool, as_block_ids
from simulator.cost_model import Profile, prefill_attention_pairs, step_time_s
from simulator.decode_run import ALLOCATE, DecodeRun
from simulator.engine_offload import OffloadHooks, offload_tier
from simulator.engine_types import (
    EngineRequest,
    EngineStats,
    InvalidRequestError,
    RequestOutput,
    StepResult,
    Usage,
)
from simulator.request_queue import WaitingQueue
from simulator.request_state import RequestState, output_plan, validate
from simulator.retention import (
    DEFAULT_MAX_RETAIN_TTL_S,
    DEFAULT_MAX_RETAINED_FRACTION,
    RetentionTable,
    check_session_id,
    check_ttl,
)
from simulator.tokenizer import Tokenizer

__all__ = [
    "Engine",
    "EngineRequest",
    "EngineStats",
    "InvalidRequestError",
    "RequestOutput",
    "StepResult",
    "Usage",
]


@mypyc_attr(allow_interpreted_subclasses=True)  # the tests subclass it (setup.py compiles it)
class Engine(OffloadHooks):
    """One replica's scheduler, KV cache and cost model. `scheduling_policy`: 'fcfs' (vLLM's default) or
    'priority'; `hash_algo`: see simulator.block_hash; `max_retained_fraction` and `max_retain_ttl_s`: the
    retention caps (simulator.retention); `kv_offload_gib`: a CPU KV offload pool of that many GiB
    (simulator.offload, vLLM's --kv-offloading-size), none when None."""

    def __init__(
        self,
        profile: Profile,
        *,
        scheduling_policy: str = "fcfs",
        hash_algo: str = "sha256",
        tokenizer: Tokenizer | None = None,
        max_retained_fraction: float = DEFAULT_MAX_RETAINED_FRACTION,
        max_retain_ttl_s: float = DEFAULT_MAX_RETAIN_TTL_S,
        coalesce_decode: bool = False,
        kv_offload_gib: float | None = None,
    ) -> None:
        profile.validate()
        self.profile = profile
        self.scheduling_policy = scheduling_policy
        self.hash_algo = hash_algo
        self.block_size = profile.block_size
        self.pool = BlockPool(profile.num_gpu_blocks, profile.block_size)
        self.retention = RetentionTable(
            self.pool, max_fraction=max_retained_fraction, max_ttl_s=max_retain_ttl_s
        )
        # request id -> (session, retain TTL, retention priority)
        self._session_of: dict[str, tuple[str, float | None, int]] = {}
        # session -> the cached chain its last finished request left (block ids): its next request's prefix
        # lookup checks these first (BlockPool.lookup_from); oldest dropped beyond 2x the pool's blocks
        self._chain_hints: dict[str, npt.NDArray[np.int64]] = {}
        self._chain_hint_blocks = 0
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self._hash = hash_function(hash_algo)
        self._none_hash = none_hash(hash_algo)
        self._waiting: WaitingQueue[RequestState] = WaitingQueue(scheduling_policy)
        # The head request that last failed to fit: (request, pool version, retention version, whether
        # anything was running, step budget, prefix hit blocks).
        self._blocked: tuple[RequestState, int, int, bool, int, int] | None = None
        self._running: list[RequestState] = []
        self._seqs: dict[str, RequestState] = {}
        self._seq_no = 0
        self.num_preemptions = 0
        self.prompt_tokens_total = 0
        self.prompt_tokens_cached_total = 0
        self.generation_tokens_total = 0
        self.num_finished = 0
        # Coalesced pure-decode steps (see "Coalesced decoding" in the module contract).
        self.coalesce_decode = coalesce_decode
        self._run: DecodeRun | None = None
        self._unreported: list[RequestOutput] = []  # tokens sampled in a settled run, not yet returned
        self.quiet_steps = 0  # steps run coalesced
        self.prefill_tokens_total = 0  # computed in prefill chunks (recomputation included)
        # of those, tokens a preempted request had computed before and computes again (counted as they run)
        self.prefill_recomputed_total = 0
        self.offload = offload_tier(profile, kv_offload_gib)
        self._loading: dict[RequestState, float] = {}  # waiting for a CPU->GPU load -> when it is done
        self._loaded: list[RequestState] = []  # load done, waiting for a running slot (max_num_seqs)
        self._offers: list[BlockHash] = []  # prompt blocks computed this step, stored to CPU at its end
        # The request whose load did not fit last (as `_blocked`), and the CPU pool's evictions then.
        self._load_blocked: tuple[RequestState, int] | None = None

    # ---- requests -------------------------------------------------------------------------------------

    def add_request(self, req: EngineRequest, now: float, *, own_prompt: bool = False) -> None:
        """Queue a request; raises InvalidRequestError if it can never run here (empty, too long, bad
        parameters, duplicate id). `own_prompt`: the engine keeps an `array("q")` prompt as the request's
        token buffer, appending the sampled tokens to it, instead of copying it; the caller leaves it alone
        until the request ends (the discrete-event clients: a conversation grows by the answer anyway)."""
        if req.request_id in self._seqs:
            raise InvalidRequestError(f"request id {req.request_id!r} is already running")
        max_len = self.profile.max_model_len
        validate(
            req, max_model_len=max_len, scheduling_policy=self.scheduling_policy, block_size=self.block_size
        )
        if req.retain_ttl_s is not None:
            if not req.session_id:
                raise InvalidRequestError("saga_retain_ttl_s needs a session id to retain the KV under.")
            try:
                check_ttl(req.retain_ttl_s)
                check_session_id(req.session_id)  # else the table refuses it when the request ends, mid-step
            except ValueError as e:
                raise InvalidRequestError(f"saga_retain_ttl_s: {e}") from None
        plan, finish_reason = output_plan(req, max_model_len=max_len, tokenizer=self.tokenizer)
        seq = RequestState(req, now, self._seq_no, plan, finish_reason, own_prompt=own_prompt)
        self._seq_no += 1
        self._seqs[req.request_id] = seq
        if req.session_id:
            retain_priority = req.priority if req.retain_priority is None else req.retain_priority
            self._session_of[req.request_id] = (req.session_id, req.retain_ttl_s, retain_priority)
        self._waiting.append(seq)

    def abort(self, request_id: str) -> bool:
        """Drop a request wherever it is, freeing its blocks; False if it is unknown or already finished."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        self._settle_decode_run()  # tokens it sampled in a quiet step are still returned, as they were
        self._session_of.pop(request_id, None)
        if seq in self._running:
            self._running.remove(seq)
            self._free(seq)
        elif not self._drop_loading(seq):
            self._waiting.remove(seq)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._running) or len(self._waiting) > 0 or bool(self._loading) or bool(self._loaded)

    def reset_prefix_cache(self) -> bool:
        """Release every retention, then forget every cached block; refused (False), keeping the
        retentions, while a request holds blocks, as vLLM does."""
        if self._running or self._loading or self._loaded:
            return False
        self.retention.release_all()
        if self.offload is not None:
            self.offload.reset()
        return self.pool.reset()

    def release_retention(self, session_id: str) -> int | None:
        """Release a session's retention before its TTL, at the router's request (`POST /saga/v1/release`);
        the number of blocks it held, or None if it held none."""
        return self.retention.release(session_id, "released")

    def expire_retentions(self, now: float) -> int:
        """Release the retentions whose TTL has run out by `now` (lets an idle engine be ticked)."""
        return self.retention.expire(now)

    def load(self) -> tuple[int, int, float]:
        """(waiting, running, KV usage): the part of `stats` a router samples often, without building it."""
        return len(self._waiting), len(self._running), self.pool.usage

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_usage=self.pool.usage,
            num_gpu_blocks=self.pool.num_blocks + 1,  # vLLM counts its reserved null block too
            block_size=self.block_size,
            prefix_cache_queries_total=self.pool.query_tokens,
            prefix_cache_hits_total=self.pool.hit_tokens,
            num_preemptions_total=self.num_preemptions,
            prompt_tokens_total=self.prompt_tokens_total,
            prompt_tokens_cached_total=self.prompt_tokens_cached_total,
            generation_tokens_total=self.generation_tokens_total,
            num_finished_total=self.num_finished,
            num_retained_blocks=self.retention.num_blocks,
            num_retained_sessions=self.retention.num_sessions,
            retentions_dropped_total=self.retention.num_dropped,
            blocks_cached_total=self.pool.blocks_cached_total,
            blocks_reused_total=self.pool.blocks_reused_total,
            **self._offload_stats(),
        )

    def probe_prefix(self, prompt_token_ids: Sequence[int], cache_salt: str | None = None) -> int:
        """Tokens of this prompt a request arriving now would reuse from the prefix cache (full blocks, at
        least the last token left to compute). Takes no references and counts no query."""
        bs = self.block_size
        hash_fn = self._hash

        def hashes() -> Iterator[BlockHash]:
            parent = self._none_hash
            extra = first_block_extra_keys(cache_salt)
            for k in range((len(prompt_token_ids) - 1) // bs):
                parent = hash_fn(parent, prompt_token_ids[k * bs : (k + 1) * bs], extra)
                extra = None
                yield parent

        return len(self.pool.lookup(hashes())) * bs

    def held_blocks(self) -> list[list[int]]:
        """Each running request's and each retention's blocks (for invariant checks)."""
        loading = [list(seq.block_ids) for seq in itertools.chain(self._loading, self._loaded)]
        return [list(seq.block_ids) for seq in self._running] + loading + self.retention.held()

    # ---- one step -------------------------------------------------------------------------------------

    def step(self, now: float) -> StepResult:
        """Schedule and run one step starting at `now`; see the module contract."""
        if self.coalesce_decode:
            duration = self.quiet_step(now)
            if duration is not None:
                n = len(self._running)
                return StepResult(
                    start=now,
                    duration=duration,
                    num_prefill_tokens=0,
                    num_decode_seqs=n,
                    num_preempted=0,
                    outputs=[],
                )
        return self.ordinary_step(now)

    def ordinary_step(self, now: float) -> StepResult:
        """`step` without trying to run it coalesced: for a caller whose `quiet_step(now)` just returned
        None (the same step must not be tried twice)."""
        self.retention.expire(now)
        if self.offload is not None:
            self._finish_loads(now)
        budget = self.profile.max_num_batched_tokens
        scheduled: dict[RequestState, None] = {}
        running = self._running
        num_preempted = 0
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = min(len(seq.tokens) - seq.num_computed, budget)
            preempted_self = False
            while not self._allocate(seq, n):
                if self.retention.release_least_important():
                    continue  # retained blocks yield before any running request is preempted
                j = self._victim_index()
                victim = running.pop(j)
                self._preempt(victim)
                num_preempted += 1
                if victim in scheduled:
                    del scheduled[victim]
                    budget += victim.scheduled
                    victim.scheduled = 0
                if victim is seq:
                    preempted_self = True
                    break
                if j < i:
                    i -= 1
            if preempted_self:
                break
            seq.scheduled = n
            scheduled[seq] = None
            budget -= n
            self._cache_full_blocks(seq, seq.num_computed + n)
            i += 1

        if num_preempted == 0:
            budget = self._admit_waiting(now, budget, scheduled)

        num_tokens = 0
        num_prefill = 0
        num_decode = 0
        attention_pairs = 0.0
        decode_context = 0
        for seq in scheduled:
            n = seq.scheduled
            num_tokens += n
            if n == 1 and seq.num_output > 0 and seq.num_computed == len(seq.tokens) - 1:
                num_decode += 1
                decode_context += seq.num_computed + 1
            else:
                num_prefill += n
                attention_pairs += prefill_attention_pairs(n, seq.num_computed)
                # prefill below what it had computed before a preemption: computed again
                mark = seq.computed_at_preemption
                if mark > seq.num_computed:
                    self.prefill_recomputed_total += min(seq.num_computed + n, mark) - seq.num_computed
        duration = step_time_s(
            self.profile,
            num_tokens=num_tokens,
            attention_pairs=attention_pairs,
            decode_context_tokens=decode_context,
        )
        self.prefill_tokens_total += num_prefill
        if self._offers:
            self._store_offers(now + duration)
        outputs = self._advance(scheduled, now + duration)
        if self._unreported:
            outputs[:0] = self._unreported
            self._unreported = []
        return StepResult(
            start=now,
            duration=duration,
            num_prefill_tokens=num_prefill,
            num_decode_seqs=num_decode,
            num_preempted=num_preempted,
            outputs=outputs,
        )

    def _admit_waiting(self, now: float, budget: int, scheduled: dict[RequestState, None]) -> int:
        bs = self.block_size
        pool = self.pool
        while len(self._waiting) > 0 and budget > 0 and len(self._running) < self.profile.max_num_seqs:
            seq = self._waiting.peek()
            if self._still_blocked(seq, budget):
                break
            num_blocks = (len(seq.tokens) - 1) // bs
            session = self._session_of.get(seq.request_id)
            hint = None if session is None else self._chain_hints.get(session[0])
            if len(seq.block_hashes) >= num_blocks:  # hashed already: look up at C speed
                if hint is not None:
                    hit_ids = pool.lookup_from(seq.block_hashes, num_blocks, hint)
                    hit = None  # as a list only if needed (it rarely is)
                else:
                    hit = pool.lookup(seq.block_hashes[:num_blocks])
                    hit_ids = as_block_ids(hit)
            else:
                hit = pool.lookup(self._iter_hashes(seq, num_blocks))
                hit_ids = as_block_ids(hit)
            if self.offload is not None:
                hit = hit_ids.tolist() if hit is None else hit
                loading = self._start_load(seq, hit, now)
                if loading is not None:
                    if loading:
                        continue  # its blocks come back from CPU; later requests may be admitted meanwhile
                    break
            num_hit = len(hit_ids)
            num_computed = num_hit * bs
            n = min(len(seq.tokens) - num_computed, budget)
            need = -(-(num_computed + n) // bs) - num_hit
            # Contract v2: the head breaks only less important retentions, any when nothing runs
            breaks_below = seq.priority if self._running else None
            short = need + num_hit > pool.num_free and need + pool.num_evictable(hit_ids) > pool.num_free
            if short and not self.retention.make_room(
                need, hit_ids.tolist() if hit is None else hit, breaks_below
            ):
                retention_version = self.retention.version
                self._blocked = (seq, pool.version, retention_version, bool(self._running), budget, num_hit)
                break
            self._waiting.pop()
            pool.touch(hit_ids)
            pool.record_reuse(hit_ids)
            new_blocks = pool.allocate(need)
            assert new_blocks is not None
            if session is not None:
                self._drop_chain_hint(session[0])
                self.retention.release(session[0])  # superseded: this request now holds its own references
            seq.set_blocks(hit_ids, new_blocks)
            seq.num_cached_blocks = num_hit
            seq.num_computed = num_computed
            if seq.cached_tokens < 0:
                seq.cached_tokens = num_computed
                seq.first_scheduled = now
            if seq.num_preemptions == 0:
                pool.record_query(len(seq.tokens), num_computed)
            self._running.append(seq)
            seq.scheduled = n
            scheduled[seq] = None
            budget -= n
            self._cache_full_blocks(seq, num_computed + n)
        return budget

    def _still_blocked(self, seq: RequestState, budget: int) -> bool:
        """Whether `seq` certainly still cannot be admitted: it failed last time and since then no block was
        freed or touched, the retentions did not change, the budget is not smaller (a smaller
        chunk might fit) and its prefix hit cannot have grown. Exact: it skips only attempts that would fail,
        which under memory pressure are most of them (a long queue retried every step). Retentions: which
        ones it may break depends on their set and priorities (the retention table's version) and on
        whether anything runs."""
        blocked = self._blocked
        if blocked is None or blocked[0] is not seq:
            return False
        _, version, retention_version, was_running, old_budget, hit_len = blocked
        if (
            version != self.pool.version
            or retention_version != self.retention.version
            or was_running != bool(self._running)
            or budget < old_budget
        ):
            return False
        hashes = seq.block_hashes
        if self.offload is not None and hit_len < len(hashes) and hashes[hit_len] in self.offload:
            # its prefix continues in the CPU pool: still blocked only if it failed to fit that load and no
            # CPU block was evicted since (the CPU hit can only have grown, needing more GPU blocks)
            memo = self._load_blocked
            if memo is None or memo[0] is not seq or memo[1] != self.offload.blocks_evicted:
                return False
        full_blocks = (len(seq.tokens) - 1) // self.block_size
        return hit_len >= full_blocks or hit_len >= len(hashes) or not self.pool.is_cached(hashes[hit_len])

    def _advance(self, scheduled: dict[RequestState, None], end: float) -> list[RequestOutput]:
        """Apply the step (ending at `end`): count computed tokens, sample one token for each request that
        caught up."""
        outputs: list[RequestOutput] = []
        finished = False
        for seq in scheduled:
            seq.num_computed += seq.scheduled
            seq.scheduled = 0
            if seq.num_computed < len(seq.tokens):
                continue  # a prefill chunk that is not the last
            token = seq.plan[seq.num_output]
            seq.tokens.append(token)
            seq.num_output += 1
            self.generation_tokens_total += 1
            out = RequestOutput(
                request_id=seq.request_id,
                new_token_ids=[token],
                first_token=seq.num_output == 1,
                arrival_time=seq.arrival,
                first_scheduled_time=seq.first_scheduled,
            )
            if out.first_token:
                self.prompt_tokens_total += seq.num_prompt
                self.prompt_tokens_cached_total += seq.cached_tokens
            if seq.num_output == len(seq.plan):
                out.finish_reason = seq.finish_reason
                out.usage = Usage(seq.num_prompt, seq.num_output, seq.cached_tokens)
                out.block_hashes = seq.block_hashes
                block_ids = as_block_ids(seq.block_ids)
                self._retain(seq, end, block_ids)
                self._free(seq, block_ids)
                del self._seqs[seq.request_id]
                self.num_finished += 1
                finished = True
            outputs.append(out)
        if finished:
            self._running = [seq for seq in self._running if seq.request_id in self._seqs]
        return outputs

    # ---- blocks ---------------------------------------------------------------------------------------

    def _iter_hashes(self, seq: RequestState, num_blocks: int) -> Iterator[BlockHash]:
        """The first `num_blocks` block hashes of `seq`, hashing each block at most once per request."""
        for k in range(num_blocks):
            if k == len(seq.block_hashes):
                self._hash_next_block(seq)
            yield seq.block_hashes[k]

    def _hash_next_block(self, seq: RequestState) -> None:
        k = len(seq.block_hashes)
        bs = self.block_size
        parent = seq.block_hashes[-1] if k else self._none_hash
        extra = seq.extra_keys if k == 0 else None
        seq.block_hashes.append(self._hash(parent, seq.tokens[k * bs : (k + 1) * bs], extra))

    def _cache_full_blocks(self, seq: RequestState, num_tokens: int) -> None:
        full = num_tokens // self.block_size
        start = seq.num_cached_blocks
        if full <= start:
            return
        while len(seq.block_hashes) < full:  # hashing is pure: all first, then caching in block order
            self._hash_next_block(seq)
        self.pool.cache_blocks(seq.block_ids, seq.block_hashes, start, full)
        if self.pool.kv_event_sink is not None and full > start:
            self.pool.log_stored(
                seq.block_ids, seq.block_hashes, start, full, seq.tokens, self.session_of(seq.request_id)
            )
        seq.num_cached_blocks = max(start, full)
        if self.offload is not None:
            self._offer_prompt_blocks(seq, full)

    def _allocate(self, seq: RequestState, num_new: int) -> bool:
        need = -(-(seq.num_computed + num_new) // self.block_size) - len(seq.block_ids)
        if need <= 0:
            return True
        blocks = self.pool.allocate(need)
        if blocks is None:
            return False
        seq.block_ids.extend(blocks)
        return True

    def _victim_index(self) -> int:
        running = self._running
        if self.scheduling_policy == "priority":
            return max(range(len(running)), key=lambda k: running[k].sort_key)
        return len(running) - 1

    def _preempt(self, seq: RequestState) -> None:
        self._free(seq)
        # (the most it ever had: what it computes again below that, after any preemption, is recomputation)
        seq.computed_at_preemption = max(seq.computed_at_preemption, seq.num_computed)
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self._waiting.prepend(seq)

    def _retain(self, seq: RequestState, now: float, block_ids: npt.NDArray[np.int64]) -> None:
        """A session's request finished (before its own free): keep its cached blocks as the hint for the
        session's next lookup and, if it asked for it, retain its cached chain for the session."""
        session = self._session_of.pop(seq.request_id, None)
        if session is None:
            return
        own = block_ids[: seq.num_cached_blocks]
        self._drop_chain_hint(session[0])
        if len(own):  # an empty hint finds nothing, and would be an entry the block bound never drops
            self._chain_hints[session[0]] = own
            self._chain_hint_blocks += len(own)
        hints = self._chain_hints
        while self._chain_hint_blocks > 2 * self.pool.num_blocks:  # bounded: forget the oldest hints
            self._drop_chain_hint(next(iter(hints)))
        if session[1] is None:
            return
        chain = self.pool.lookup_from(seq.block_hashes, seq.num_cached_blocks, own).tolist()
        self.retention.retain(session[0], chain, session[1], now, priority=session[2])

    def _drop_chain_hint(self, session_id: str) -> None:
        hint = self._chain_hints.pop(session_id, None)
        if hint is not None:
            self._chain_hint_blocks -= len(hint)

    def _free(self, seq: RequestState, block_ids: npt.NDArray[np.int64] | None = None) -> None:
        """Free `seq`'s blocks last-first (`block_ids`: them as an array, if at hand)."""
        ids = as_block_ids(seq.block_ids) if block_ids is None else block_ids
        self.pool.free(ids[::-1])
        seq.block_ids = array("q")  # `ids` may be a view of the old buffer (as_block_ids): a new one
        seq.num_cached_blocks = 0

    # ---- coalesced decoding ---------------------------------------------------------------------------

    def quiet_step(self, now: float) -> float | None:
        """With `coalesce_decode`: if the step starting at `now` certainly is a pure-decode step
        (`_next_step_is_quiet_decode`), run it as a step of a decode run and return its duration (its
        StepResult would have no outputs, no prefill, one decode token per running request); else None (the
        run is settled; the caller runs the step with `ordinary_step`). Lets a discrete-event replica skip
        building a StepResult for most steps."""
        run = self._run
        if run is None:
            if not self.coalesce_decode:
                return None
            run = self._run = self._start_decode_run(now)
            if run is None:
                return None
        if run.events[0][0] != run.steps_done:  # no block event due: the common case, checked inline
            if (
                run.steps_done < run.max_steps
                and now < run.quiet_until
                and len(self._running) == len(run.seqs)
                and not self._loaded
                and not self._loading
                and len(self._waiting) == 0
            ):  # _next_step_is_quiet_decode's answer here (True); any other case asks it
                duration = run.step_duration()
                run.steps_done += 1
                self.quiet_steps += 1
                self.generation_tokens_total += len(run.seqs)
                return duration
            due = []
        else:
            due = run.pop_due()
        if not self._next_step_is_quiet_decode(run, now, due):
            run.push_back(due)
            self._settle_decode_run()
            return None
        for i, kind in due:
            seq = run.sync(i)
            if kind == ALLOCATE:
                ok = self._allocate(seq, 1)
                assert ok, "a quiet step cannot run out of blocks"
            else:
                self._cache_full_blocks(seq, seq.num_computed + 1)
            run.schedule_next(i, kind, seq)
        duration = run.step_duration()
        run.steps_done += 1
        self.quiet_steps += 1
        self.generation_tokens_total += len(run.seqs)
        return duration

    def _start_decode_run(self, now: float) -> DecodeRun | None:
        """A decode run over the running requests if every one of them is decoding, else None."""
        running = self._running
        if not running or len(running) > self.profile.max_num_batched_tokens:
            return None
        if any(len(seq.tokens) - seq.num_computed != 1 or seq.num_output == 0 for seq in running):
            return None
        expiry = self.retention.next_expiry()
        quiet_until = math.inf if expiry is None else expiry
        run = DecodeRun(list(running), self.block_size, quiet_until=quiet_until, profile=self.profile)
        return run if run.max_steps > 0 else None

    def _next_step_is_quiet_decode(self, run: DecodeRun, now: float, due: list[tuple[int, int]]) -> bool:
        """Whether the step starting at `now` certainly does nothing but decode one token for each running
        request, as an ordinary step would: the running set is the run's, no request finishes in it, no
        retention expires by `now`, no waiting request can be admitted (none waits, the sequence cap is
        reached, or the head is still blocked and none of the blocks this step caches could let it in), and
        the blocks this step needs are free (nothing is preempted, no retention is released for room). `due`:
        the run's block events in this step. Any new reason for a step to change the batch belongs here."""
        if run.steps_done >= run.max_steps or now >= run.quiet_until or len(self._running) != len(run.seqs):
            return False
        if self._loaded or (self._loading and min(self._loading.values()) <= now):
            return False  # a CPU->GPU load is done: its request joins the batch
        free = self.pool.num_free
        if len(due) > free and sum(1 for _, kind in due if kind == ALLOCATE) > free:
            return False  # (allocations counted only when the step's events outnumber the free blocks)
        if len(self._waiting) == 0 or len(self._running) >= self.profile.max_num_seqs:
            return True
        head = self._waiting.peek()
        if not self._still_blocked(head, self.profile.max_num_batched_tokens - len(run.seqs)):
            return False
        blocked = self._blocked
        assert blocked is not None
        hit_len = blocked[-1]  # the head's prefix hit when it last failed to fit
        if hit_len >= (len(head.tokens) - 1) // self.block_size or hit_len >= len(head.block_hashes):
            return True  # _still_blocked holds whatever gets cached
        awaited = head.block_hashes[hit_len]
        for i, kind in due:
            if kind != ALLOCATE:
                seq = run.sync(i)
                full = (seq.num_computed + 1) // self.block_size
                while len(seq.block_hashes) < full:
                    self._hash_next_block(seq)
                if awaited in seq.block_hashes[seq.num_cached_blocks : full]:
                    return False  # this step may cache the block the head waits for
        return True

    def _settle_decode_run(self) -> None:
        """End the decode run, if any: bring its requests up to date and keep the tokens they sampled, to be
        returned with the next step's outputs."""
        run, self._run = self._run, None
        if run is None:
            return
        for seq, tokens in run.settle():
            self._unreported.append(
                RequestOutput(
                    request_id=seq.request_id,
                    new_token_ids=tokens,
                    first_token=False,
                    arrival_time=seq.arrival,
                    first_scheduled_time=seq.first_scheduled,
                )
            )
