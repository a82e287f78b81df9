"""Learned graphs as JSON (for the admin API and logs) and as Graphviz DOT (to look at).

Contract: `graph_json` is JSON-ready builtins; `graph_dot` is a `digraph` whose nodes are the agent's states
(label: state, step bucket, end probability) and whose edges carry the transition probability and the median
return gap; `state_graph_dot` merges the step buckets (one node per state; edges with the gap's p10-p90);
edges below `min_probability` are left out of the drawings (not of the JSON).
"""

from __future__ import annotations

import math
from typing import Any

from predictor.graph import START, AgentGraph, bucket_label
from predictor.sketch import LogSketch, seconds_sketch


def _q(sketch: LogSketch, q: float) -> float | None:
    v = sketch.quantile(q)
    return None if math.isnan(v) else round(v, 4)


def graph_json(graph: AgentGraph) -> dict[str, Any]:
    nodes = []
    for key, node in graph.nodes.items():
        probs = graph.transitions(node)
        edges = [
            {
                "to": dst,
                "count": round(edge.count, 3),
                "probability": round(probs.get(dst, 0.0), 4),
                "gap_s": {"p10": _q(edge.gap, 0.1), "p50": _q(edge.gap, 0.5), "p90": _q(edge.gap, 0.9)},
                "growth_tokens": {"p50": _q(edge.growth, 0.5), "mean": _q_mean(edge.growth)},
                "output_tokens": {"p50": _q(edge.output, 0.5), "mean": _q_mean(edge.output)},
            }
            for dst, edge in node.out.items()
        ]
        rest = graph.remaining(key)
        nodes.append(
            {
                "key": key,
                "state": node.state,
                "ends": round(node.ends, 3),
                "end_probability": round(graph.end_probability(node), 4),
                "remaining_calls": None if rest is None else round(rest.calls, 2),
                "edges": edges,
            }
        )
    return {
        "agent_type": graph.agent_type,
        "sessions_seen": graph.sessions_seen,
        "sessions_ended": graph.sessions_ended,
        "updates": graph.updates,
        "nodes": nodes,
    }


def _q_mean(sketch: LogSketch) -> float | None:
    v = sketch.mean()
    return None if math.isnan(v) else round(v, 1)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def graph_dot(graph: AgentGraph, *, min_probability: float = 0.05) -> str:
    lines = [
        f"digraph {_quote(graph.agent_type)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for key, node in graph.nodes.items():
        if key == START:
            label = "start"
        else:
            state, _, bucket = key.partition("#")
            steps = bucket_label(int(bucket)) if bucket.isdigit() else "any"
            label = f"{state}\\ncalls {steps}\\nP(end) {graph.end_probability(node):.2f}"
        color = ', fillcolor="#fdebd0"' if node.state == "answer" else ""
        lines.append(f'  {_quote(key)} [label="{label}"{color}];')
    for key, node in graph.nodes.items():
        for dst, p in graph.transitions(node).items():
            if p < min_probability:
                continue
            median = node.out[dst].gap.quantile(0.5)
            gap = "" if math.isnan(median) else f"\\ngap {_fmt_s(median)}"
            lines.append(
                f'  {_quote(key)} -> {_quote(dst)} [label="{p:.2f}{gap}", penwidth={0.5 + 3 * p:.2f}];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def state_graph_dot(graph: AgentGraph, *, min_probability: float = 0.05) -> str:
    """The graph with step buckets merged: one node per state (tool, `answer`), edges summed over buckets."""
    ends: dict[str, float] = {}
    weight: dict[str, float] = {}
    edges: dict[tuple[str, str], tuple[float, LogSketch]] = {}
    for node in graph.nodes.values():
        ends[node.state] = ends.get(node.state, 0.0) + node.ends
        weight[node.state] = weight.get(node.state, 0.0) + node.weight
        for dst, edge in node.out.items():
            pair = (node.state, graph.nodes[dst].state)
            count, gap = edges.get(pair, (0.0, seconds_sketch()))
            edge.gap.merge_into(gap)
            edges[pair] = (count + edge.count, gap)
    lines = [
        f"digraph {_quote(graph.agent_type)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for state in weight:
        label = state if state == START else f"{state}\\nP(end) {ends[state] / max(weight[state], 1e-9):.2f}"
        color = ', fillcolor="#fdebd0"' if state == "answer" else ""
        lines.append(f'  {_quote(state)} [label="{label}"{color}];')
    departures: dict[str, float] = {}
    for (src, _), (count, _) in edges.items():
        departures[src] = departures.get(src, 0.0) + count
    for (src, dst), (count, gap) in edges.items():
        p = count / departures[src]
        if p < min_probability:
            continue
        q10, q50, q90 = (gap.quantile(q) for q in (0.1, 0.5, 0.9))
        label = (
            f"{p:.2f}" if math.isnan(q50) else f"{p:.2f}\\ngap {_fmt_s(q50)} ({_fmt_s(q10)}-{_fmt_s(q90)})"
        )
        lines.append(f'  {_quote(src)} -> {_quote(dst)} [label="{label}", penwidth={0.5 + 3 * p:.2f}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
