"""proxy/kv_residency.py: what a replica's KV events say it caches of each session."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.kv_residency import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvResidency,
    decode_batch,
)
from simulator.kv_events import block_removed, block_stored, encode_message

BS = 16


def stored(hashes: list[int], parent: int | None, session: str | None = "s", **kw: object) -> BlockStored:
    return BlockStored(hashes, BS, parent, session_id=session, **kw)  # type: ignore[arg-type]


def removed(*hashes: int, **kw: object) -> BlockRemoved:
    return BlockRemoved(list(hashes), **kw)  # type: ignore[arg-type]


class Feed:
    """One replica's events, numbered as its publisher numbers them."""

    def __init__(self, kv: KvResidency, replica: str = "r1") -> None:
        self.kv, self.replica, self.seq = kv, replica, 0

    def __call__(self, *events: BlockStored | BlockRemoved | AllBlocksCleared) -> None:
        self.kv.apply(self.replica, self.seq, list(events))
        self.seq += 1


def test_a_chain_is_held_up_to_its_first_evicted_block() -> None:
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2, 3], None))
    feed(stored([4, 5], 3))  # chunked prefill / the next call: the chain goes on
    assert kv.resident_tokens("s") == {"r1": 5 * BS}
    feed(removed(99))  # another session's block
    assert kv.resident_tokens("s") == {"r1": 5 * BS}
    feed(removed(4))
    assert kv.resident_tokens("s") == {"r1": 3 * BS}
    feed(removed(2))
    assert kv.resident_tokens("s") == {"r1": 1 * BS}
    assert kv.resident_tokens("unknown") == {}


def test_a_conversation_going_on_from_an_earlier_block_replaces_the_rest() -> None:
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2, 3, 4], None))
    feed(stored([7, 8], 2))  # history rewritten after block 2 (compaction, an edited message)
    assert kv.resident_tokens("s") == {"r1": 4 * BS}
    feed(removed(3, 4))  # the abandoned branch's blocks: no longer the session's
    assert kv.resident_tokens("s") == {"r1": 4 * BS}
    feed(removed(7))
    assert kv.resident_tokens("s") == {"r1": 2 * BS}


def test_a_session_grown_from_a_shared_prompt_counts_it_while_it_is_cached() -> None:
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2, 3], None, session="a"))  # the shared system prompt, stored by the first agent
    feed(stored([10, 11], 3, session="b"))  # the second agent hit it and stored only its own blocks
    assert kv.resident_tokens("b") == {"r1": 5 * BS}
    feed(removed(3))  # the shared prefix's last block is gone: a prefix match stops before b's blocks
    assert kv.resident_tokens("b") == {"r1": 0}
    assert kv.resident_tokens("a") == {"r1": 2 * BS}


def test_blocks_stored_without_a_session_still_give_depth() -> None:
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2], None, session=None))
    feed(stored([5], 2, session="s"))
    assert kv.resident_tokens("s") == {"r1": 3 * BS}


def test_a_reuse_report_starts_the_session_on_known_blocks() -> None:
    """vLLM's `kv_cache_report_mode: full`: a hit is reported as BlockStored of blocks already cached."""
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2, 3], None, session="a"))
    feed(stored([1, 2], None, session="b"))
    assert kv.resident_tokens("b") == {"r1": 2 * BS}
    feed(stored([20], 2, session="b"))
    assert kv.resident_tokens("b") == {"r1": 3 * BS}


def test_lost_batches_a_restart_or_a_clear_start_the_view_afresh() -> None:
    kv = KvResidency()
    kv.apply("r1", 0, [stored([1, 2], None)])
    kv.apply("r1", 2, [])  # batch 1 was dropped: it may have held an eviction
    assert kv.resident_tokens("s") == {}
    assert kv.replicas["r1"][0].gaps == 1
    kv.apply("r1", 3, [stored([1, 2], None)])
    kv.apply("r1", 0, [])  # the replica restarted
    assert kv.resident_tokens("s") == {}
    kv.apply("r1", 1, [stored([1, 2], None)])
    kv.apply("r1", 2, [AllBlocksCleared()])
    assert kv.resident_tokens("s") == {}


def test_other_tiers_and_groups_are_not_the_gpu_prefix_cache() -> None:
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2], None, medium="CPU"), stored([3], None, group_idx=1))
    assert kv.resident_tokens("s") == {}
    feed(stored([1, 2], None, medium="GPU"))
    feed(removed(1, medium="CPU"), removed(1, group_idx=1))
    assert kv.resident_tokens("s") == {"r1": 2 * BS}


def test_memory_is_bounded() -> None:
    kv = KvResidency(max_sessions=2, max_blocks=5)
    feed = Feed(kv)
    for i, session in enumerate(("a", "b", "c")):
        feed(stored([i], None, session=session))
    assert set(kv.replicas["r1"][0].chains) == {"b", "c"}  # the least recently extended went first
    assert kv.where == {"b": {("r1", 0)}, "c": {("r1", 0)}}  # nor does the map of who holds what keep it
    feed(stored([10, 11, 12], None, session="d"))  # 6 blocks > 5: the view starts afresh
    assert kv.replicas["r1"][0].overflows == 1
    assert kv.resident_tokens("d") == {}
    assert kv.where == {}


class _MostHeld(dict[int, object]):
    """A view's block map that remembers the most blocks it ever held."""

    most = 0

    def __setitem__(self, key: int, value: object) -> None:
        super().__setitem__(key, value)
        self.most = max(self.most, len(self))


def test_a_run_of_more_blocks_than_max_blocks_starts_the_view_afresh_before_indexing_it() -> None:
    """One event naming more blocks than the view may hold (a frame of millions) is an overflow at once:
    the index never holds more than max_blocks, and nothing of it is counted."""
    kv = KvResidency(max_blocks=100)
    feed = Feed(kv)
    feed(stored([1, 2], None, session="a"))
    view = kv.view("r1")
    view.owner = held = _MostHeld(view.owner)  # type: ignore[assignment]
    feed(stored(list(range(1_000, 2_000)), 2, session="b"))
    assert view.overflows == 1 and held.most <= 100
    assert kv.resident_tokens("a") == {} and kv.resident_tokens("b") == {}
    feed(stored([3], None, session="c"))  # and the view goes on from there
    assert kv.resident_tokens("c") == {"r1": BS}


def test_a_block_named_twice_in_a_chain_is_kept_and_counted_once() -> None:
    """A block's hash covers its whole prefix, so no chain holds one twice: a run repeating a block (or one
    the chain holds already) is cut before the repeat, and the memory kept is the blocks', not the run's."""
    kv = KvResidency(max_sessions=10, max_blocks=1_000)
    feed = Feed(kv)
    parent = None
    for i in range(12):
        feed(stored([100 + i] * 500, parent))
        parent = 100 + i
    view = kv.replicas["r1"][0]
    assert kv.resident_tokens("s") == {"r1": 12 * BS}
    assert len(view.chains["s"].hashes) == 12 and view.overflows == 0
    feed(stored([1, 2, 3], None, session="t"))
    feed(stored([4, 2, 5], 3, session="t"))  # 2 is the chain's second block already
    assert kv.resident_tokens("t") == {"r1": 4 * BS}
    feed(removed(2))
    assert kv.resident_tokens("t") == {"r1": 1 * BS}
    feed(stored([7, 7, 8], None, session=None))  # without a session too: 8's depth is not known
    feed(stored([9], 8, session="u"))
    assert kv.resident_tokens("u") == {"r1": 1 * BS}
    # a chain whose earlier blocks were evicted is bounded too: past max_blocks the view starts afresh
    kv = KvResidency(max_blocks=4)
    feed = Feed(kv)
    feed(stored([1, 2, 3], None), removed(1, 2))
    feed(stored([4, 5], 3))  # 3 blocks cached, 5 in the chain
    assert kv.replicas["r1"][0].overflows == 1 and kv.resident_tokens("s") == {}


def test_replicas_are_apart_and_forgotten() -> None:
    kv = KvResidency()
    Feed(kv, "r1")(stored([1, 2], None))
    Feed(kv, "r2")(stored([1], None))
    assert kv.resident_tokens("s") == {"r1": 2 * BS, "r2": BS}
    kv.forget_replica("r1")
    assert kv.resident_tokens("s") == {"r2": BS}
    assert kv.where == {"s": {("r2", 0)}}


def test_vllm_batches_decode_with_what_is_not_read() -> None:
    """The simulator's publisher writes vLLM's wire format (token ids, extra keys, omitted defaults)."""
    events = [block_stored([1, 2], None, [7] * 32, BS, "s"), block_removed([2])]
    _, seq, payload = encode_message(b"", 5, 1.0, events)
    decoded, skipped = decode_batch(payload)
    assert skipped == 0
    assert int.from_bytes(seq, "big") == 5
    kv = KvResidency()
    kv.apply("r1", 5, decoded)
    assert kv.resident_tokens("s") == {"r1": BS}


def test_an_unknown_event_is_skipped_and_garbage_refused() -> None:
    enc = msgspec.msgpack.Encoder()
    payload = enc.encode([1.0, [{"type": "BlockTeleported", "x": 1}, {"type": "AllBlocksCleared"}], 0])
    events, skipped = decode_batch(payload)
    assert (len(events), skipped) == (1, 1)
    for bad in (b"\xc1", enc.encode({"ts": 1}), enc.encode([1.0, "events"])):
        with pytest.raises(msgspec.DecodeError):
            decode_batch(bad)


def test_figures_for_the_core_are_in_the_units_of_its_prompt_estimate() -> None:
    """The core's prompt_tokens are the proxy's estimate (~4 bytes a token); the replica counts its own."""
    kv = KvResidency()
    Feed(kv)(stored([1, 2, 3, 4], None))
    assert kv.resident_estimated("s") == {"r1": 4 * BS}  # nothing learned yet: taken as equal
    kv.learn_scale(1_500, 1_000)  # the proxy estimated 1.5 tokens for each the replica counted
    assert kv.resident_estimated("s") == {"r1": 6 * BS}
    for _ in range(200):
        kv.learn_scale(500, 1_000)
    assert kv.resident_estimated("s") == {"r1": pytest.approx(2 * BS, abs=1)}
    assert kv.resident_tokens("s") == {"r1": 4 * BS}  # what /saga/v1/sessions shows: the replica's tokens


def test_a_malformed_event_is_skipped_and_the_rest_of_its_batch_kept() -> None:
    """Attacked: a block size out of range, a session id no proxy sends; and nesting past the decoder's depth,
    which makes the whole frame one the subscriber counts as bad (a DecodeError, not a RecursionError)."""
    enc = msgspec.msgpack.Encoder()
    good = {"type": "BlockStored", "block_hashes": [1], "block_size": BS, "session_id": "s"}
    bad = [
        {**good, "block_size": 0},
        {**good, "block_size": -16},
        {**good, "block_size": 1 << 40},
        {**good, "session_id": "x" * 5_000},
        {**good, "block_hashes": [1.5]},
    ]
    payload = enc.encode([1.0, [*bad, good], 0])
    events, skipped = decode_batch(payload)
    assert (len(events), skipped) == (1, len(bad))
    deep = b"\x91" * 100_000 + b"\xc0"
    nested = b"\x93" + enc.encode(1.0) + b"\x92" + deep + enc.encode(good) + b"\x00"
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_batch(nested)
    kv = KvResidency()
    kv.apply("r1", 0, events)
    assert kv.resident_tokens("s") == {"r1": BS}


def test_the_units_learned_are_held_to_a_sane_range() -> None:
    kv = KvResidency()
    Feed(kv)(stored([1, 2], None))
    kv.learn_scale(0, 1_000)  # nothing estimated (an empty prompt): nothing learned
    kv.learn_scale(1_000, 0)
    assert kv.scale is None
    kv.learn_scale(10**12, 1)  # a replica's nonsense count: held to 16
    assert kv.scale == 16.0


def test_each_data_parallel_rank_has_its_own_view_and_the_replica_shows_its_best() -> None:
    """Two ranks of one vLLM server: their own sequence numbers, their own caches (the same block hashes on
    both mean nothing shared), and the replica's figure is the rank holding most of the session."""
    kv = KvResidency()
    kv.apply("r1", 0, [stored([1, 2], None)], rank=0)
    kv.apply("r1", 0, [stored([1, 2, 3, 4], None)], rank=1)
    assert kv.resident_tokens("s") == {"r1": 4 * BS}
    kv.apply("r1", 1, [removed(1)], rank=0)  # rank 0 evicts: rank 1 still holds its own copy
    assert kv.resident_tokens("s") == {"r1": 4 * BS}
    kv.apply("r1", 5, [], rank=1)  # rank 1 lost batches: only its view starts afresh
    assert kv.resident_tokens("s") == {"r1": 0}
    assert (kv.replicas["r1"][0].gaps, kv.replicas["r1"][1].gaps) == (0, 1)
    kv.apply("r1", 2, [stored([7, 8, 9], None)], rank=0)  # rank 0's numbering goes on: no gap
    assert kv.resident_tokens("s") == {"r1": 3 * BS}
    report = kv.report("r1")
    assert report is not None and list(report["ranks"]) == ["0", "1"]
    assert (report["batches"], report["gaps"], report["cached_blocks"]) == (5, 1, 4)
    kv.forget_view("r1", 0)
    assert kv.resident_tokens("s") == {} and kv.where == {}
    kv.forget_view("r1", 1)
    assert kv.report("r1") is None and kv.replicas == {}


def test_the_rank_a_call_is_sent_to_is_the_one_holding_most_of_its_session() -> None:
    kv = KvResidency()
    kv.apply("r1", 0, [stored([1], None)], rank=0)
    assert kv.rank_for("s", "r1") is None  # one rank: nothing to choose
    kv.apply("r1", 0, [stored([1, 2, 3], None)], rank=1)
    kv.apply("r1", 0, [stored([1, 2], None)], rank=2)
    assert kv.rank_for("s", "r1") == 1
    assert kv.rank_for("s", "r2") is None and kv.rank_for("other", "r1") is None
    kv.apply("r1", 1, [removed(2)], rank=1)  # rank 1 keeps 1 block, rank 2 holds 2
    assert kv.rank_for("s", "r1") == 2
    kv.apply("r1", 1, [removed(2)], rank=2)  # 1 block on every rank: the lowest
    assert kv.rank_for("s", "r1") == 0
    for rank in range(3):
        kv.apply("r1", 9, [], rank=rank)  # every view starts afresh: no rank holds any of it
    assert kv.rank_for("s", "r1") is None


def test_the_rank_follows_the_longer_chain_of_a_calls_two_session_names() -> None:
    """A call's context may be filed under the body's session and under the one the proxy sends: the rank is
    the one holding most of either, as the call's residency figures count (proxy/calls.py `_kv_resident`)."""
    kv = KvResidency()
    kv.apply("r1", 0, [stored([1, 2, 3, 4], None, session="tenant:sent")], rank=0)
    kv.apply("r1", 0, [stored([5], None, session="named")], rank=1)
    assert kv.rank_for("named", "r1") == 1
    assert kv.rank_for("named", "r1", also="tenant:sent") == 0
    assert kv.rank_for("named", "r1", also="named") == 1
    assert kv.rank_for("nobody", "r1", also="tenant:sent") == 0
    assert kv.rank_for("nobody", "r1", also="nor-this") is None


def test_two_sessions_copies_of_one_shared_block_never_leave_the_first_counting_an_evicted_one() -> None:
    """Two sessions computing one system prompt at once: vLLM caches a copy each (the same hashes, no parent)
    and evicts each on its own. The later store took the blocks, so the first session never heard of its
    copy's eviction and went on counting 32 tokens the replica no longer held. Now the later run grows from
    the cached blocks: both count them until a copy's eviction, then neither (under-counting)."""
    kv = KvResidency()
    feed = Feed(kv)
    feed(stored([1, 2], None, session="a"))
    feed(stored([1, 2, 3], None, session="b"))  # the same two blocks, and its own third
    feed(stored([4], 2, session="a"))  # a goes on from its own blocks
    assert kv.resident_tokens("a") == {"r1": 3 * BS} and kv.resident_tokens("b") == {"r1": 3 * BS}
    feed(removed(1, 2))  # one copy evicted
    assert kv.resident_tokens("a") == {"r1": 0} and kv.resident_tokens("b") == {"r1": 0}
    feed(removed(1, 2, 3, 4))  # the other, and each session's own block
    assert kv.resident_tokens("a") == {"r1": 0} and kv.resident_tokens("b") == {"r1": 0}
    assert kv.report("r1")["cached_blocks"] == 0  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_sessions_sharing_a_prefix_never_count_more_than_the_replica_holds(data: st.DataObject) -> None:
    """Sessions storing one shared prefix, each its own copy or reusing a cached one, in chunks, in any
    order, with copies evicted in any order vLLM's tail-first freeing allows: each session's count is never
    more than the blocks of its context the replica holds, leading ones up to the first missing (the
    contract: never over-count)."""
    shared = [1, 2, 3]
    own = {"a": [10, 11], "b": [20], "c": [30, 31]}
    copies: dict[int, int] = {}
    kv = KvResidency()
    feed = Feed(kv)
    runs = {name: [*shared, *blocks] for name, blocks in own.items()}
    # the blocks cached on top of each: vLLM frees a request's blocks tail first, so a block's last copy is
    # evicted after those (an order the index relies on: it cannot see ancestors it was never told of)
    after: dict[int, set[int]] = {}
    for run in runs.values():
        for k, h in enumerate(run):
            after.setdefault(h, set()).update(run[k + 1 :])
    done = dict.fromkeys(own, 0)  # blocks of each session stored so far
    for _ in range(data.draw(st.integers(5, 25))):
        choices = list(own)
        cached = [h for h, n in copies.items() if n > 0]
        if choices and (not cached or data.draw(st.booleans())):
            # a call of the session: its prompt hits the leading blocks still cached (vLLM holds them while
            # it runs), and it stores the next ones, a new copy each, on top of the last hit (its parent)
            name = data.draw(st.sampled_from(choices))
            hit = 0
            while hit < done[name] and copies.get(runs[name][hit], 0):
                hit += 1
            if hit and data.draw(st.booleans()):
                feed(stored(runs[name][:hit], None, session=name))  # the hit, as a reuse report names it
            if hit == len(runs[name]):
                continue  # all of it cached: nothing to store
            end = data.draw(st.integers(hit + 1, len(runs[name])))
            run = runs[name][hit:end]
            for h in run:
                copies[h] = copies.get(h, 0) + 1
            feed(stored(run, runs[name][hit - 1] if hit else None, session=name))
            done[name] = max(done[name], end)
        elif evictable := [
            h for h in sorted(cached) if copies[h] > 1 or not any(copies.get(d) for d in after[h])
        ]:
            h = data.draw(st.sampled_from(evictable))
            copies[h] -= 1
            feed(removed(h))
        for name in own:
            held = 0
            for h in runs[name][: done[name]]:
                if not copies.get(h, 0):
                    break
                held += 1
            assert kv.resident_tokens(name).get("r1", 0) <= held * BS, (name, copies)


def test_a_replica_that_went_down_starts_its_views_afresh() -> None:
    """A replica restarted with an empty cache publishes nothing until it is busy again: what its views held
    before stayed counted (48 tokens of a session on a replica that had none)."""
    kv = KvResidency()
    Feed(kv)(stored([1, 2, 3], None, session="a"))
    Feed(kv, "r2")(stored([7], None, session="a"))
    kv.replica_down("r1")
    assert kv.resident_tokens("a") == {"r2": BS}
    assert kv.report("r1")["cached_blocks"] == 0  # type: ignore[index]
    kv.replica_down("r9")  # not subscribed: nothing to do
