"""Admin API: the Agent Execution Graphs the scheduler core has learned, as JSON and as Graphviz DOT.

Routes: `GET /saga/v1/graphs` (every agent type's graph: nodes, edges with transition probability, gap,
context-growth and output quantiles, end probabilities) and `GET /saga/v1/graphs/{agent_type}.dot` (one graph
to render with `dot -Tsvg`; `?by=state` merges the step buckets into one node per state). An agent type the
core has not seen is a 404 in OpenAI's error shape.
"""

from __future__ import annotations

from aiohttp import web

from predictor.export import graph_dot, graph_json, state_graph_dot
from proxy.errors import ProxyError
from proxy.scheduler import SchedulerCore


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

    app.router.add_get("/saga/v1/graphs", all_graphs)
    app.router.add_get(r"/saga/v1/graphs/{agent_type:.+}.dot", one_graph_dot)
