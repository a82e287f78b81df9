"""The `saga` policy's configuration Structs: admission by KV working set (`AdmissionSpec`, see
admission.py) and work stealing (`StealingSpec`, see stealing.py).

They live apart from admission.py and stealing.py, which setup.py compiles with mypyc: a Struct's class
keywords (`kw_only`, `forbid_unknown_fields`) do not survive mypyc, so Struct classes stay in pure-Python
modules.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from proxy.scheduler.plugin_spec import ConfigError


class AdmissionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    overcommit: float = 1.5
    horizon_calls: float = 1.0
    end_below_p_return: float = 0.2
    hold_quantile: float = 0.99
    max_hold_s: float = 120.0
    quiet_gap_s: float = 60.0  # a predicted median return gap this long is a person's think time: lapse now
    max_waiting: int = 10_000
    # A new workflow that waited this long for KV is admitted where placement sends it, room or not (None:
    # it waits for room however long that takes). Clients give up on a call after their own timeout (the
    # OpenAI SDK's default is 600 s); a fleet that lost half its replicas must not hold first calls past it.
    max_wait_s: float | None = 300.0
    max_agent_types: int = 256
    # Which waiting workflow a tenant gets admitted first: "arrival" (first come), or "least-work" (the
    # earliest arrival + expected service of its agent type, learned by the predictor: short work overtakes
    # long work by at most the difference; types not learned yet by arrival).
    order: Literal["arrival", "least-work"] = "arrival"
    # Also admit where the replica's measured KV (its last `kv_usage`) has room for the footprint and no
    # call waits in its engine, whatever the reservations say: work-conserving at light load, when the live
    # workflows' reservations are mostly tool time.
    measured_room: bool = False
    # Cost-aware hold between calls (None: off, every workflow holds as above). After a call, while work
    # waits for KV (new workflows here, or calls in the replica's engine; else a hold delays no one), a
    # workflow whose median predicted gap is at most `price_max_gap_s` keeps its reservation, and its
    # retention, only while the re-prefill that saves, p_return x recompute(context), is worth at least
    # `hold_price` x (its footprint / the replica's KV) x that gap: the share of the replica's KV it keeps
    # idle while away, in replica-seconds. Otherwise both go at once and the call's KV is left to the
    # replica's LRU cache. recompute(n) = n x s x (1 + n / (2 x `attention_tokens`)), s per token learned
    # from the calls' first tokens (proxy/scheduler/prefill_rate.py; every workflow holds until it is
    # learned). Longer gaps keep the hold: released there, returning workflows overcommitted busy
    # replicas (docs/results/grid-saga/floor).
    hold_price: float | None = None
    price_max_gap_s: float = 2.0
    attention_tokens: float = 20_000.0

    def validate(self) -> None:
        checks = {
            "overcommit": self.overcommit > 0,
            # finite: a footprint is a whole number of tokens (infinity passed the start, then failed calls)
            "horizon_calls": 0 <= self.horizon_calls < math.inf,
            "end_below_p_return": 0 <= self.end_below_p_return <= 1,
            "hold_quantile": 0 < self.hold_quantile < 1,
            "max_hold_s": self.max_hold_s > 0,
            "quiet_gap_s": self.quiet_gap_s > 0,
            "max_waiting": self.max_waiting >= 1,
            # finite: an infinite bound would keep every waiting call's entry in the arrivals queue forever
            "max_wait_s": self.max_wait_s is None or 0 < self.max_wait_s < math.inf,
            "max_agent_types": self.max_agent_types >= 1,
            "hold_price": self.hold_price is None or self.hold_price > 0,
            "price_max_gap_s": self.price_max_gap_s > 0,
            "attention_tokens": self.attention_tokens > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"admission.{name} is out of range: {getattr(self, name)!r}")


class StealingSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # A call's time on a busy replica, queue included. Waits behind a backlog are long-tailed (a waiting call
    # needs a running one to end and free its KV), so 30 s, not the typical call's few seconds: in the DES
    # sweeps 30 moved more workflows off congested replicas and never lost (docs/results/saga.md).
    call_s: float = 30.0
    prefill_s_per_token: float = 2.2e-5
    attention_tokens: float = 40_000.0
    # Rebalancing: a workflow whose replica's live reservations exceed this fraction of its KV moves to the
    # replica with the most free KV that fits it under the same fraction (None: off)
    rebalance_above: float | None = None
    # Replicas of different speed (replica_speed.py): one measured at least this many times slower than
    # the fastest, calls for calls alike, counts its load that many times over, and a workflow bound there
    # moves to a faster one less loaded by that count (None: speed is not measured)
    slower_above: float | None = 1.5
    # Spill: a call that comes while another call of its workflow runs (parallel tool calls, subagents naming
    # their parent's session, an app sending one `prompt_cache_key` for all its calls) goes to another
    # replica, the workflow staying bound, when its replica has no KV room left for it or a backlog that
    # makes it wait longer than a recompute elsewhere (stealing.py `spill_target`)
    spill: bool = True

    def validate(self) -> None:
        for name in ("call_s", "prefill_s_per_token", "attention_tokens"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"stealing.{name} must be > 0, got {getattr(self, name)!r}")
        if self.rebalance_above is not None and not self.rebalance_above > 0:
            raise ConfigError(f"stealing.rebalance_above must be > 0, got {self.rebalance_above!r}")
        # finite and past 1: at 1 or below every replica of one kind would count as slower than another
        if self.slower_above is not None and not 1.0 < self.slower_above < math.inf:
            raise ConfigError(f"stealing.slower_above must be > 1 and finite, got {self.slower_above!r}")
