"""Bookkeeping for a run of coalesced pure-decode steps (the engine's `coalesce_decode` mode).

Contract: a `DecodeRun` is taken when every running request of an engine is decoding (one token a step). While
the run lasts, each step of the run is applied in O(1) plus the per-request block events that fall in it,
instead of touching every request: a request's own progress (computed tokens, sampled tokens) is brought up
to date lazily, by `sync`, when one of its block events is due (a block to allocate or a block to register
in the prefix cache), and for every request when the run is settled. Step `j` of the run (0-based) is the
step in which every request has computed `j` more tokens than at the run's start, so block events and step
durations come out exactly as step-by-step execution gives them. The engine decides per step whether the
step may run coalesced (`Engine._next_step_is_quiet_decode`); this module holds no policy.
"""

from __future__ import annotations

import heapq

from simulator.cost_model import Profile
from simulator.request_state import RequestState

ALLOCATE = 0  # a request needs a new block before its token of this step (it comes before caching)
CACHE = 1  # the token of this step fills a block, which joins the prefix cache


class DecodeRun:
    """The decoding requests (in the running order), how many steps of the run are done, and the block events
    still due, as a heap of (step, request index, kind): a step's events in the order the engine's step loop
    meets them (running order, allocation before caching)."""

    __slots__ = (
        "_block_size",
        "_decode_ms_per_kctx",
        "_fixed_ms",
        "context0",
        "events",
        "max_steps",
        "num_output0",
        "quiet_until",
        "seqs",
        "steps_done",
        "synced",
    )

    def __init__(
        self, seqs: list[RequestState], block_size: int, quiet_until: float, profile: Profile
    ) -> None:
        self.seqs = seqs
        self.steps_done = 0
        self.synced = [0] * len(seqs)  # steps applied to each request's own fields
        self.num_output0 = [seq.num_output for seq in seqs]
        # no request may finish inside the run: its last token comes from an ordinary step
        self.max_steps = min(len(seq.plan) - seq.num_output for seq in seqs) - 1
        self.context0 = sum(seq.num_computed + 1 for seq in seqs)  # decode context of step 0
        self.quiet_until = quiet_until  # steps must start before this (a retention expires then)
        self._block_size = block_size
        # cost_model.step_time_s of a step decoding len(seqs) tokens, split into the part fixed for the run
        # and the context term, evaluated in the same order (the same float result)
        p, n = profile, len(seqs)
        linear_ms = p.prefill_token_ms * max(0, n - p.linear_knee_tokens)
        self._fixed_ms = p.step_fixed_ms + linear_ms + p.prefill_attention_ms * 0.0
        self._decode_ms_per_kctx = p.decode_ms_per_kctx
        self.events: list[tuple[int, int, int]] = []
        for i, seq in enumerate(seqs):
            self.schedule_next(i, ALLOCATE, seq)
            self.schedule_next(i, CACHE, seq)

    @property
    def decode_context(self) -> int:
        """Summed context of the decoding requests in the current step (each grows by one a step)."""
        return self.context0 + self.steps_done * len(self.seqs)

    def step_duration(self) -> float:
        """Seconds the current step takes: `step_time_s(profile, num_tokens=len(seqs),
        decode_context_tokens=decode_context)`, bit for bit."""
        context = self.context0 + self.steps_done * len(self.seqs)
        return (self._fixed_ms + self._decode_ms_per_kctx * context / 1000.0) / 1000.0

    def pop_due(self) -> list[tuple[int, int]]:
        """(request index, kind) of the block events in the current step, in the order they happen; give
        them back with `push_back` if the step does not run coalesced after all."""
        events, step = self.events, self.steps_done
        due: list[tuple[int, int]] = []
        while events and events[0][0] == step:
            _, i, kind = heapq.heappop(events)
            due.append((i, kind))
        return due

    def push_back(self, due: list[tuple[int, int]]) -> None:
        for i, kind in due:
            heapq.heappush(self.events, (self.steps_done, i, kind))

    def schedule_next(self, i: int, kind: int, seq: RequestState) -> None:
        """Queue request `i`'s next event of `kind`, from its state at the start of the current step (after
        this step's event of that kind, if it had one, was applied)."""
        bs = self._block_size
        if kind == ALLOCATE:  # the step whose token no longer fits in the request's blocks
            ahead = len(seq.block_ids) * bs - seq.num_computed
        else:  # the step whose token fills the first block not yet cached
            ahead = (seq.num_cached_blocks + 1) * bs - 1 - seq.num_computed
        heapq.heappush(self.events, (self.steps_done + max(ahead, 0), i, kind))

    def sync(self, i: int) -> RequestState:
        """Bring request `i`'s own fields up to the start of the current step; returns it."""
        seq = self.seqs[i]
        delta = self.steps_done - self.synced[i]
        if delta:
            start = seq.num_output
            seq.tokens.extend(seq.plan[start : start + delta])
            seq.num_output = start + delta
            seq.num_computed += delta
            self.synced[i] = self.steps_done
        return seq

    def settle(self) -> list[tuple[RequestState, list[int]]]:
        """Bring every request up to date; each request and the tokens it sampled during the run."""
        out: list[tuple[RequestState, list[int]]] = []
        for i in range(len(self.seqs)):
            seq = self.sync(i)
            if seq.num_output > self.num_output0[i]:
                tokens = seq.plan[self.num_output0[i] : seq.num_output]
                out.append((seq, tokens if isinstance(tokens, list) else tokens.tolist()))
        return out
