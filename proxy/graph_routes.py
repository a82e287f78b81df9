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

`/saga/v1/graphs` is built one graph per step of the event loop and kept for at least a second (ten times
what building it cost, if longer), so a listing can be that old (`GraphsAnswer`).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import msgspec
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


# Every graph's JSON is ~10 ms of work at 16 tools (each edge's quantile sketches): 64 agent types built in
# one step stalled every call in flight for 0.6 s, and clients asking in a loop took the proxy's throughput.
# So the answer is built one graph per step of the event loop, shared by the requests that wait for it, and
# kept for GRAPHS_KEPT_S or ten times what building it cost, whichever is longer.
GRAPHS_KEPT_S = 1.0


class GraphsAnswer:
    """`/saga/v1/graphs`'s body, built in steps and kept a while (above)."""

    def __init__(self, core: SchedulerCore) -> None:
        self.core = core
        self.body = b""
        self.fresh_until = -math.inf
        self.building: asyncio.Future[bytes] | None = None

    async def get(self) -> bytes:
        if time.monotonic() < self.fresh_until:
            return self.body
        if self.building is None:
            self.building = asyncio.ensure_future(self._build())
        # shielded: a client that hangs up does not stop the build the others wait for
        return await asyncio.shield(self.building)

    async def _build(self) -> bytes:
        try:
            spent = 0.0
            predictor = self.core.predictor
            agent_types = list(predictor.graphs)
            graphs: list[dict[str, Any]] = []
            for agent_type in agent_types:
                step = time.process_time()
                graph = predictor.graphs.get(agent_type)
                if graph is not None:  # (one forgotten while the others were built is left out)
                    graphs.append(graph_json(graph))
                spent += time.process_time() - step
                await asyncio.sleep(0)
            answer = {"agent_types": agent_types, "live_sessions": len(predictor.sessions), "graphs": graphs}
            self.body = msgspec.json.encode(answer)
            # from the end: a build spread over a busy loop's steps would otherwise be stale when done
            self.fresh_until = time.monotonic() + max(GRAPHS_KEPT_S, 10 * spent)
            return self.body
        finally:
            self.building = None


def add_graph_routes(app: web.Application, core: SchedulerCore) -> None:
    answer = GraphsAnswer(core)

    async def all_graphs(request: web.Request) -> web.Response:
        return web.Response(body=await answer.get(), content_type="application/json")

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
