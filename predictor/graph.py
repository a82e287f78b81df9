"""An Agent Execution Graph: one agent type's states, the transitions between them and what each costs.

A node is the state an agent is in after a call: the tool it called (or `answer` when it answered without a
tool call, `call` when the shell could not tell) and a step bucket (calls so far, in powers of four). An edge
a -> b counts how often a call that left the agent in state a was followed by one that left it in b, and
holds three sketches: the gap spent in a before the next call (tool latency, or a person's think time), the
context growth of the next prompt, and the output length of the next call. A node also counts how often the
task ended there.

Contract: memory is bounded whatever the traffic — at most `max_nodes` nodes (later states fold into one
`other` node), at most `max_edges_per_node` edges out of a node (later targets fold into `other`), and every
node's counts halve once its weight passes `decay_weight`, so old behaviour fades (drift) and counts stay
finite. `end_probability` is smoothed towards `prior_end` by `prior_weight` pseudo-observations. Each node,
each state and the graph keep running sums of their edges' sketches (halved with a node's decay), so what a
prediction reads is current and costs no merge.
"""

from __future__ import annotations

import math

from predictor.absorbing_chain import solve_absorbing
from predictor.sketch import LogSketch, seconds_sketch, tokens_sketch
from predictor.structs import GraphLimits, RemainingWork

START = "start"
OTHER = "other"
STEP_BUCKETS = ((0, 0), (1, 3), (4, 15), (16, 63), (64, 255), (256, 1 << 30))


def step_bucket(calls_done: int) -> int:
    """The bucket of a session that has made `calls_done` calls (0 only for the start state)."""
    if 0 <= calls_done < len(_BUCKET_OF):
        return _BUCKET_OF[calls_done]
    return _step_bucket(calls_done)


def _step_bucket(calls_done: int) -> int:
    for i, (_, hi) in enumerate(STEP_BUCKETS):
        if calls_done <= hi:
            return i
    return len(STEP_BUCKETS) - 1


_BUCKET_OF = tuple(_step_bucket(n) for n in range(256))  # one look-up per answer instead of a loop
# 2^(53 - decays): below it a node's running total of departures is exact (`Node.departures`)
_EXACT_BELOW = tuple(math.ldexp(1.0, 53 - d) for d in range(54))


def node_key(state: str, calls_done: int) -> str:
    return START if calls_done == 0 else f"{state}#{step_bucket(calls_done)}"


def bucket_label(bucket: int) -> str:
    lo, hi = STEP_BUCKETS[bucket]
    return f"{lo}+" if hi >= 1 << 30 else f"{lo}-{hi}"


class Edge:
    __slots__ = ("count", "gap", "growth", "output", "rows")

    def __init__(self) -> None:
        self.count = 0.0
        self.gap = seconds_sketch()
        self.growth = tokens_sketch()
        self.output = tokens_sketch()
        # For an edge out of a node: the running sums a transition along it adds to (not the edge itself: a
        # list holding its own edge is a reference cycle, and a dropped graph's edges were then left to the
        # cyclic GC, whose full collections stalled the proxy for 1-2 s under agent-type churn), and the gap,
        # growth and output sketches of the edge and those sums (built on its first transition; none of them
        # is ever replaced).
        self.rows: tuple[list[Edge], list[LogSketch], list[LogSketch], list[LogSketch]] | None = None

    def scale(self, factor: float) -> None:
        self.count *= factor
        for s in (self.gap, self.growth, self.output):
            s.scale(factor)

    def add_scaled(self, other: Edge, weight: float) -> None:
        """Add `other`'s counts times `weight` (negative: take a share of them back)."""
        self.count += other.count * weight
        other.gap.merge_into(self.gap, weight)
        other.growth.merge_into(self.growth, weight)
        other.output.merge_into(self.output, weight)


class Node:
    __slots__ = ("decays", "ends", "key", "out", "state", "total")

    def __init__(self, key: str) -> None:
        self.key = key
        self.state = key.split("#", 1)[0]
        self.ends = 0.0
        self.out: dict[str, Edge] = {}
        # The sum of the edges' sketches, kept up to date as they learn (what a prediction for a session in
        # this node reads on every call: no merge per call).
        self.total = Edge()
        self.decays = 0  # how often its counts were halved

    @property
    def departures(self) -> float:
        """The sum of the edges' counts, in their order: read from the running total `total.count` (each
        transition adds 1.0 to it and to its edge, a decay halves both) while that is exactly the same float,
        which holds as long as no addition ever rounded: every count is a multiple of 2^-decays, so all of
        them, and every partial sum, are exact while the total stays below 2^(53 - decays) (the ratio of the
        total to that bound never falls, so checking it now covers the past). Past that (~40 decays of one
        node at the default `decay_weight`), the sum itself, as before, added left to right: Python 3.12's
        `sum()` compensates its rounding and mypyc's does not, so `sum()` here gave compiled and interpreted
        runs, and Python 3.11 and 3.12, different predictions."""
        count, decays = self.total.count, self.decays
        if decays < len(_EXACT_BELOW) and count < _EXACT_BELOW[decays]:
            return count
        total = 0.0
        for edge in self.out.values():
            total += edge.count
        return total

    @property
    def weight(self) -> float:
        return self.ends + self.departures


class AgentGraph:
    """The learned graph of one agent type (see the module docstring)."""

    def __init__(self, agent_type: str, limits: GraphLimits) -> None:
        self.agent_type = agent_type
        self.limits = limits
        self.nodes: dict[str, Node] = {}
        self.sessions_seen = 0
        self.sessions_ended = 0
        # Per ended session: how many calls it made and its last prompt (its peak context), for remaining
        # work by residual life (`Predictor.predict`); halved past `decay_weight` like a node's counts.
        self.lengths = tokens_sketch()
        self.peaks = tokens_sketch()
        self.updates = 0
        self._remaining: dict[str, RemainingWork] = {}
        self._remaining_at = -1
        self._merged: dict[tuple[tuple[str, ...], str], LogSketch | None] = {}
        self._merged_at = 0
        # Running sums of the edges out of every node of a state, and of every node but `start`: what a
        # prediction falls back to, kept current as the graph learns (no merge per call).
        self._state_totals: dict[str, Edge] = {}
        self._graph_total = Edge()
        # The nodes of each state, in the nodes' order (nodes are only ever added): `state_nodes`.
        self._state_nodes: dict[str, list[Node]] = {}

    # -- learning -------------------------------------------------------------------------------------

    def node(self, key: str) -> Node:
        """The node for `key`, created if there is room, else the `other` node."""
        node = self.nodes.get(key)
        if node is None:
            if len(self.nodes) >= self.limits.max_nodes and key != START:
                key = OTHER
                node = self.nodes.get(key)
            if node is None:
                node = self.nodes[key] = Node(key)
                self._state_nodes.setdefault(node.state, []).append(node)
        return node

    def observe_transition(
        self, src: str, dst: str, *, gap_s: float | None, growth: float, output: float
    ) -> str:
        """Learn one transition; returns the key of the node `dst` landed in (`other` when full)."""
        node = self.nodes.get(src) or self.node(src)
        got = self.nodes.get(dst)
        target = got.key if got is not None else self.node(dst).key
        edge = node.out.get(target)
        if edge is None:
            key = target
            if len(node.out) >= self.limits.max_edges_per_node:
                key = self.node(OTHER).key
                edge = node.out.get(key)
            if edge is None:
                edge = node.out[key] = Edge()
        rows = edge.rows
        if rows is None:
            totals = [node.total, self._state_total(node.state)]
            if node.key != START:
                totals.append(self._graph_total)
            rows = edge.rows = (
                totals,
                [edge.gap, *(e.gap for e in totals)],
                [edge.growth, *(e.growth for e in totals)],
                [edge.output, *(e.output for e in totals)],
            )
        totals, gaps, growths, outputs = rows
        edge.count += 1.0
        for e in totals:
            e.count += 1.0
        if gap_s is not None:
            LogSketch.add_one_at(gaps, edge.gap.index_of(max(gap_s, 0.0)))
        LogSketch.add_one_at(growths, edge.growth.index_of(max(growth, 0.0)))
        LogSketch.add_one_at(outputs, edge.output.index_of(max(output, 0.0)))
        if src == START:
            self.sessions_seen += 1
        self._touched(node)
        return target

    def observe_end(self, key: str, weight: float = 1.0, *, calls: int = 0, peak_prompt: int = 0) -> None:
        """A task ended in state `key` after `calls` calls, its last prompt `peak_prompt` tokens (weight -1
        takes back an end declared too early)."""
        node = self.node(key)
        node.ends = max(0.0, node.ends + weight)
        self.sessions_ended += 1 if weight > 0 else -1
        if calls > 0:
            if weight > 0:
                self.lengths.add(calls, weight)
                self.peaks.add(max(1, peak_prompt), weight)
                if self.lengths.total > self.limits.decay_weight:
                    self.lengths.scale(0.5)
                    self.peaks.scale(0.5)
            else:
                self.lengths.remove(calls, -weight)
                self.peaks.remove(max(1, peak_prompt), -weight)
        self._touched(node)

    def _touched(self, node: Node) -> None:
        self.updates += 1
        if node.weight > self.limits.decay_weight:
            node.ends *= 0.5
            for edge in node.out.values():
                edge.scale(0.5)
            self._state_total(node.state).add_scaled(node.total, -0.5)
            if node.key != START:
                self._graph_total.add_scaled(node.total, -0.5)
            node.total.scale(0.5)
            node.decays += 1

    def _state_total(self, state: str) -> Edge:
        total = self._state_totals.get(state)
        if total is None:
            total = self._state_totals[state] = Edge()
        return total

    # -- queries --------------------------------------------------------------------------------------

    def end_probability(self, node: Node) -> float:
        lim = self.limits
        return (node.ends + lim.prior_end * lim.prior_weight) / (node.weight + lim.prior_weight)

    def transitions(self, node: Node) -> dict[str, float]:
        total = node.departures
        return {k: e.count / total for k, e in node.out.items()} if total > 0 else {}

    def merged(self, keys: list[str], which: str) -> LogSketch | None:
        """The sum of the `which` sketches ("gap", "growth", "output") of the edges out of `keys` (do not
        modify it: sums are cached, and rebuilt once `merge_refresh` updates have come in; one node's is its
        running sum, always current)."""
        if len(keys) == 1:
            node = self.nodes.get(keys[0])
            return getattr(node.total, which) if node is not None and node.out else None
        if self.updates - self._merged_at >= self.limits.merge_refresh:
            self._merged.clear()
            self._merged_at = self.updates
        cache_key = (tuple(keys), which)
        if cache_key not in self._merged:
            self._merged[cache_key] = self._merge(keys, which)
        return self._merged[cache_key]

    def _merge(self, keys: list[str], which: str) -> LogSketch | None:
        sketches = [getattr(e, which) for k in keys if k in self.nodes for e in self.nodes[k].out.values()]
        if not sketches:
            return None
        out = seconds_sketch() if which == "gap" else tokens_sketch()
        for s in sketches:
            s.merge_into(out)
        return out

    def state_merged(self, state: str, which: str) -> LogSketch | None:
        """The `which` sketch summed over the edges out of every node of `state` (None: none seen; current,
        do not modify it)."""
        total = self._state_totals.get(state)
        return getattr(total, which) if total is not None and total.count > 0 else None

    def graph_merged(self, which: str) -> LogSketch | None:
        """The `which` sketch summed over the edges out of every node but `start` (current, do not modify)."""
        total = self._graph_total
        return getattr(total, which) if total.count > 0 else None

    def keys_with_state(self, state: str) -> list[str]:
        return [n.key for n in self.state_nodes(state)]

    def state_nodes(self, state: str) -> list[Node]:
        """The nodes of `state` (every step bucket), in the nodes' order: kept as nodes are made, not a walk
        over the graph (read on every return model built; do not modify it)."""
        return self._state_nodes.get(state, _NO_NODES)

    def remaining(self, key: str, *, refresh_every: int = 64) -> RemainingWork | None:
        """Expected calls and tokens still to come after a call that left the agent in `key` (the absorbing
        Markov chain solved exactly, `absorbing_chain`; refreshed at most every `refresh_every` updates)."""
        if self._remaining_at < 0 or self.updates - self._remaining_at >= refresh_every:
            self._remaining = self._solve()
            self._remaining_at = self.updates
        return self._remaining.get(key)

    def _solve(self) -> dict[str, RemainingWork]:
        # Per node: continue probability, and per edge (target index, probability, mean growth, mean
        # output); a target outside the nodes (none today) reads as nothing after its own step.
        index = {key: i for i, key in enumerate(self.nodes)}
        size = len(index)
        rows: list[tuple[float, list[tuple[int, float, float, float]]]] = []
        for node in self.nodes.values():
            probs = self.transitions(node)
            cont = 1.0 - self.end_probability(node) if probs else 0.0
            edges = node.out
            rows.append(
                (
                    cont,
                    [
                        (
                            index.get(k, size),
                            p,
                            _finite(edges[k].growth.mean()),
                            _finite(edges[k].output.mean()),
                        )
                        for k, p in probs.items()
                    ],
                )
            )
        calls, new, out = solve_absorbing(rows, size)
        return {k: RemainingWork(calls[i], new[i], out[i]) for k, i in index.items()}


_NO_NODES: list[Node] = []


def _finite(x: float) -> float:
    return 0.0 if math.isnan(x) else x
