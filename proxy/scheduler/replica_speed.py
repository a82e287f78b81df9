"""How much slower each replica serves a call than the fastest one, learned from the calls' own times.

Contract (sans-IO; the core reports each served call, `observe`, and reads `slowness` into the replicas'
views): a sample is a call's seconds from dispatch to its last token over its completion tokens (calls with at
least `_MIN_TOKENS` completion tokens, a finite, positive time and no more than 1/`_MIN_S_PER_TOKEN` tokens a
second; the core sends only calls dispatched to and ended at a replica with no engine queue). A call's time
grows with how busy its replica is, so samples are compared only between calls that met the same load: each
goes into the bucket of the calls in flight on its replica when it was dispatched (1, 2-3, 4-7, ...: a bucket
per power of two). A call's time also holds its prefill, which a time per completion token counts the more
the fewer tokens it answers: samples are compared only between calls of one shape as well, the prompt tokens
it prefilled (not cached) over its completion tokens: below `_SHAPE_FROM` one shape (a prefill token costs
1/400 to 1/125 of a decode step on a GPU, so there the prefill is at most ~13% of the time, within the dead
band), then half-octaves to 128 times that, then one. Without it two alike replicas, one serving long
prompts with short answers, the other short prompts with long answers, measured 2.4-9.3x apart, and
workflows left the first for five minutes (the fifty-third session's soak). The last `_PER_BUCKET` are kept
per replica and bucket, none older than `_MAX_AGE_S`. Every
`_REFRESH` samples, for each bucket that at least two replicas filled with `_MIN_SAMPLES`, each such replica's
low quantile (`_QUANTILE`: its calls that met the least else) is divided by the lowest of that bucket; a
replica's ratio is the geometric mean of its buckets' ratios (1.0 with none shared). Its `slowness` is that
ratio where it is at least `above`, else 1.0: replicas of one kind differ by their workloads (context lengths,
prefills) within the dead band, and a homogeneous fleet is scheduled exactly as without this. Bounded: buckets
x `_PER_BUCKET` samples per replica; `forget` drops a replica (the core: one removed from the pool, or found
down). Calls of several models are compared as one fleet: a fleet of two models shows the larger as slower,
which only the moves among one model's replicas read (stealing.py).
"""

from __future__ import annotations

import math
from collections import deque

from proxy.scheduler.types import ReplicaId

_SHAPES = 16  # prefilled over completion tokens: below `_SHAPE_FROM`, half-octaves to 128 times that, above
_SHAPE_FROM = 16.0
_MIN_TOKENS = 16  # below this a call's time is mostly its prefill and queue, not its decode speed
# A million tokens a second for one sequence: no engine decodes that fast, so a faster sample comes from usage
# that miscounts (a backend reporting 10^12 completion tokens made every other replica look slow)
_MIN_S_PER_TOKEN = 1e-6
_PER_BUCKET = 16
_MIN_SAMPLES = 4
_QUANTILE = 0.1
_REFRESH = 8
# A sample older than this is dropped: a replica that became slower (or faster) without restarting is
# measured anew within it (its fastest old samples would otherwise set its low quantile for good)
_MAX_AGE_S = 300.0


class ReplicaSpeeds:
    def __init__(self, above: float) -> None:
        self.above = above
        self.samples: dict[ReplicaId, dict[int, deque[tuple[float, float]]]] = {}  # (when, s per token)
        self.slowness: dict[ReplicaId, float] = {}
        self._fresh = 0

    def observe(
        self,
        replica_id: ReplicaId,
        load: int,
        seconds: float,
        completion_tokens: int,
        now: float,
        prefilled: int = 0,
    ) -> bool:
        """A served call ended at `now`: the calls in flight on its replica at its dispatch (itself included),
        its time from dispatch to end, its completion tokens and the prompt tokens it prefilled (not
        cached). True when the replicas' slowness was refreshed."""
        if completion_tokens < _MIN_TOKENS or not 0.0 < seconds < math.inf:  # NaN too
            return False
        per_token = seconds / completion_tokens
        if per_token < _MIN_S_PER_TOKEN:
            return False
        buckets = self.samples.get(replica_id)
        if buckets is None:
            buckets = self.samples[replica_id] = {}
        bucket = max(1, load).bit_length() * _SHAPES + _shape(prefilled / completion_tokens)
        kept = buckets.get(bucket)
        if kept is None:
            kept = buckets[bucket] = deque(maxlen=_PER_BUCKET)
        kept.append((now, per_token))
        self._fresh += 1
        if self._fresh < _REFRESH:
            return False
        self._fresh = 0
        self._refresh(now)
        return True

    def forget(self, replica_id: ReplicaId) -> None:
        """Drop what was measured of a replica: it left the pool, or went down (it may come back restarted
        on other hardware: a replica restarted slower kept its fast samples, and its calls took 1.46x as
        long as through a fresh proxy, in a review)."""
        self.samples.pop(replica_id, None)
        self.slowness.pop(replica_id, None)

    def _refresh(self, now: float) -> None:
        lows: dict[int, dict[ReplicaId, float]] = {}  # bucket -> replica -> its low quantile there
        horizon = now - _MAX_AGE_S
        for replica_id, buckets in self.samples.items():
            for bucket, kept in list(buckets.items()):
                while kept and kept[0][0] < horizon:
                    kept.popleft()
                if not kept:
                    del buckets[bucket]
                elif len(kept) >= _MIN_SAMPLES:
                    ordered = sorted(value for _, value in kept)
                    lows.setdefault(bucket, {})[replica_id] = ordered[int(_QUANTILE * (len(ordered) - 1))]
        logs: dict[ReplicaId, list[float]] = {}
        for per_replica in lows.values():
            if len(per_replica) < 2:
                continue  # one replica's bucket says nothing of how it compares
            fastest = min(per_replica.values())
            for replica_id, value in per_replica.items():
                logs.setdefault(replica_id, []).append(math.log(value / fastest))
        self.slowness = {}
        for replica_id, ratios in logs.items():
            ratio = math.exp(sum(ratios) / len(ratios))
            if ratio >= self.above:
                self.slowness[replica_id] = ratio


def _shape(prefilled_per_token: float) -> int:
    """A call's shape bucket: 0 below `_SHAPE_FROM` prefilled tokens per completion token, then one per
    half-octave."""
    if prefilled_per_token < _SHAPE_FROM:
        return 0
    return min(_SHAPES - 1, 1 + int(2.0 * math.log2(prefilled_per_token / _SHAPE_FROM)))
