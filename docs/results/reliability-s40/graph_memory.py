"""The memory of one fully grown Agent Execution Graph (the fifth review): every node of a graph fed edges to
its bounds, measured with tracemalloc. `PYTHONPATH=. python3 docs/results/reliability-s40/graph_memory.py`."""

from __future__ import annotations

import tracemalloc

from predictor.graph import node_key
from predictor.predictor import Predictor

tracemalloc.start()
predictor = Predictor()
before = tracemalloc.get_traced_memory()[0]
graph = predictor._graph("t")
states = [f"tool{i}" for i in range(11)]
keys = [node_key(state, calls) for state in states for calls in (1, 4, 16, 64, 256, 1000)][:63]
for src in keys:
    for j in range(17):
        to = keys[j * 3 % len(keys)] if j < 16 else "x#1"
        graph.observe_transition(src, to, gap_s=1.0, growth=10, output=5)
grown = tracemalloc.get_traced_memory()[0] - before
edges = sum(len(node.out) for node in graph.nodes.values())
limit = predictor.config.max_agent_types
print(
    f"one graph: {len(graph.nodes)} nodes, {edges} edges, {grown / 1e6:.1f} MB; "
    f"{limit} graphs (max_agent_types): {limit * grown / 1e6:.0f} MB"
)
