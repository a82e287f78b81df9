"""One call's life after parsing (`Call`): the core's decision, the dispatch, the relay, the finish report.

Contract:
- Every call the core dispatched is reported finished exactly once (`_finish`, guarded), whatever happens
  after dispatch: an upstream failure, a timeout, a client that hangs up, a bug, a task cancelled before it
  ran.
- `run` is the coroutine path (any `forward.Downstream`). `begin` is the fast server's: when the core
  dispatches at once and a pooled connection to the replica is idle, the answer is relayed from the
  connections' callbacks (proxy/inline_relay.py, whose `InlineCall` side this class is) with no task or
  coroutine (the request written with the turn's other writes while other calls are in flight); anything
  else (a wait in the queue, a new connection, a retry, a timeout, a priority refusal) is handed over to a
  task that goes on in the coroutine path from where the call is.
- Retries, failures and the accounting of each outcome are proxy/call_attempts.py's.
- With `kv_events`, a call sent to a replica with several data-parallel ranks carries vLLM's
  `X-data-parallel-rank`: the rank whose events say it caches most of the session (proxy/kv_residency.py
  `rank_for`; none when no rank holds any of it, and the engine's own balancing chooses). The session is
  the one the proxy schedules, which vLLM files the call's blocks under: the `X-Session-ID` sent, and the
  body's `session_id` made the same where the client's named another (proxy/directives.py
  `with_session_id`; vLLM reads the body's first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from proxy import call_attempts, forward
from proxy.context import (
    CHAIN_OWNERS,
    CHAINS,
    CONFIG,
    CORE,
    GATE,
    GUARDS,
    KEY_CONVERSATIONS,
    KV_RESIDENCY,
    METRICS,
    POOL,
    QUOTE_OWNERS,
    RELEASER,
    RESPONSE_OWNERS,
    TENANT_SOURCES,
)
from proxy.data_structs import Identity
from proxy.directives import BodyLacks, asking_for_usage, with_retention
from proxy.errors import ProxyError, retry_after
from proxy.inline_relay import InlineDownstream, InlineRelay
from proxy.quoted_answers import answer_lines
from proxy.scheduler import Decision, Dispatch, Reject, RequestInfo, Usage
from proxy.session_chain import answer_key
from proxy.sessions import SESSION_END_HEADER, end_session, wants_end
from proxy.tenant_salt import TENANT_SALTS
from proxy.upstream_pool import UpstreamAnswer

log = logging.getLogger("saga.proxy")


_NO_KEYS: list[bytes] = []  # (shared, never added to: most answers have one choice)


class CallShared:
    """What every call reads from the app, looked up once (an app lookup is ~0.5 µs, and a call made ten)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.ready = False

    def resolve(self) -> CallShared:
        app = self.app
        self.core, self.gate, self.metrics, self.config = app[CORE], app[GATE], app[METRICS], app[CONFIG]
        self.chains, self.pool, self.guards = app[CHAINS], app[POOL], app[GUARDS]
        self.key_conversations = app[KEY_CONVERSATIONS]
        self.releaser = app[RELEASER]
        self.response_owners = app.get(RESPONSE_OWNERS)
        self.chain_owners = app.get(CHAIN_OWNERS)
        self.quote_owners = app.get(QUOTE_OWNERS)
        self.kv_residency = app.get(KV_RESIDENCY)
        self.tenant_sources = app[TENANT_SOURCES]
        # each client API key's tenant salts its prefix cache on the replicas (proxy/tenant_salt.py)
        self.salts = app.get(TENANT_SALTS)
        # replicas that refused a request priority (FCFS vLLM): their calls go without one for a while
        self.no_priority = self.guards.no_priority
        self.ready = True
        return self


class Call:
    """One call's life after parsing: decisions, attempts, the relay, and its single finish report."""

    def __init__(
        self,
        app: web.Application,
        shared: CallShared,
        path: str,
        headers: Mapping[str, str],
        downstream: forward.Downstream | InlineDownstream,
        info: RequestInfo,
        who: Identity,
        body: bytes,
        add_usage: bool,
        lacks: BodyLacks,
    ) -> None:
        self.path, self.headers, self.downstream = path, headers, downstream
        # What the replica is sent of the client's headers: `headers`, or the same as parsed pairs.
        self.forwarded_from: Mapping[str, str] | list[tuple[str, str]] = headers
        # A streamed chat/completions call that did not ask for usage: ask upstream, strip it downstream.
        self.add_usage = add_usage
        self.app = app
        self.shared = shared
        self.core, self.gate, self.metrics = shared.core, shared.gate, shared.metrics
        self.config = shared.config
        self.info = info
        self.who = who
        self.body = body
        self.lacks = lacks  # members `body` does not have: added to it without decoding it again
        self.failures = 0
        # the last 5xx a replica answered before the call was retried elsewhere: (replica, status, headers,
        # body), relayed as it was if no replica is left
        self.last_5xx: tuple[str, int, dict[str, str], bytes] | None = None
        # the replicas that answered this call a 5xx before any byte, in order: they count toward their
        # breakers once another replica answers it without a 5xx (proxy/call_attempts.py); None: none
        self.refused: list[str] | None = None
        self.usage: Usage | None = None  # what the answer reported, for the finish report
        self.finished = False
        self.started = 0.0
        # the inline relay's dispatch: the one decision, and whether it went with a priority
        self.dispatch: Dispatch | None = None
        self.with_priority = False
        # the answer's prefix-chain key, once computed: with workers both `answered` and `_relayed` need it
        self.chained_key: bytes | None = None
        self.alternative_keys: list[bytes] | None = None
        # the lines its answer files for a compacting agent (proxy/quoted_answers.py), once computed: with
        # workers `answered` records them in the workers' table first
        self.quote_lines: list[int] | None = None

    def _decided_now(self, decisions: list[Decision]) -> Decision | None:
        """This call's decision when the core made it at once (usually); None when it must wait for it."""
        rid = self.info.request_id
        decision: Decision | None
        if len(decisions) == 1 and decisions[0].request_id == rid:  # the usual case: this call alone
            decision = decisions[0]
        else:
            decision = next((d for d in decisions if d.request_id == rid), None)
            if decision is None:
                return None
            if len(decisions) > 1:
                self.gate.apply([d for d in decisions if d is not decision])
        self.metrics.decisions.bump("dispatch" if isinstance(decision, Dispatch) else "reject")
        return decision

    async def _decided(self, decisions: list[Decision]) -> Decision:
        decision = self._decided_now(decisions)
        if decision is not None:
            return decision
        return await self._awaited(self._expecting(decisions))

    def _expecting(self, decisions: list[Decision]) -> asyncio.Future[Decision]:
        """The gate's future for this call's decision, made before anything else runs: a decision applied
        before it (the call admitted by the next event) would be dropped, and the call wait for ever."""
        pending = self.gate.expect(self.info.request_id)
        self.gate.apply(decisions)
        return pending

    async def _awaited(self, pending: asyncio.Future[Decision]) -> Decision:
        try:
            decision = await pending
        finally:
            self.gate.forget(self.info.request_id)
        self.metrics.decisions.bump("dispatch" if isinstance(decision, Dispatch) else "reject")
        return decision

    async def run(self) -> None:
        self.started = time.perf_counter()
        await self._guarded(self._arrive)

    async def _arrive(self) -> None:
        await self._dispatch(await self._decided(self.core.request_arrived(self.info)))

    def begin(self, downstream: InlineDownstream) -> None:
        """`run` up to the relay without a coroutine when it can (see `begin_call`)."""
        self.started = time.perf_counter()
        try:
            decisions = self.core.request_arrived(self.info)
            found = self._decided_now(decisions)
            if found is None:
                # expected now, not when the task runs: an event before that (another call's end, a tick)
                # may admit this call, and its decision found no one waiting for it: the call was never
                # sent and waited for ever, listed in flight at an idle replica (a review's agents)
                pending = self._expecting(decisions)
                self._hand_over(downstream, lambda: self._dispatch(self._awaited(pending)))
                return
            decision = found
            if not isinstance(decision, Dispatch):  # refused at once (a full queue under overload)
                call_attempts.no_replica_left(
                    self, decision
                )  # raises the refusal (the finish is reported below)
                return
            headers, sent, with_priority = self.request_for(decision)
            pool = self.shared.pool
            # While this process has other calls in flight, more requests to replicas are likely written in
            # this turn of the loop: they go out together at its end, so a replica wakes once for them, not
            # once a call (1.2-1.45x the calls a second at saturation on loopback, with the answers batched
            # too). A lone call is written at once: batching it would cost another turn of the loop and
            # nothing would join it.
            batched = len(self.core.in_flight) > 1
            pooled = pool.send_pooled(decision.replica_id + self.path, sent, headers, "POST", batched)
            if pooled is None:  # no idle connection: connecting is the coroutine path's
                self._hand_over(downstream, lambda: self._dispatch(decision))
                return
            self.dispatch, self.with_priority = decision, with_priority
            config = self.config
            key, conn = pooled
            InlineRelay(  # positional: a compiled call, not one through Python's argument parsing
                self,
                downstream,
                pool,
                key,
                conn,
                {
                    "X-Saga-Replica": decision.replica_id,
                    "X-Session-ID": self.who.shown_session_id or self.who.session_id,
                },
                forward.ANSWER_EXTRA,
                config.first_byte_timeout_s,
                config.stream_idle_timeout_s,
                self.who.prompt_chain is not None or self.info.choices > 1,
                self.add_usage,
                config.max_answer_bytes,
                True,
                self.path,
            )
        except BaseException:
            self._finish(cancelled=False)
            raise

    def _hand_over(self, downstream: InlineDownstream, work: Callable[[], Awaitable[None]]) -> None:
        downstream.hand_over(self._guarded(work), self._never_ran)

    def _never_ran(self) -> None:
        """The handed-over task ended: one cancelled before it ran (the client hung up at once) did not
        report the finish itself."""
        if not self.finished:
            self.gate.forget(self.info.request_id)  # (expected before it ran: `begin`)
            self._hung_up()
            self._finish(cancelled=True)

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        """Runs the rest of the call; whatever happens, its finish is reported (once)."""
        cancelled = False
        try:
            await work()
        except asyncio.CancelledError:
            cancelled = True
            self._hung_up()
            raise
        finally:
            self._finish(cancelled)

    async def _dispatch(
        self, decision: Decision | Awaitable[Decision], upstream: UpstreamAnswer | None = None
    ) -> None:
        while True:  # again after a whole answer cut short (nothing of it sent): `cut_short`
            if not isinstance(decision, (Dispatch, Reject)):
                decision = await decision
            attempt = await call_attempts.attempts(self, decision, upstream)
            if isinstance(attempt, Reject):
                call_attempts.no_replica_left(self, attempt)
                return
            if isinstance(attempt, call_attempts.Answered):
                return
            upstream, dispatch = attempt
            try:
                outcome = await forward.relay(
                    self.downstream,  # type: ignore[arg-type]  # the fast server's downstream is both kinds
                    upstream,
                    {
                        "X-Saga-Replica": dispatch.replica_id,
                        "X-Session-ID": self.who.shown_session_id or self.who.session_id,
                    },
                    self.first_byte,
                    self.config.stream_idle_timeout_s,
                    # (several choices: read apart, so what the scheduler learns is choice 0's)
                    collect_answer=self.who.prompt_chain is not None or self.info.choices > 1,
                    strip_usage=self.add_usage,
                    max_answer_bytes=self.config.max_answer_bytes,
                    on_answer=self.answered if self.shared.response_owners is not None else None,
                    path=self.path,
                    retry_cut=self.failures < self.config.max_retries,
                )
            except forward.WholeAnswerCut as cut:
                decision, upstream = await call_attempts.cut_short(self, dispatch.replica_id, str(cut)), None
                if not isinstance(decision, Dispatch):  # not retried: the 502 it was before retries
                    self._answer_cut(dispatch, str(cut))
                    return
                continue
            self._relayed(dispatch, outcome)
            return

    def _answer_cut(self, dispatch: Dispatch, error: str) -> None:
        outcome = forward.Relayed(502)
        forward.cut_answer(self.downstream, outcome, error, self.path)
        self._relayed(dispatch, outcome)

    def _relayed(self, decision: Dispatch, outcome: forward.Relayed) -> None:
        metrics = self.metrics
        self.usage = usage = outcome.usage
        kv = self.shared.kv_residency
        if kv is not None and usage is not None:  # its figures in the units of our prompt estimate
            kv.learn_scale(self.info.prompt_tokens, usage.prompt_tokens)
        call_attempts.account(self, decision.replica_id, outcome)
        metrics.latency.observe(time.perf_counter() - self.started)
        metrics.calls.bump(self.path, str(outcome.status))
        key = self._chained_key(outcome)
        if key is not None:
            chains, who = self.shared.chains, self.who
            chains.remember_key(key, who.session_id)
            for other in self._alternative_keys(outcome):  # `n` choices: the client goes on with any
                chains.remember_key(other, who.session_id)
            if who.quote_tag is not None:  # (a conversation's first call is not a summary asked of it)
                chains.quotes.file(who.session_id, self._quote_lines(outcome, who.quote_tag))
        if outcome.response_id is not None:
            self.shared.chains.remember_response(
                outcome.response_id, self.who.session_id, decision.replica_id, self.who.tenant_id
            )

    def relay_error(self, replica: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """A replica's error answer, read whole, relayed as it was: with the session header every relayed
        answer carries, and counted as one (`saga_calls_total`, `saga_responses_total`, the latency)."""
        headers["X-Session-ID"] = self.who.shown_session_id or self.who.session_id
        if status in (429, 503) and not any(name.lower() == "retry-after" for name in headers):
            headers["Retry-After"] = retry_after(self.config.retry_after_s)  # as the proxy's own refusals
        self.downstream.answer(status, headers, body)
        metrics = self.metrics
        metrics.responses.bump(replica, str(status))
        metrics.calls.bump(self.path, str(status))
        metrics.latency.observe(time.perf_counter() - self.started)

    def _hung_up(self) -> None:
        if self.gate.stopping:  # the proxy cut it at the end of its drain, not the client
            self.metrics.errors.labels("shutting_down").inc()
            log.info("%s ended by the proxy's stop before its answer ended", self.info.request_id)
            return
        self.metrics.client_disconnects.inc()
        self.metrics.errors.labels("client_disconnect").inc()
        log.info("client hung up on %s before its answer ended", self.info.request_id)

    def _finish(self, cancelled: bool) -> None:
        if self.finished:
            return
        self.finished = True
        self.refused = None  # 5xx no other replica answered past: the request's fault, counted for nothing
        core, rid = self.core, self.info.request_id
        # A call the client abandoned may still be held in the core's release queue: withdraw it; for a
        # dispatched call both mean "finished".
        self.gate.apply(core.request_cancelled(rid) if cancelled else core.request_finished(rid, self.usage))
        if core.releases:  # retentions the policy gave up early (the session went quiet)
            self.shared.releaser.release(core.take_releases())
        if SESSION_END_HEADER in self.headers and wants_end(self.headers):
            end_session(self.app, self.who.session_id)

    # -- the inline relay's side (proxy/inline_relay.py `InlineCall`) -------------------------------

    def takes_over(self, status: int) -> bool:
        """A status `_attempts` handles itself: a 5xx it may retry, a refused priority."""
        return (status >= 500 and self.failures < self.config.max_retries) or (
            status == 400 and self.with_priority
        )

    def may_retry_cut(self) -> bool:
        """A whole answer cut short may be asked of another replica (retries are left)."""
        return self.failures < self.config.max_retries

    def retry_cut(self, reason: str) -> None:
        """The inline relay's answer (whole, or a stream before its first event) broke off before any of it
        reached the client: the rest goes on as `_dispatch`'s does after `forward.WholeAnswerCut`."""
        dispatch = self.dispatch
        assert dispatch is not None
        self._hand_over(self.downstream, lambda: self._after_cut(dispatch, reason))  # type: ignore[arg-type]

    async def _after_cut(self, dispatch: Dispatch, reason: str) -> None:
        decision = await call_attempts.cut_short(self, dispatch.replica_id, reason)
        if isinstance(decision, Dispatch):
            await self._dispatch(decision)
        else:  # not retried: the 502 it was before retries
            self._answer_cut(dispatch, reason)

    def first_byte(self) -> None:
        self.metrics.ttft.observe(time.perf_counter() - self.started)
        self.gate.apply(self.core.first_token(self.info.request_id))

    def answered(self, outcome: forward.Relayed) -> None:
        """One worker of several: the next call naming this response, or repeating this answer in a
        conversation naming no session, or quoting this answer in a new one as a compacting agent does,
        finds this worker, also when the client sends it the moment the answer ends (so this comes before
        the answer's last bytes; proxy/response_owners.py)."""
        shared = self.shared
        if outcome.response_id is not None and shared.response_owners is not None:
            shared.response_owners.record(outcome.response_id)
        owners = shared.chain_owners
        if owners is not None:
            key = self._chained_key(outcome)
            if key is not None:
                owners.record(key)
                for other in self._alternative_keys(outcome):
                    owners.record(other)
                tag = self.who.quote_tag
                if tag is not None and shared.quote_owners is not None:
                    shared.quote_owners.record(tag, self._quote_lines(outcome, tag))

    def _quote_lines(self, outcome: forward.Relayed, tag: str) -> list[int]:
        """The lines this call's answer files for a compacting agent, computed once (`chained_key` set)."""
        if self.quote_lines is None:
            assert outcome.answer is not None  # (a chained key is an answer's)
            self.quote_lines = answer_lines(outcome.answer.text, tag)
        return self.quote_lines

    def _chained_key(self, outcome: forward.Relayed) -> bytes | None:
        """The key a later call of this conversation finds this answer by (proxy/session_chain.py
        `answer_key`), computed once; None when the call chains nothing (a session named, or no answer)."""
        chain, answer = self.who.prompt_chain, outcome.answer
        if chain is None or answer is None or outcome.status != 200:
            return None
        if self.chained_key is None:
            self.chained_key = answer_key(chain, answer)
        return self.chained_key

    def _alternative_keys(self, outcome: forward.Relayed) -> list[bytes]:
        """The keys of the answer's other choices (a call asking for `n`), computed once; call only once
        `_chained_key` gave a key."""
        keys = self.alternative_keys
        if keys is None:
            chain, answer = self.who.prompt_chain, outcome.answer
            assert chain is not None and answer is not None
            alternatives = answer.alternatives
            keys = [answer_key(chain, other) for other in alternatives] if alternatives else _NO_KEYS
            self.alternative_keys = keys
        return keys

    def relayed(self, outcome: forward.Relayed) -> None:
        assert self.dispatch is not None
        try:
            self._relayed(self.dispatch, outcome)
        finally:
            self._finish(cancelled=False)

    def abandoned(self) -> None:
        self._hung_up()
        self._finish(cancelled=True)

    def resume(self, upstream: UpstreamAnswer | None, failure: str | None, timed_out: bool) -> None:
        self._hand_over(self.downstream, lambda: self._resumed(upstream, failure, timed_out))  # type: ignore[arg-type]

    def failed(self, error: Exception) -> None:
        self._hand_over(self.downstream, lambda: _raising(error))  # type: ignore[arg-type]

    async def _resumed(self, upstream: UpstreamAnswer | None, failure: str | None, timed_out: bool) -> None:
        """The coroutine path from the inline relay's dispatch: its answer (`upstream`), a failed
        connection (`failure`; None for a stale pooled one, retried afresh) or a first-byte timeout."""
        dispatch = self.dispatch
        assert dispatch is not None
        replica = dispatch.replica_id
        decision: Decision = dispatch
        if timed_out:
            reason = f"no answer within first_byte_timeout_s ({self.config.first_byte_timeout_s:g} s)"
            call_attempts.note_failure(self, replica, reason, "upstream_timeout")
            raise ProxyError(504, f"the replica did not answer in time: {reason}", code="upstream_timeout")
        if failure is not None:
            decision = await call_attempts.failed(self, replica, failure, "upstream_unreachable")
        await self._dispatch(decision, upstream)

    def request_for(self, decision: Dispatch) -> tuple[dict[str, str], bytes, bool]:
        """The headers and body sent to the decision's replica, and whether they carry a priority."""
        extra = {"X-Session-ID": self.who.session_id}
        with_priority = decision.priority is not None and not self.shared.no_priority.refuses(
            decision.replica_id
        )
        dropped = forward.REQUEST_EXTRA
        if with_priority:
            extra["X-Vllm-Priority"] = str(decision.priority)
            dropped = forward.REQUEST_EXTRA_PRIORITY
        kv = self.shared.kv_residency
        rank = None if kv is None else kv.rank_for(self.who.session_id, decision.replica_id)
        if rank is not None:  # a data-parallel vLLM: the call goes to the rank caching its session's KV
            extra["X-data-parallel-rank"] = str(rank)
            dropped = forward.dropped_with(tuple(extra))
        headers = forward.forwarded_headers(self.forwarded_from, extra, dropped)
        forward.upstream_auth(headers, self.config)
        sent = self.body
        lacks = self.lacks
        if self.add_usage:
            sent = asking_for_usage(sent, lacks.stream_options)
        if decision.retain_ttl_s is not None:
            sent = with_retention(
                sent, self.who.session_id, decision.retain_ttl_s, decision.retain_priority, lacks.vllm_xargs
            )
        return headers, sent, with_priority


async def _raising(error: Exception) -> None:
    raise error
