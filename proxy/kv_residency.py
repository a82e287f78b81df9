"""Which part of each session's context every replica still caches, from the replicas' own KV-cache events.

vLLM (`--kv-events-config`; docs/config.md, `kv_events`) publishes a `BlockStored` event for the full blocks a
request adds to its prefix cache, naming the request's `session_id` (which the proxy sends as `X-Session-ID`),
and a `BlockRemoved` event for every block it evicts. From them this index keeps, per replica and session, the
chain of blocks the session's calls stored there, and answers exactly how many tokens of the session's context
the replica would find cached: the prefix-cache estimate (proxy/scheduler/prefix_index.py) only knows what the
proxy sent, not what the replica has evicted since.

Contract (sans-IO; proxy/kv_events.py feeds it from the ZMQ sockets):
- One view per (replica, data-parallel rank): a vLLM server running data parallel ranks has one engine,
  one prefix cache and one publisher (its own sequence numbers) per rank (proxy/kv_event_sources.py).
- `apply(replica, seq, batch, rank=0)` takes one published batch. A sequence number that skips (ZMQ PUB
  drops under load) or goes back (the rank restarted) makes that rank's view start afresh: an event lost
  may have been an eviction, and a view that only ever under-counts is safe; the gap is counted.
- A session's chain on a replica: the blocks its calls stored there, in order. A stored run whose parent
  is the chain's block k replaces the chain after k (the conversation went on from there); a run with no
  parent, or whose parent is not in the chain, starts a new chain on top of that parent's (its *base*: a
  shared system prompt another session stored, counted as that block's depth). A run of blocks already
  known (vLLM's `kv_cache_report_mode: full` reuse report) becomes the base of a new chain.
- `resident_tokens(session)`: per replica where the session has a chain, block_size x (the base's blocks,
  if its last block is still cached, + the chain's leading blocks up to the first evicted one); 0 when the
  base was evicted (a prefix match stops there). Replicas where the session stored nothing are absent. A
  replica's figure is its best rank's (a call that lands on that rank finds that much cached). On the
  request path it looks only at the views holding a chain of the session (one shared map says which).
- `rank_for(session, replica, also=None)`: that best rank, for vLLM's `X-data-parallel-rank` (proxy/call.py),
  when the replica has more than one rank and one of them holds some of the session (ties: the lowest rank);
  with `also`, the best over both sessions' chains (a call's context may be filed under two names).
- Only the GPU tier (`medium` None or "GPU") and the first KV-cache group count.
- Memory: one entry per cached block per view (bounded by the ranks' KV: ~100 bytes a block) and at most
  `max_sessions` chains per view, the least recently extended dropped first; past `max_blocks` (cached
  blocks, or blocks in one chain) a view starts afresh (counted), so a rank that never reports evictions
  cannot grow it; an event storing more than `max_blocks` blocks does so before indexing any. A chain
  holds a block once: a stored run is cut before a block its chain holds already (not a chain vLLM
  stores, and counting it twice would over-count). A run whose leading blocks are cached in a chain
  already (two sessions computing one prefix at once: vLLM keeps, and evicts, each copy) grows from the
  last of them, which then counts for both until either copy's eviction (the index follows one owner a
  block); a block of a run found in another chain past its start is the later chain's alone.
- `replica_down(replica)`: a replica that went down may come back restarted, its cache empty, and publish
  nothing until it is busy again: its views start afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

import msgspec

# vLLM sends 64-bit ints by default, digests when VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0
BlockKey = int | bytes
# a view: (replica URL, data-parallel rank)
ViewKey = tuple[str, int]


class BlockStored(msgspec.Struct, tag="BlockStored", gc=False):
    """The fields read of vLLM's event (token ids and the rest are skipped while decoding)."""

    block_hashes: list[BlockKey]
    # tokens a block: vLLM's are 16 to a few thousand; out of range, the event is skipped as malformed
    block_size: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)]
    parent_block_hash: BlockKey | None = None
    medium: str | None = None
    group_idx: int | None = None
    # the proxy's session ids are under 400 characters (proxy/identity.py, with a tenant's prefix)
    session_id: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class BlockRemoved(msgspec.Struct, tag="BlockRemoved", gc=False):
    block_hashes: list[BlockKey]
    medium: str | None = None
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, tag="AllBlocksCleared", gc=False):
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True, gc=False):
    """vLLM's `KVEventBatch`: `[ts, events, data_parallel_rank]`; events are decoded one by one (below)."""

    ts: float
    events: list[msgspec.Raw]
    data_parallel_rank: int | None = None


_batch_decoder = msgspec.msgpack.Decoder(EventBatch)
_event_decoder = msgspec.msgpack.Decoder(KvEvent)


def decode_batch(payload: bytes) -> tuple[list[KvEvent], int]:
    """The events of one payload frame, and how many events were skipped (a type this proxy does not know,
    or a malformed one); raises msgspec.DecodeError when the frame is not a batch at all (nested past the
    decoder's depth included)."""
    try:
        batch = _batch_decoder.decode(payload)
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply to be a KV-event batch") from None
    events: list[KvEvent] = []
    skipped = 0
    for raw in batch.events:
        try:
            events.append(_event_decoder.decode(raw))
        except msgspec.DecodeError:
            skipped += 1
    return events, skipped


_NOWHERE = (None, 0)  # `owner`'s answer for a block not cached
_MAX_BASES = 64  # chains grown from chains that `_depth` follows down to their first block


def _counts(medium: str | None, group_idx: int | None) -> bool:
    return (medium is None or medium == "GPU") and not group_idx


class _Chain:
    """One session's blocks on one replica."""

    __slots__ = ("base_blocks", "base_hash", "block_size", "hashes", "held")

    def __init__(self, base_hash: BlockKey | None, base_blocks: int, block_size: int) -> None:
        self.base_hash = base_hash  # the block the chain grew from (not its own); None: from the start
        self.base_blocks = base_blocks  # that block's depth: blocks up to and including it
        self.block_size = block_size
        self.hashes: list[BlockKey] = []
        self.held = 0  # leading blocks of `hashes` still cached


class ReplicaBlocks:
    """One (replica, rank)'s view; see the module contract."""

    def __init__(
        self,
        max_sessions: int,
        max_blocks: int,
        name: ViewKey = ("", 0),
        where: dict[str, set[ViewKey]] | None = None,
    ) -> None:
        self.name = name
        # session -> the views holding a chain of it, shared by every view (KvResidency.where)
        self.where: dict[str, set[ViewKey]] = {} if where is None else where
        self.max_sessions = max_sessions
        self.max_blocks = max_blocks
        self.owner: dict[BlockKey, tuple[_Chain, int]] = {}  # cached block -> the chain and index it is at
        self.chains: OrderedDict[str, _Chain] = OrderedDict()  # session -> its chain, least recent first
        self.endpoint = ""  # where its events come from (set by the subscriber)
        self.source = ""  # how the subscriber found that endpoint (proxy/kv_events.py)
        self.last_seq: int | None = None
        self.batches = 0
        self.gaps = 0  # batches lost (or a restart): the view started afresh
        self.overflows = 0  # times past max_blocks
        self.skipped = 0  # events not understood

    def reset(self) -> None:
        for session in self.chains:
            self._unlist(session)
        self.owner.clear()
        self.chains.clear()

    def _unlist(self, session: str) -> None:
        views = self.where.get(session)
        if views is not None:
            views.discard(self.name)
            if not views:
                del self.where[session]

    def report(self) -> dict[str, Any]:
        """One rank's figures for `GET /saga/v1/replicas`."""
        return {
            "endpoint": self.endpoint,
            "batches": self.batches,
            "gaps": self.gaps,
            "overflows": self.overflows,
            "skipped_events": self.skipped,
            "cached_blocks": len(self.owner),
            "sessions": len(self.chains),
        }

    def _depth(self, block: BlockKey) -> int | None:
        """Blocks up to and including `block` along the chain it is cached in, if every block before it there
        is cached too (its chain's held prefix, and the base that chain grew from, and so on); None if not
        (a prefix match stops before it) or unknown."""
        entry = self.owner.get(block)
        if entry is None:
            return None
        chain, i = entry
        depth = chain.base_blocks + i + 1
        for _ in range(_MAX_BASES):
            if i >= chain.held or chain.hashes[i] != block:
                return None  # evicted before it, or the chain moved on past it
            if chain.base_hash is None:
                return depth
            block = chain.base_hash
            entry = self.owner.get(block)
            if entry is None or entry[0].base_blocks + entry[1] + 1 != chain.base_blocks:
                return None  # the base is gone, or cached at another depth
            chain, i = entry
        return None  # bases on bases past the bound: not followed (under-counting)

    def stored(self, event: BlockStored) -> None:
        hashes = event.block_hashes
        if not hashes or not _counts(event.medium, event.group_idx):
            return
        if len(hashes) > self.max_blocks:  # past the bound whatever it adds: not indexed first (a huge frame)
            self.overflows += 1
            self.reset()
            return
        owner = self.owner
        session = event.session_id
        chain = self.chains.get(session) if session else None
        if all(h in owner for h in hashes):  # a reuse report: the session's context starts on these blocks
            if session:
                depth = self._depth(hashes[-1])
                self._start(session, hashes[-1] if depth else None, depth or 0, event.block_size)
            return
        parent = event.parent_block_hash
        lead = 0
        if self._depth(hashes[0]) is not None:  # (the whole prefix before it held: checked once)
            held_in, first = owner[hashes[0]]
            lead = 1
            while (
                lead < len(hashes)
                and first + lead < held_in.held
                and held_in.hashes[first + lead] == hashes[lead]
            ):
                lead += 1  # the same chain's next block, held: one step a block, not a walk of its bases
        if lead:
            # Its leading blocks are cached in a chain already: another copy of a shared prefix (two sessions
            # computed it at once; vLLM caches, and evicts, each copy). The run grows from the last of them,
            # which counts for both sessions until a copy's eviction names them (then for neither: an
            # under-count while the other copy lasts)
            parent, hashes = hashes[lead - 1], hashes[lead:]
        at = owner.get(parent) if parent is not None else None
        if chain is not None and at is not None and at[0] is chain and at[1] < len(chain.hashes):
            keep = at[1] + 1  # the conversation went on from the chain's block `keep - 1`
            del chain.hashes[keep:]
            chain.held = min(chain.held, keep)
        elif session:
            base = (self._depth(parent) or 0) if parent is not None else 0
            chain = self._start(session, parent if base else None, base, event.block_size)
        else:  # no session: kept only so that sessions growing from these blocks know their depth
            base = (self._depth(parent) or 0) if parent is not None else 0
            chain = _Chain(parent if base else None, base, event.block_size)
        listed = chain.hashes
        all_held = chain.held == len(listed)
        for h in hashes:
            other, place = owner.get(h, _NOWHERE)
            if other is chain and place < len(listed) and listed[place] == h:
                break  # a block the chain holds already: not a chain (a hash covers its prefix); cut here
            if other is not None and place < other.held and other.hashes[place] == h:
                # Another chain's copy of the same block (two sessions computed a shared prefix at once: vLLM
                # caches and evicts each copy on its own). The index follows one owner a block, so the other
                # chain would never hear of its copy's eviction: it gives the block up now (under-counting)
                other.held = place
            owner[h] = (chain, len(listed))
            listed.append(h)
        if all_held:
            chain.held = len(listed)
        if session:
            self.chains.move_to_end(session)
        if len(owner) > self.max_blocks or len(listed) > self.max_blocks:
            self.overflows += 1
            self.reset()

    def _start(self, session: str, base_hash: BlockKey | None, base_blocks: int, block_size: int) -> _Chain:
        if session not in self.chains:
            self.where.setdefault(session, set()).add(self.name)
        chain = self.chains[session] = _Chain(base_hash, base_blocks, block_size)
        self.chains.move_to_end(session)
        while len(self.chains) > self.max_sessions:
            self._unlist(self.chains.popitem(last=False)[0])
        return chain

    def removed(self, event: BlockRemoved) -> None:
        if not _counts(event.medium, event.group_idx):
            return
        pop = self.owner.pop
        for h in event.block_hashes:
            entry = pop(h, None)
            if entry is not None:
                chain, i = entry
                if i < chain.held and chain.hashes[i] == h:  # (not a branch the chain has left)
                    chain.held = i

    def resident_tokens(self, session: str) -> int | None:
        chain = self.chains.get(session)
        if chain is None:
            return None
        if chain.base_hash is not None and self._depth(chain.base_hash) != chain.base_blocks:
            return 0  # the block the chain grew from, or one before it, is gone: a prefix match stops there
        return (chain.base_blocks + chain.held) * chain.block_size


class KvResidency:
    """Every subscribed (replica, rank)'s view (module contract)."""

    def __init__(self, max_sessions: int = 100_000, max_blocks: int = 4_000_000) -> None:
        self.max_sessions = max_sessions
        self.max_blocks = max_blocks
        self.replicas: dict[str, dict[int, ReplicaBlocks]] = {}  # replica -> rank -> its view
        self.where: dict[str, set[ViewKey]] = {}  # session -> the views with a chain of it: calls look there
        self.unsubscribed: dict[str, int] = {}  # replica -> its ranks the subscriber could not open
        # The core's token counts are the proxy's estimate from the prompt's bytes (~4 a token), the replicas'
        # are their tokenizer's: estimated tokens per real one, learned from the calls' reported usage (None:
        # nothing learned yet, taken as 1)
        self.scale: float | None = None

    def view(self, replica: str, rank: int = 0) -> ReplicaBlocks:
        ranks = self.replicas.setdefault(replica, {})
        view = ranks.get(rank)
        if view is None:
            view = ReplicaBlocks(self.max_sessions, self.max_blocks, (replica, rank), self.where)
            ranks[rank] = view
        return view

    def forget_view(self, replica: str, rank: int) -> None:
        ranks = self.replicas.get(replica)
        view = None if ranks is None else ranks.pop(rank, None)
        if view is not None:
            view.reset()
        if ranks is not None and not ranks:
            del self.replicas[replica]

    def replica_down(self, replica: str) -> None:
        """The replica is down (its health probe, or the calls sent to it, failed): what its views held may be
        gone with a restart (module contract)."""
        for view in self.replicas.get(replica, {}).values():
            if view.owner or view.chains:
                view.reset()

    def forget_replica(self, replica: str) -> None:
        for view in self.replicas.pop(replica, {}).values():
            view.reset()

    def report(self, replica: str) -> dict[str, Any] | None:
        """For `GET /saga/v1/replicas`: the ranks' figures summed, each rank's, and how many ranks could not
        be subscribed (None: none subscribed or tried)."""
        ranks = self.replicas.get(replica, {})
        unsubscribed = self.unsubscribed.get(replica, 0)
        if not ranks and not unsubscribed:
            return None
        shown = {str(rank): view.report() for rank, view in sorted(ranks.items())}
        out: dict[str, Any] = {"source": next(iter(ranks.values())).source if ranks else ""}
        for key in ("batches", "gaps", "overflows", "skipped_events", "cached_blocks", "sessions"):
            out[key] = sum(rank[key] for rank in shown.values())
        out["ranks"] = shown
        out["ranks_not_subscribed"] = unsubscribed
        return out

    def apply(self, replica: str, seq: int, events: list[KvEvent], skipped: int = 0, rank: int = 0) -> int:
        """One batch of `replica`'s rank `rank`; the blocks it named (the caller's measure of work done)."""
        view = self.view(replica, rank)
        if view.last_seq is not None and seq != view.last_seq + 1:
            view.gaps += 1
            view.reset()
        view.last_seq = seq
        view.batches += 1
        view.skipped += skipped
        blocks = 0
        for event in events:
            if isinstance(event, BlockStored):
                view.stored(event)
                blocks += len(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                view.removed(event)
                blocks += len(event.block_hashes)
            else:
                view.reset()
        return blocks

    def learn_scale(self, estimated: int, reported: int) -> None:
        """A call the proxy estimated at `estimated` prompt tokens was `reported` by its replica (both > 0;
        a ratio past 1/16..16 is a replica's error, not a tokenizer's, and is held to that range)."""
        if estimated <= 0 or reported <= 0:
            return
        ratio = min(16.0, max(1 / 16, estimated / reported))
        scale = self.scale
        self.scale = ratio if scale is None else scale + 0.05 * (ratio - scale)  # the last ~20 calls' mean

    def resident_estimated(self, session: str) -> dict[str, int]:
        """`resident_tokens` in the units of the proxy's own prompt estimate (`RequestInfo.prompt_tokens`),
        so that policies compare like with like."""
        return self.resident_tokens(session, 1.0 if self.scale is None else self.scale)

    def resident_tokens(self, session: str, scale: float = 1.0) -> dict[str, int]:
        """Tokens of `session`'s context cached on each replica where it has a chain, its best rank's (module
        contract), times `scale`."""
        out: dict[str, int] = {}
        held = self.where.get(session)
        if held:
            replicas = self.replicas
            for replica, rank in held:
                tokens = replicas[replica][rank].resident_tokens(session)
                if tokens is not None:
                    tokens = int(tokens * scale)
                    if tokens >= out.get(replica, 0):
                        out[replica] = tokens
        return out

    def rank_for(self, session: str, replica: str, also: str | None = None) -> int | None:
        """The rank of `replica` holding most of `session` (or of `also`'s chain, when given: module
        contract); None when it has one rank, or no rank holds any of either."""
        ranks = self.replicas.get(replica)
        if ranks is None or len(ranks) < 2:
            return None
        best: int | None = None
        most = 0
        names = (session,) if also is None or also == session else (session, also)
        for named in names:
            for rank in [r for name, r in self.where.get(named, ()) if name == replica]:
                tokens = ranks[rank].resident_tokens(named) or 0
                if tokens > most or (tokens == most and best is not None and rank < best):
                    best, most = rank, tokens
        return best
