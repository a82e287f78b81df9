"""Admin API: the Agent Execution Graphs the scheduler core has learned, as JSON and as Graphviz DOT.

Routes: `GET /saga/v1/graphs` (every agent type's graph: nodes, edges with transition probability, gap,
context-growth and output quantiles, end probabilities) and `GET /saga/v1/graphs/{agent_type}.dot` (one graph
to render with `dot -Tsvg`; `?by=state` merges the step buckets into one node per state). An agent type the
core has not seen is a 404 in OpenAI's error shape.

With workers, each worker's graphs learn from every worker's tasks (exchanged every sync period:
proxy/shared_learning.py), so every worker holds a copy of each graph, differing by what the last period has
not carried yet: `/saga/v1/graphs` lists each agent type once, the copy that has learned most (transitions
and ends; on a tie the lowest worker's), with its `worker`; a `.dot` is the first worker's (by index, this
one first) that learned that agent type.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from predictor.export import graph_dot, graph_json, state_graph_dot
from proxy.errors import ProxyError
from proxy.scheduler import SchedulerCore
from proxy.worker_gather import Gathered, add_gathered_get, json_answer


def _learned(graph: dict[str, Any]) -> float:
    """How much a graph copy has learned: its transitions and ends."""
    nodes = graph.get("nodes", [])
    return float(sum(n.get("ends", 0) + sum(e.get("count", 0) for e in n.get("edges", [])) for n in nodes))


def merge_graphs(gathered: Gathered) -> web.Response:
    answers = gathered.json()
    agent_types = list(dict.fromkeys(t for _, answer in answers for t in answer.get("agent_types", [])))
    live = sum(answer.get("live_sessions", 0) for _, answer in answers)
    # agent type -> (how much, the copy) that learned most (the lowest worker on a tie)
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for worker, answer in sorted(answers, key=lambda wa: wa[0]):
        for g in answer.get("graphs", []):
            learned, kept = _learned(g), best.get(g["agent_type"])
            if kept is None or learned > kept[0]:
                best[g["agent_type"]] = (learned, {**g, "worker": worker})
    graphs = [best[t][1] for t in agent_types if t in best]
    return json_answer({"agent_types": agent_types, "live_sessions": live, "graphs": graphs}, gathered)


def first_graph(gathered: Gathered) -> web.Response:
    answer = gathered.answers[0]
    return web.Response(body=answer.body, content_type=answer.content_type)


def add_graph_routes(app: web.Application, core: SchedulerCore) -> None:
    async def all_graphs(request: web.Request) -> web.Response:
        graphs = core.predictor.graphs
        return web.json_response(
            {
                "agent_types": list(graphs),
                "live_sessions": len(core.predictor.sessions),
                "graphs": [graph_json(g) for g in graphs.values()],
            }
        )

    async def one_graph_dot(request: web.Request) -> web.Response:
        agent_type = request.match_info["agent_type"]
        graph = core.predictor.graph(agent_type)
        if graph is None:
            raise ProxyError(
                404, f"no graph learned for agent type {agent_type!r}", code="unknown_agent_type"
            )
        by_state = request.query.get("by") == "state"
        text = state_graph_dot(graph) if by_state else graph_dot(graph)
        return web.Response(text=text, content_type="text/vnd.graphviz")

    add_gathered_get(app, "/saga/v1/graphs", all_graphs, merge_graphs)
    add_gathered_get(app, r"/saga/v1/graphs/{agent_type:.+}.dot", one_graph_dot, first_graph, any_worker=True)
