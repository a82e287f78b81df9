"""Learned graphs as JSON (for the admin API and logs) and as Graphviz DOT (to look at).

Contract: `graph_json` is JSON-ready builtins; `graph_dot` is a `digraph` whose nodes are the agent's states
(label: state, step bucket, end probability) and whose edges carry the transition probability and the median
return gap; edges below `min_probability` are left out of the drawing (not of the JSON).
"""

from __future__ import annotations

import math
from typing import Any

from predictor.graph import START, AgentGraph, bucket_label
from predictor.sketch import LogSketch


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
