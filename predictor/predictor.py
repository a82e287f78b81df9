"""The online predictor: feeds each agent type's graph from the call stream and answers what the scheduler
asks.

Events (the scheduler core reports them; no I/O, times come from the caller's clock):
- `call_arrived(session, agent_type, now, prompt_tokens, tool_names)`: the gap since the session's last answer
  and the growth of its prompt are measured here; `tool_names` (of the request's tool messages) name the state
  the last answer left the agent in when the answer itself did not say.
- `call_finished(session, now, prompt_tokens, output_tokens, finish_reason, tool_names)`: the new state is the
  tool the answer called, `answer` for an answer without tool calls (finish_reason `stop`: the agent hands
  back to a person, so the gap ahead is think time, not tool time), else `call`; the edge from the previous
  state is learned now.
- `session_ended(session)`: an explicit end; `tick(now)` ends sessions silent past their state's learned
  horizon (`horizon_factor` x the p99 gap, clamped). A session that comes back after such an end takes the end
  back (a bounded ghost list remembers where it was).

Sharing (`saga serve --workers N`, where each worker's predictor sees only the sessions it owns): after
`keep_learned`, every observation the graphs learn is kept for `take_learned`, and `learn` replays another
predictor's into this one's graphs (proxy/shared_learning.py carries them between workers).

Contract: memory is bounded — at most `max_agent_types` graphs (while all are taken, a new type gets a graph
at its second session, its first filed under its owner's `ONE_OFF_AGENT_TYPE`; the graph dropped for it is
the least recently used of the owner holding the most, an owner being what a type's name has before its
first ":", which the proxy makes the tenant's with client API keys: `alpha:coder`; so one tenant sending
many types evicts its own graphs, not another's, and tenants' types seen once are learned apart),
`max_sessions` live sessions and `max_ghosts` ghosts (oldest dropped), each graph bounded by its
`GraphLimits`. A prediction comes from the node's own edges when they hold `min_samples` observations, else
the same tool over all step buckets, else the whole graph, else the priors — `source` says which and `cold` is
true for the priors. Remaining calls are P(return) x the mean residual life of the agent type's session
lengths (or the chain over the graph, `remaining_model`); the peak context (`peak_context_tokens`,
`Prediction.peak_prompt_tokens`) is the last prompt plus the growth those calls add.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable

from mypy_extensions import mypyc_attr

from predictor.graph import OTHER, START, AgentGraph, node_key
from predictor.return_model import ReturnModel
from predictor.sharded import ShardedLru
from predictor.sketch import LogSketch, seconds_sketch
from predictor.structs import Prediction, PredictorConfig

# (p_return, return_gap_s, next_prompt_tokens, remaining_calls, cold): `hold_outlook`
HoldOutlook = tuple[float, tuple[float, ...], float, float, bool]
# One observation a graph learned, as `take_learned` gives it and `learn` replays it elsewhere:
# (TRANSITION, agent type, from, to, gap s (-1: none), prompt growth, output tokens, 0) or
# (END, agent type, state, "", weight, peak prompt tokens, 0.0, calls).
Learned = tuple[int, str, str, str, float, float, float, int]
TRANSITION, END = 0, 1
MAX_KEPT = 65_536  # observations kept between two takes (bounded when nobody takes them): later ones dropped
_Z90 = 1.2815515655446004  # standard normal quantile at 0.9
_MAX_CACHED_MODELS = 4096  # return models cached per (agent type, state): dropped all at once when full
# While every graph slot is taken, a session of an agent type without a graph is filed under this shared
# type, unless its type was met at a session's start among the last `_DOORKEEPER_PER_SLOT x max_agent_types`
# new types: a type earns a graph of its own at its second session. So a stream of types seen once (a system
# prompt naming its user or task in its first 2 KiB) neither evicts the recurring agents' graphs nor builds
# and drops a graph per session (~80 µs a call compiled, and ~45% of the proxy's throughput, when each
# session had a type of its own); those sessions learn together instead.
ONE_OFF_AGENT_TYPE = "(agent types seen once)"


def _owner(agent_type: str) -> str:
    """The owner of a type: its name up to and with the first ":" (`alpha:` for `alpha:coder`: the tenant's,
    with client API keys), else none (every type of a proxy without keys has one owner)."""
    colon = agent_type.find(":")
    return agent_type[: colon + 1] if colon >= 0 else ""


_DOORKEEPER_PER_SLOT = 4


# Acyclic (mypyc): numbers, strings and a tuple of them only, so an instance can be in no reference cycle and
# the cyclic GC does not track it (one per live session, up to `max_sessions` plus `max_ghosts`).
@mypyc_attr(acyclic=True)
class _Session:
    __slots__ = (
        "agent_type",
        "calls",
        "filed_key",
        "filed_order",
        "finished_at",
        "in_flight",
        "last_output",
        "last_prompt",
        "pending",
        "state",
    )

    def __init__(self, agent_type: str) -> None:
        self.agent_type = agent_type
        self.calls = 0
        self.state = START  # node key after the last answer
        self.finished_at: float | None = None
        self.in_flight = 0
        self.last_prompt = 0
        self.last_output = 0
        # Measured at the arrival of the call in flight: (source node, gap, growth).
        self.pending: tuple[str, float | None, float] | None = None
        # `Predictor.tick`'s filing: the order of its last answer among all (-1 while not filed: no answer
        # yet, or ended) and its group's key (None while misfiled). Two fields, not a pair: a new pair each
        # answer was a tuple holding a tuple, which the cyclic GC tracks until two young collections have
        # passed it (~10,000 of them in the young generations under a flood of one-call sessions).
        self.filed_order = -1
        self.filed_key: tuple[str, str] | None = None


def _answer_order(s: _Session) -> int:
    assert s.filed_order >= 0  # (filed: in a group or misfiled)
    return s.filed_order


def _silent_past(s: _Session, now: float, horizon_of: Callable[[_Session], float]) -> bool:
    """No call in flight, and silent since its last answer for longer than its horizon at `now`."""
    at = s.finished_at
    return at is not None and not s.in_flight and now - at > horizon_of(s)


def _possible(kind: int, number: float, amount: float, output: float, calls: int) -> bool:
    """Whether `Predictor.take_learned` could have given this observation (the fields after the names)."""
    if not (math.isfinite(number) and math.isfinite(amount) and math.isfinite(output)) or calls < 0:
        return False
    if kind == TRANSITION:  # gap (-1: none), prompt growth, output tokens
        return (number >= 0.0 or number == -1.0) and amount >= 0.0 and output >= 0.0
    return kind == END and number in (1.0, -1.0) and amount >= 0.0  # weight, peak prompt tokens


class Predictor:
    """Agent Execution Graphs learned online and the predictions built on them (see the module docstring)."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        self.config = config or PredictorConfig()
        model = self.config.remaining_model
        if model not in ("residual", "chain"):
            raise ValueError(f"predictor: remaining_model must be 'residual' or 'chain', got {model!r}")
        self.graphs: OrderedDict[str, AgentGraph] = OrderedDict()
        self._graphs_per_owner: dict[str, int] = {}  # owner (`_owner`) -> its graphs
        # split over shards (predictor/sharded.py): a table of ~100,000 sessions rebuilds itself in one step
        self.sessions: ShardedLru[_Session] = ShardedLru(salt=2, start_up=True)
        self._ghosts: OrderedDict[str, _Session] = OrderedDict()
        self._next_scan = -math.inf
        # Sessions that have answered, grouped by the (agent type, state) their last answer left them in,
        # each group by the time of that answer (oldest first): one group shares one end horizon, so `tick`
        # reads a group's head only while it is past the horizon (O(groups + ended), not O(sessions)). A
        # session whose state changed since (a request's tool messages named it) waits in `_misfiled`, read
        # whole on each scan; a session's `filed_key` names its group (None: misfiled), `filed_order` the
        # order of its answer among all. An answer stamped earlier than the last one (a clock that went
        # back) turns the shortcut off: `tick` then reads every session.
        self._groups: dict[tuple[str, str], ShardedLru[None]] = {}
        self._misfiled: dict[str, None] = {}
        # The last `tick`'s time, and whether it has sessions left to find and end (`end_more`)
        self._scan_at = -math.inf
        self._scan_more = False
        self._answers = 0
        self._answered_last = -math.inf
        self._answered_ordered = True
        self._models: dict[tuple[object, ...], tuple[int, tuple[ReturnModel, str]]] = {}
        self._prior_sketch = _lognormal_sketch(self.config.priors.gap_median_s, self.config.priors.gap_p90_s)
        self._journal: list[Learned] | None = None  # what the graphs learned, kept once `keep_learned`
        self._seen_once: OrderedDict[str, None] = OrderedDict()  # new types met while the graphs were full

    # -- sharing what the graphs learn (`saga serve --workers N`: proxy/shared_learning.py) -------------

    def keep_learned(self) -> None:
        """From now on keep every observation the graphs learn, for `take_learned`."""
        if self._journal is None:
            self._journal = []

    def take_learned(self) -> list[Learned]:
        """The observations learned since the last take (oldest first)."""
        journal = self._journal
        if not journal:
            return []
        self._journal = []
        return journal

    def learn(self, observations: list[Learned]) -> None:
        """Learn what another predictor's graphs learned (its `take_learned`), as if observed here; it is
        not kept for this predictor's own `take_learned`. Sessions, and what they predict, stay this one's.
        An observation no predictor makes (another kind, a number that is not finite or out of its range, an
        end weighing other than +-1) is skipped: the graphs never learn from it."""
        for kind, agent_type, key, to, number, amount, output, calls in observations:
            if not _possible(kind, number, amount, output, calls):
                continue
            agent_type = agent_type[: self.config.max_agent_type_chars]
            if number < 0.0 and kind == END and agent_type not in self.graphs:
                continue  # an end taken back, whose end this predictor never learned
            graph = self._graph(agent_type)
            if kind == TRANSITION:
                graph.observe_transition(
                    key, to, gap_s=None if number < 0.0 else number, growth=amount, output=output
                )
            else:
                graph.observe_end(key, number, calls=calls, peak_prompt=int(amount))

    def _learned_end(self, s: _Session, weight: float = 1.0) -> None:
        graph = self.graphs[s.agent_type] if weight < 0.0 else self._graph(s.agent_type)
        graph.observe_end(s.state, weight, calls=s.calls, peak_prompt=s.last_prompt)
        journal = self._journal
        if journal is not None and len(journal) < MAX_KEPT:
            journal.append((END, s.agent_type, s.state, "", weight, float(s.last_prompt), 0.0, s.calls))

    # -- events ---------------------------------------------------------------------------------------

    def call_arrived(
        self,
        session_id: str,
        agent_type: str,
        now: float,
        prompt_tokens: int,
        tool_names: tuple[str, ...] = (),
    ) -> str:
        """Returns the agent type the session is filed under (set at its first call: `agent_type`, or
        `ONE_OFF_AGENT_TYPE` while every graph slot is taken by other types)."""
        s = self.sessions.touch(session_id)  # (made the newest)
        if s is None:
            s = self._ghosts.pop(session_id, None)
            if s is not None and s.agent_type in self.graphs:
                # It was not over after all.
                self._learned_end(s, -1.0)
            if s is None:
                s = _Session(self._filed_type(agent_type[: self.config.max_agent_type_chars]))
            self._admit(session_id, s)
        in_flight = s.in_flight  #
        if in_flight == 0:
            state = s.state
            if tool_names and state.startswith("call#") and s.calls > 0:
                state = s.state = node_key(tool_names[0], s.calls)  # the request's tool messages name it
                filed_key = s.filed_key
                if filed_key is not None and filed_key[1] != state:
                    order = s.filed_order
                    self._unfile(session_id, s)  # its group's horizon is no longer its own
                    s.filed_order = order  # misfiled: no group
                    self._misfiled[session_id] = None
            finished_at = s.finished_at
            gap = None if finished_at is None else max(0.0, now - finished_at)
            s.pending = (state, gap, float(max(0, prompt_tokens - s.last_prompt)))
        s.in_flight = in_flight + 1
        return s.agent_type

    def call_finished(
        self,
        session_id: str,
        now: float,
        prompt_tokens: int,
        output_tokens: int,
        finish_reason: str = "",
        tool_names: tuple[str, ...] = (),
    ) -> None:
        s = self.sessions.get(session_id)
        if s is None:
            return
        in_flight = s.in_flight  #
        if in_flight == 0:
            return
        s.in_flight = in_flight - 1
        pending = s.pending
        if pending is None:  # a parallel call of the session: the first one's answer moves the state
            return
        src, gap, _ = pending
        # The growth learned is this call's prompt less the last, both as the caller counts them here (the
        # engine's usage, or the proxy's estimate where the engine gave none): at arrival the prompt is the
        # proxy's estimate (bytes / 4), and that less the last engine count learned the estimate's error over
        # the whole context as growth, every call (1,540 tokens a call against 14 on the simulator's).
        growth = float(max(0, prompt_tokens - s.last_prompt))
        s.pending = None
        calls = s.calls = s.calls + 1
        if tool_names:
            state = tool_names[0]
        elif finish_reason == "stop":
            state = "answer"
        else:
            state = "call"
        agent_type = s.agent_type
        graph = self._graph(agent_type)
        to = node_key(state, calls)
        landed = s.state = graph.observe_transition(
            src, to, gap_s=gap, growth=growth, output=float(output_tokens)
        )
        journal = self._journal
        if journal is not None and len(journal) < MAX_KEPT:
            gap_s = -1.0 if gap is None else gap
            journal.append((TRANSITION, agent_type, src, to, gap_s, growth, float(output_tokens), 0))
        s.finished_at = now
        self._answers += 1
        filed_key = s.filed_key
        if filed_key is not None and filed_key[1] == landed:  # same group: to its end
            self._groups[filed_key].move_to_end(session_id)
            s.filed_order = self._answers
        else:
            self._unfile(session_id, s)
            key = (agent_type, landed)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = ShardedLru(salt=3)
            group[session_id] = None
            s.filed_key, s.filed_order = key, self._answers
        if now < self._answered_last:
            self._answered_ordered = False
        self._answered_last = max(self._answered_last, now)
        s.last_prompt = prompt_tokens
        s.last_output = output_tokens

    def call_failed(self, session_id: str) -> None:
        """A call that arrived got no answer (rejected): nothing is learned from it."""
        s = self.sessions.get(session_id)
        if s is not None and s.in_flight > 0:
            s.in_flight -= 1
            if s.in_flight == 0:
                s.pending = None

    def session_ended(self, session_id: str) -> None:
        """The session is over (explicitly): its state learns an end."""
        s = self.sessions.pop(session_id)
        if s is not None:
            self._unfile(session_id, s)
            if s.calls > 0:
                self._learned_end(s)

    def forget(self, session_id: str) -> None:
        """Drop a session without learning anything from it; one the last `tick` found ended and left to a
        later step ends first, as that tick would have ended it."""
        s = self.sessions.get(session_id) if self._scan_more else None
        if s is not None and self._quiet_past_horizon(s):
            self._end(session_id)
        else:
            s = self.sessions.pop(session_id)
            if s is not None:
                self._unfile(session_id, s)
        self._ghosts.pop(session_id, None)

    def tick(self, now: float, end_limit: int = 0) -> list[str]:
        """End the sessions silent past their horizon (checked at most every `end_scan_interval_s`); returns
        their ids. `end_limit` (0: none): find and end at most that many here, and the rest, silent past
        their horizon at this tick's time, in `end_more` steps while `ending()` (the proxy: each step a turn
        of its event loop of its own; a flood of one-call sessions going quiet ended thousands a tick, 18-22
        ms at once). A session with a call since is not ended; one forgotten before its step ends first, as
        one tick would have ended it."""
        if now < self._next_scan:
            return []
        self._next_scan = now + self.config.end_scan_interval_s
        self._scan_at = now
        return self._end_quiet(end_limit)

    def ending(self) -> bool:
        """The last `tick` (with an `end_limit`) has sessions left to find and end."""
        return self._scan_more

    def end_more(self, end_limit: int) -> list[str]:
        """The next step of the last `tick`: at most `end_limit` more sessions silent past their horizon at
        its time end; returns their ids."""
        return self._end_quiet(end_limit) if self._scan_more else []

    def _end_quiet(self, limit: int) -> list[str]:
        now = self._scan_at
        horizons: dict[tuple[str, str], float] = {}  # one per state, not per session

        def horizon_of(s: _Session) -> float:
            key = (s.agent_type, s.state)
            horizon = horizons.get(key)
            if horizon is None:
                horizon = horizons[key] = self.horizon_s(s)
            return horizon

        ended: list[tuple[int, str]] = []  # (order of the last answer, session): ended in that order
        gone: list[tuple[tuple[str, str] | None, str]] = []  # filed, no longer live (not expected)
        full = False  # `limit` found: the rest in the next step
        if not self._answered_ordered:
            for sid, session in self.sessions.items():
                if _silent_past(session, now, horizon_of):
                    ended.append((0, sid))
                    if len(ended) == limit:
                        full = True
                        break
        else:
            for key, group in self._groups.items():
                for part in group.parts():  # (each in answer order)
                    full = self._scan_part(key, part, now, horizon_of, ended, gone, limit)
                    if full:
                        break
                if full:
                    break
            if not full:
                for sid in self._misfiled:
                    s = self.sessions.get(sid)
                    if s is None:
                        gone.append((None, sid))
                    elif _silent_past(s, now, horizon_of):
                        ended.append((_answer_order(s), sid))
            ended.sort()
        self._scan_more = full
        for filed_under, sid in gone:
            self._drop_filing(filed_under, sid)
        for _, sid in ended:
            self._end(sid)
        return [sid for _, sid in ended]

    def _scan_part(
        self,
        key: tuple[str, str],
        part: dict[str, None],
        now: float,
        horizon_of: Callable[[_Session], float],
        ended: list[tuple[int, str]],
        gone: list[tuple[tuple[str, str] | None, str]],
        limit: int,
    ) -> bool:
        """Adds a group's (part's) sessions silent past their horizon to `ended`, in answer order; True once
        `ended` holds `limit`. Every horizon is at least `min_horizon_s`: a head answered later than that is
        not over, nor is anything behind it; past a head still within its group's horizon, nothing is
        either."""
        for sid in part:
            s = self.sessions.get(sid)
            if s is None:
                gone.append((key, sid))
                continue
            assert s.finished_at is not None
            if now - s.finished_at <= self.config.min_horizon_s:
                return False
            if s.in_flight:
                continue
            if now - s.finished_at <= horizon_of(s):
                return False
            ended.append((_answer_order(s), sid))
            if len(ended) == limit:
                return True
        return False

    def _quiet_past_horizon(self, s: _Session) -> bool:
        """What the last `tick` ends: a filed session with no call in flight, silent past its horizon at the
        tick's time."""
        return s.filed_order >= 0 and _silent_past(s, self._scan_at, self.horizon_s)

    def _end(self, session_id: str) -> None:
        s = self.sessions.pop(session_id)
        assert s is not None, session_id
        self._unfile(session_id, s)
        self._learned_end(s)
        self._ghosts[session_id] = s
        while len(self._ghosts) > self.config.max_ghosts:
            self._ghosts.popitem(last=False)

    # -- predictions ----------------------------------------------------------------------------------

    def horizon_s(self, s: _Session) -> float:
        cfg = self.config
        gap, _ = self._sketch(s, "gap")
        p99 = (gap if gap is not None else self._prior_sketch).quantile(0.99)
        return min(max(cfg.horizon_factor * p99, cfg.min_horizon_s), cfg.max_horizon_s)

    def _cached(self, key: tuple[object, ...], updates: int) -> tuple[ReturnModel, str] | None:
        """The return model cached for a graph state, while its graph (at `updates`, -1 for none) has learned
        at most ~6% more since it was built (building one walks whole sketches: hundreds of microseconds, on
        every call otherwise); None: build it and `_store` it."""
        hit = self._models.get(key)
        if hit is not None and hit[0] <= updates <= hit[0] + max(4, hit[0] >> 4):
            return hit[1]
        return None

    def _store(
        self, key: tuple[object, ...], updates: int, built: tuple[ReturnModel, str]
    ) -> tuple[ReturnModel, str]:
        if len(self._models) >= _MAX_CACHED_MODELS:
            self._models.clear()
        self._models[key] = (updates, built)
        return built

    def _updates(self, agent_type: str) -> int:
        graph = self.graphs.get(agent_type)
        return graph.updates if graph is not None else -1

    def return_model(self, session_id: str) -> tuple[ReturnModel, str] | None:
        """The frozen return distribution of a session waiting between calls, and where it came from."""
        s = self.sessions.get(session_id)
        if s is None or s.finished_at is None or s.in_flight:
            return None
        return self._return_model_of(s)

    def _return_model_of(self, s: _Session) -> tuple[ReturnModel, str]:
        key, updates = ("at", s.agent_type, s.state), self._updates(s.agent_type)
        return self._cached(key, updates) or self._store(key, updates, self._return_model(s))

    def _return_model(self, s: _Session) -> tuple[ReturnModel, str]:
        gap, source = self._sketch(s, "gap")
        graph = self.graphs.get(s.agent_type)
        node = graph.nodes.get(s.state) if graph is not None else None
        p_end = self.config.priors.end_probability
        if graph is not None and node is not None:
            p_end = self._end_probability(graph, node.key, node.state)
        return ReturnModel(gap if gap is not None else self._prior_sketch, p_end), source

    def return_model_after_call(
        self, session_id: str, *, max_gap_s: float | None = None
    ) -> tuple[ReturnModel, str] | None:
        """For a session with a call in flight: its return distribution once that call has answered — a
        mixture over the states the call may leave it in, weighted by the transition probabilities (what a
        retention TTL sent with the call is sized from). With `max_gap_s`, states whose median gap is longer
        (a person's think time) are left out: they count as not returning within what is held for, so
        `p_return` is the chance of a return through the short-gap states. None for an unknown session."""
        s = self.sessions.get(session_id)
        if s is None:
            return None
        key, updates = ("after", s.agent_type, s.state, max_gap_s), self._updates(s.agent_type)
        return self._cached(key, updates) or self._store(
            key, updates, self._return_model_after_call(s, max_gap_s)
        )

    def _return_model_after_call(self, s: _Session, max_gap_s: float | None) -> tuple[ReturnModel, str]:
        graph = self.graphs.get(s.agent_type)
        node = graph.nodes.get(s.state) if graph is not None else None
        probs = graph.transitions(node) if graph is not None and node is not None else {}
        if graph is None or node is None or node.departures < self.config.min_samples:
            return ReturnModel(self._prior_sketch, self.config.priors.end_probability), "prior"
        mixture = seconds_sketch()
        p_return = 0.0
        source = "node"
        for key, p in probs.items():
            gap, src = self._sketch_for(graph, key, "gap")
            if gap is None:
                gap, src = self._prior_sketch, "prior"
            if max_gap_s is not None and gap.quantile(0.5) > max_gap_s:
                continue
            gap.merge_into(mixture, p / gap.total)
            p_return += p * (1.0 - self._end_probability(graph, key, graph.nodes[key].state))
            if src != "node":
                source = "tool"
        if mixture.total <= 0:  # every branch is a long gap: nothing worth holding for
            return ReturnModel(self._prior_sketch, 1.0), source
        return ReturnModel(mixture, 1.0 - p_return), source

    def predict(self, session_id: str, now: float) -> Prediction | None:
        """The prediction for a session waiting between calls (None: unknown, or a call in flight)."""
        s = self.sessions.get(session_id)
        if s is None or s.finished_at is None or s.in_flight:
            return None
        model, source = self._return_model_of(s)
        cfg = self.config
        waited = max(0.0, now - s.finished_at)
        p_return = model.p_return(waited)
        gaps = model.conditional_quantiles(cfg.quantiles, waited)
        growth, _ = self._sketch(s, "growth")
        output, _ = self._sketch(s, "output")
        next_growth = growth.mean() if growth is not None else cfg.priors.growth_tokens
        next_output = output.mean() if output is not None else cfg.priors.output_tokens
        calls, new_tokens, out_tokens = self._remaining(s, p_return, next_growth, next_output)
        # positional, in the fields' order: one call per finished call of every admitted workflow
        return Prediction(
            session_id,
            s.agent_type,
            s.state,
            source,
            source == "prior",
            waited,
            p_return,
            1.0 - p_return,
            cfg.quantiles,
            gaps,
            s.last_prompt + next_growth,
            next_output,
            calls,
            out_tokens,
            new_tokens * cfg.prefill_s_per_token + out_tokens * cfg.decode_s_per_token,
            s.last_prompt + new_tokens,
        )

    def hold_outlook(self, session_id: str, now: float) -> HoldOutlook | None:
        """`predict`'s `p_return`, `return_gap_s` (at `config.quantiles`), `next_prompt_tokens`,
        `remaining_calls` and `cold`, the same values, alone: what admission re-sizes a workflow's hold from
        after each of its calls, without building the whole `Prediction` (nor reading the output sketch it
        does not use). None when `predict` gives None."""
        s = self.sessions.get(session_id)
        if s is None:
            return None
        finished_at = s.finished_at
        if finished_at is None or s.in_flight:
            return None
        model, source = self._return_model_of(s)
        cfg = self.config
        waited = max(0.0, now - finished_at)
        p_return = model.p_return(waited)
        gaps = model.conditional_quantiles(cfg.quantiles, waited)
        growth, _ = self._sketch(s, "growth")
        next_growth = growth.mean() if growth is not None else cfg.priors.growth_tokens
        calls = self._remaining(s, p_return, next_growth, 0.0)[0]  # the calls do not depend on the output
        return p_return, gaps, s.last_prompt + next_growth, calls, source == "prior"

    def peak_context_tokens(self, session_id: str) -> float | None:
        """The session's expected peak context: the prompt of its last call, the prompt tokens its remaining
        calls will add included (what a scheduler sizes a workflow's KV footprint from). Also for a session
        with a call in flight (from that call's prompt). None for an unknown session."""
        s = self.sessions.get(session_id)
        if s is None:
            return None
        if s.in_flight and s.pending is not None:  # the call in flight: its prompt, then what follows it
            prompt = s.last_prompt + s.pending[2]
            graph = self.graphs.get(s.agent_type)
            node = graph.nodes.get(s.state) if graph is not None else None
            probs = graph.transitions(node) if graph is not None and node is not None else {}
            growth, _ = self._sketch(s, "growth")
            per_call = growth.mean() if growth is not None else self.config.priors.growth_tokens
            if graph is None or not probs:
                return prompt + self._remaining(s, 1.0, per_call, 0.0, calls_done=s.calls + 1)[1]
            rest = 0.0  # over the states the call in flight may leave the session in
            for key, p in probs.items():
                p_return = 1.0 - self._end_probability(graph, key, graph.nodes[key].state)
                rest += p * self._remaining(s, p_return, per_call, 0.0, calls_done=s.calls + 1, key=key)[1]
            return prompt + rest
        if s.finished_at is None:
            return float(s.last_prompt)
        got = self.return_model(session_id)
        p_return = got[0].p_return() if got is not None else 1.0
        growth, _ = self._sketch(s, "growth")
        per_call = growth.mean() if growth is not None else self.config.priors.growth_tokens
        return s.last_prompt + self._remaining(s, p_return, per_call, 0.0)[1]

    def agent_type_of(self, session_id: str) -> str | None:
        """The agent type a live session was filed under at its first call (None: not a live session). A
        session keeps it: later calls are not filed again, so naming their type again is wasted work."""
        s = self.sessions.get(session_id)
        return None if s is None else s.agent_type

    def graph(self, agent_type: str) -> AgentGraph | None:
        return self.graphs.get(agent_type)

    def expected_work_s(self, session_id: str) -> float | None:
        """The service a session still has to get, from its state on (a new session: its whole task), in
        seconds of the service-time model: its agent type's expected prompt growth and output over the
        absorbing chain of the graph. None for an unknown session, or before `min_samples` sessions of its
        type have ended (no basis to compare types on)."""
        s = self.sessions.get(session_id)
        graph = self.graphs.get(s.agent_type) if s is not None else None
        if s is None or graph is None or graph.sessions_ended < self.config.min_samples:
            return None
        rest = graph.remaining(s.state)
        if rest is None:
            return None
        cfg = self.config
        return rest.new_tokens * cfg.prefill_s_per_token + rest.output_tokens * cfg.decode_s_per_token

    # -- internals ------------------------------------------------------------------------------------

    def _remaining(
        self,
        s: _Session,
        p_return: float,
        next_growth: float,
        next_output: float,
        *,
        calls_done: int | None = None,
        key: str | None = None,
    ) -> tuple[float, float, float]:
        """Expected (calls, prompt tokens added, output tokens) still to come for a session in state `key`
        (default: its own) after `calls_done` calls (default: its own), which returns with `p_return`.

        Calls: P(return) x the agent type's mean residual life E[L - n | L > n] over the lengths of the
        sessions that ended (`remaining_model` "residual"), or the absorbing chain over the graph ("chain");
        the per-call tokens come from the chain (which knows how a state's next calls grow), else the next
        call's. Until `min_samples` sessions of the type ended, the prior's remaining calls stand in."""
        cfg = self.config
        graph = self.graphs.get(s.agent_type)
        n = s.calls if calls_done is None else calls_done
        learned = graph is not None and graph.sessions_ended >= cfg.min_samples
        rest = graph.remaining(key or s.state) if graph is not None and learned else None
        if graph is None or not learned:
            calls = cfg.priors.remaining_calls
            return calls, calls * next_growth, calls * next_output
        new_per_call, out_per_call = next_growth, next_output
        if rest is not None and rest.calls > 1e-6:
            new_per_call, out_per_call = rest.new_tokens / rest.calls, rest.output_tokens / rest.calls
        if cfg.remaining_model == "residual":
            residual = graph.lengths.residual_mean(n)
            calls = p_return * max(1.0, residual) if math.isfinite(residual) else 0.0
        else:
            calls = rest.calls if rest is not None else cfg.priors.remaining_calls
        return calls, calls * new_per_call, calls * out_per_call

    def _admit(self, session_id: str, s: _Session) -> None:
        self.sessions[session_id] = s
        while len(self.sessions) > self.config.max_sessions:
            dropped, dropped_session = self.sessions.pop_oldest()
            self._unfile(dropped, dropped_session)

    def _unfile(self, session_id: str, s: _Session) -> None:
        """Take the session out of `tick`'s groups (if it is filed)."""
        if s.filed_order >= 0:
            key = s.filed_key
            s.filed_order, s.filed_key = -1, None
            self._drop_filing(key, session_id)

    def _drop_filing(self, key: tuple[str, str] | None, session_id: str) -> None:
        if key is None:
            self._misfiled.pop(session_id, None)
            return
        group = self._groups[key]
        group.pop(session_id)
        if not group:
            del self._groups[key]

    def _filed_type(self, agent_type: str) -> str:
        """The type a new session of `agent_type` is filed under: its own, unless every graph slot is taken
        by other types and this one was not met in the recent past (its owner's `ONE_OFF_AGENT_TYPE`)."""
        graphs = self.graphs
        if agent_type in graphs or len(graphs) < self.config.max_agent_types:
            return agent_type
        seen_once = self._seen_once
        if agent_type in seen_once:  # its second session: it earns a graph of its own
            del seen_once[agent_type]
            return agent_type
        seen_once[agent_type] = None
        if len(seen_once) > _DOORKEEPER_PER_SLOT * self.config.max_agent_types:
            seen_once.popitem(last=False)
        return _owner(agent_type) + ONE_OFF_AGENT_TYPE

    def _graph(self, agent_type: str) -> AgentGraph:
        graphs = self.graphs
        graph = graphs.get(agent_type)
        if graph is None:
            graph = graphs[agent_type] = AgentGraph(agent_type, self.config.graph)
            owners = self._graphs_per_owner
            owner = _owner(agent_type)
            owners[owner] = owners.get(owner, 0) + 1
            while len(graphs) > self.config.max_agent_types:
                self._drop_a_graph(agent_type)
        else:
            graphs.move_to_end(agent_type)
        return graph

    def _drop_a_graph(self, new: str) -> None:
        """Drop the least recently used graph of the owner holding the most (not `new`'s, just made): one
        owner sending many types evicts its own, while another's last graph is left alone (the fifth review:
        64 types of one tenant's in 0.8 s left every other tenant's workflows on the cold priors)."""
        owners = self._graphs_per_owner
        most = max(owners.values())
        victim = next(
            (t for t in self.graphs if t != new and owners[_owner(t)] == most),
            next(t for t in self.graphs if t != new),
        )
        del self.graphs[victim]
        owner = _owner(victim)
        left = owners[owner] - 1
        if left:
            owners[owner] = left
        else:
            del owners[owner]

    def _end_probability(self, graph: AgentGraph, key: str, state: str) -> float:
        """The node's end probability smoothed towards its state's over all step buckets, which is smoothed
        towards the prior (`GraphLimits.prior_weight` pseudo-observations each): a rare node learns from its
        siblings, and a state seen ending a hundred times and never returning is not pulled back towards the
        prior's 1/30 (an agent's final answer: every session ends there)."""
        node = graph.nodes[key]
        lim = graph.limits
        ends = weight = 0.0
        for sibling in graph.state_nodes(state):
            ends += sibling.ends
            weight += sibling.weight
        state_end = (ends + lim.prior_end * lim.prior_weight) / (weight + lim.prior_weight)
        return (node.ends + state_end * lim.prior_weight) / (node.weight + lim.prior_weight)

    def _sketch(self, s: _Session, which: str) -> tuple[LogSketch | None, str]:
        graph = self.graphs.get(s.agent_type)
        return (None, "prior") if graph is None else self._sketch_for(graph, s.state, which)

    def _sketch_for(self, graph: AgentGraph, key: str, which: str) -> tuple[LogSketch | None, str]:
        enough = self.config.min_samples
        node = graph.nodes.get(key)
        if node is not None and node.out:  # `graph.merged([key], which)`: the node's running sum
            sketch = getattr(node.total, which)
            if sketch.total >= enough:
                return sketch, "node"
        sketch = graph.state_merged(node.state if node is not None else OTHER, which)
        if sketch is not None and sketch.total >= enough:
            return sketch, "tool"
        sketch = graph.graph_merged(which)
        if sketch is not None and sketch.total >= enough:
            return sketch, "graph"
        return None, "prior"


def _lognormal_sketch(median: float, p90: float) -> LogSketch:
    """A gap sketch holding a log-normal's probability mass (weight 1 in all), for the priors."""
    sketch = seconds_sketch()
    sigma = math.log(p90 / median) / _Z90

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))

    edges = [
        sketch.low * (sketch.high / sketch.low) ** (i / sketch.buckets) for i in range(sketch.buckets + 1)
    ]
    for lo, hi in itertools.pairwise(edges):
        mass = cdf(hi) - cdf(lo)
        if mass > 0:
            sketch.add(math.sqrt(lo * hi), mass)
    return sketch
