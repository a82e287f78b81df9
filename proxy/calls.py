"""The LLM-call routes: parse just enough, ask the core, forward, report back.

Contract: every call the core dispatched is reported finished exactly once (`request_finished` in one
`finally`), whatever happens after dispatch: an upstream failure, a timeout, a client that hangs up, a bug.
A connect error or a 5xx before any byte reached the client is retried on another replica (the core re-routes
with `dispatch_failed`, which rebinds the session), up to `max_retries` times; the last 5xx is relayed as the
replica sent it when no replica is left. The proxy's own refusals are OpenAI-style errors (proxy/errors.py);
a 429 from the core carries `Retry-After`.

Two ways through a call, with the same behaviour: `serve_call` (a coroutine, any `forward.Downstream`) and
`begin_call` (the fast server's common path): when the core dispatches at once and a pooled connection to the
replica is idle, the answer is relayed from the connections' callbacks (proxy/inline_relay.py) with no task
or coroutine; everything else (a wait in the queue, a new connection, a retry, a timeout, a priority
refusal) continues in the coroutine path, from where the call is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web

from proxy import forward
from proxy.auth import TENANT
from proxy.context import CHAINS, CONFIG, CORE, GATE, GUARDS, METRICS, POOL, RELEASER, down_stats
from proxy.directives import asking_for_usage, with_retention
from proxy.errors import ProxyError
from proxy.identity import CallFields, Identity, IdentityError, decode_call, identify
from proxy.inline_relay import InlineDownstream, InlineRelay
from proxy.prompt_shape import estimated_tokens, prefix_hashes
from proxy.scheduler import Decision, Dispatch, Reject, RequestInfo, Usage
from proxy.sessions import SESSION_END_HEADER, end_session, wants_end
from proxy.upstream_pool import BodyFailed, UpstreamAnswer

log = logging.getLogger("saga.proxy")

CALL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
USAGE_OPTION_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions"}
)  # the Responses API always reports
_request_ids = itertools.count()
_id_prefix = f"saga-{os.getpid():x}"
_MAX_ERROR_BODY = 64 * 1024
# What vLLM answers (400) to a request priority when it runs without `--scheduling-policy priority`
_PRIORITY_OFF = b"Priority scheduling is not enabled"
TENANT_SOURCES = web.AppKey("tenant_sources", tuple[str, ...])  # the tenants' identity headers, lowercased


class _Shared:
    """What every call reads from the app, looked up once (an app lookup is ~0.5 µs, and a call made ten)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.ready = False

    def resolve(self) -> _Shared:
        app = self.app
        self.core, self.gate, self.metrics, self.config = app[CORE], app[GATE], app[METRICS], app[CONFIG]
        self.chains, self.pool, self.guards = app[CHAINS], app[POOL], app[GUARDS]
        self.releaser = app[RELEASER]
        self.tenant_sources = app[TENANT_SOURCES]
        # replicas that refused a request priority (FCFS vLLM): their calls go without one for a while
        self.no_priority = self.guards.no_priority
        self.ready = True
        return self


SHARED = web.AppKey("call_shared", _Shared)


class _Answered:
    """`_attempts` relayed the replica's error answer to the client itself: nothing is left to relay."""


_ANSWERED = _Answered()


def _bad_request(message: str, code: str = "invalid_request_body") -> ProxyError:
    return ProxyError(400, message, code=code)


def parse_call(body: bytes) -> CallFields:
    if not body:
        raise _bad_request("request body is empty; expected a JSON object")
    try:
        return decode_call(body)
    except msgspec.ValidationError as e:
        raise _bad_request(f"invalid request body: {e}") from e
    except msgspec.DecodeError as e:
        raise _bad_request(f"request body is not valid JSON: {e}") from e


async def proxy_call(request: web.Request) -> web.StreamResponse:
    """The aiohttp handler of the call routes."""
    downstream = forward.AiohttpDownstream(request)
    await serve_call(
        request.app, request.path, request.headers, await request.read(), request.get(TENANT), downstream
    )
    assert downstream.response is not None
    return downstream.response


async def serve_call(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: forward.Downstream,
) -> None:
    """One call, whichever server holds the client connection: the answer goes to `downstream`.

    `headers` must be case-insensitive; `tenant` is the tenant a client API key named (None without keys).
    Raises ProxyError for the proxy's own refusals; the server answers it (nothing was sent yet then)."""
    await _prepared(app, path, headers, body, tenant, downstream).run()


def begin_call(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: InlineDownstream,
) -> None:
    """`serve_call` without a coroutine where it can: the call is under way in callbacks (it ends with
    `downstream.done()`), or its rest is handed over to a task (`downstream.hand_over`, raising ProxyError
    there as `serve_call` does). Raises ProxyError for a refusal."""
    _prepared(app, path, headers, body, tenant, downstream).begin(downstream)


def _prepared(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: forward.Downstream | InlineDownstream,
) -> _Call:
    shared = app[SHARED]
    if not shared.ready:  # the first call, after startup (the upstream pool is made at startup)
        shared.resolve()
    core = shared.core
    fields = parse_call(body)
    request_id = f"{_id_prefix}-{next(_request_ids)}"
    try:
        who = identify(headers, fields, request_id, shared.tenant_sources, chains=shared.chains)
    except IdentityError as e:
        raise ProxyError(400, e.message, param=e.param, code="invalid_identity") from e
    if tenant is not None:  # authenticated by a client API key: the key names the tenant
        who = msgspec.structs.replace(who, tenant_id=tenant)
    prompt = fields.messages or fields.prompt or fields.input  # a view into the body: copied only when hashed
    info = RequestInfo(
        request_id=request_id,
        session_id=who.session_id,
        arrived_at=core.clock(),
        tenant_id=who.tenant_id,
        agent_type=who.agent_type,
        model=fields.model,
        prompt_chars=len(body),
        prompt_tokens=estimated_tokens(prompt),
        prefix_hashes=prefix_hashes(bytes(prompt)) if core.policy.wants_prefix_hashes else (),
        stream=fields.stream,
        session_inferred=who.session_inferred,
    )
    add_usage = (
        fields.stream
        and path in USAGE_OPTION_ROUTES
        and not (fields.stream_options is not None and fields.stream_options.include_usage)
    )
    return _Call(app, shared, path, headers, downstream, info, who, body, add_usage)


class _Call:
    """One call's life after parsing: decisions, attempts, the relay, and its single finish report."""

    def __init__(
        self,
        app: web.Application,
        shared: _Shared,
        path: str,
        headers: Mapping[str, str],
        downstream: forward.Downstream | InlineDownstream,
        info: RequestInfo,
        who: Identity,
        body: bytes,
        add_usage: bool,
    ) -> None:
        self.path, self.headers, self.downstream = path, headers, downstream
        # A streamed chat/completions call that did not ask for usage: ask upstream, strip it downstream.
        self.add_usage = add_usage
        self.app = app
        self.shared = shared
        self.core, self.gate, self.metrics = shared.core, shared.gate, shared.metrics
        self.config = shared.config
        self.info = info
        self.who = who
        self.body = body
        self.failures = 0
        self.last_5xx: tuple[int, dict[str, str], bytes] | None = None
        self.usage: Usage | None = None  # what the answer reported, for the finish report
        self.finished = False
        self.started = 0.0
        # the inline relay's dispatch: the one decision, and whether it went with a priority
        self.dispatch: Dispatch | None = None
        self.with_priority = False

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
        gate, rid = self.gate, self.info.request_id
        pending = gate.expect(rid)
        gate.apply(decisions)
        try:
            decision = await pending
        finally:
            gate.forget(rid)
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
                self._hand_over(downstream, lambda: self._dispatch(self._decided(decisions)))
                return
            decision = found
            if not isinstance(decision, Dispatch):  # refused at once (a full queue under overload)
                self._no_replica_left(decision)  # raises the refusal (the finish is reported below)
                return
            headers, sent, with_priority = self._request_for(decision)
            pool = self.shared.pool
            pooled = pool.send_pooled(decision.replica_id + self.path, sent, headers)
            if pooled is None:  # no idle connection: connecting is the coroutine path's
                self._hand_over(downstream, lambda: self._dispatch(decision))
                return
            self.dispatch, self.with_priority = decision, with_priority
            config = self.config
            InlineRelay(
                self,
                downstream,
                pool,
                *pooled,
                {"X-Saga-Replica": decision.replica_id, "X-Session-ID": self.who.session_id},
                config.first_byte_timeout_s,
                config.stream_idle_timeout_s,
                collect_answer=self.who.prompt_chain is not None,
                strip_usage=self.add_usage,
                max_answer_bytes=config.max_answer_bytes,
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
        if not isinstance(decision, (Dispatch, Reject)):
            decision = await decision
        attempt = await self._attempts(decision, upstream)
        if isinstance(attempt, Reject):
            self._no_replica_left(attempt)
            return
        if isinstance(attempt, _Answered):
            return
        upstream, dispatch = attempt
        outcome = await forward.relay(
            self.downstream,  # type: ignore[arg-type]  # the fast server's downstream is both kinds
            upstream,
            {"X-Saga-Replica": dispatch.replica_id, "X-Session-ID": self.who.session_id},
            self.first_byte,
            self.config.stream_idle_timeout_s,
            collect_answer=self.who.prompt_chain is not None,
            strip_usage=self.add_usage,
            max_answer_bytes=self.config.max_answer_bytes,
        )
        self._relayed(dispatch, outcome)

    def _relayed(self, decision: Dispatch, outcome: forward.Relayed) -> None:
        metrics = self.metrics
        self.usage = outcome.usage
        self._account(decision.replica_id, outcome)
        metrics.latency.observe(time.perf_counter() - self.started)
        metrics.calls.bump(self.path, str(outcome.status))
        if self.who.prompt_chain is not None and outcome.answer is not None and outcome.status == 200:
            self.shared.chains.remember(self.who.prompt_chain, outcome.answer, self.who.session_id)
        if outcome.response_id is not None:
            self.shared.chains.remember_response(outcome.response_id, self.who.session_id)

    def _hung_up(self) -> None:
        self.metrics.client_disconnects.inc()
        self.metrics.errors.labels("client_disconnect").inc()
        log.info("client hung up on %s before its answer ended", self.info.request_id)

    def _finish(self, cancelled: bool) -> None:
        if self.finished:
            return
        self.finished = True
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

    def first_byte(self) -> None:
        self.metrics.ttft.observe(time.perf_counter() - self.started)
        self.gate.apply(self.core.first_token(self.info.request_id))

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
            reason = f"no answer within {self.config.first_byte_timeout_s:g} s"
            self._note_failure(replica, reason, "upstream_timeout")
            raise ProxyError(504, f"the replica did not answer in time: {reason}", code="upstream_timeout")
        if failure is not None:
            decision = await self._failed(replica, failure, "upstream_unreachable")
        await self._dispatch(decision, upstream)

    def _request_for(self, decision: Dispatch) -> tuple[dict[str, str], bytes, bool]:
        """The headers and body sent to the decision's replica, and whether they carry a priority."""
        extra = {"X-Session-ID": self.who.session_id}
        with_priority = decision.priority is not None and not self.shared.no_priority.refuses(
            decision.replica_id
        )
        if with_priority:
            extra["X-Vllm-Priority"] = str(decision.priority)
        headers = forward.forwarded_headers(self.headers, extra)
        forward.upstream_auth(headers, self.config)
        sent = self.body
        if self.add_usage:
            sent = asking_for_usage(sent)
        if decision.retain_ttl_s is not None:
            sent = with_retention(sent, self.who.session_id, decision.retain_ttl_s, decision.retain_priority)
        return headers, sent, with_priority

    async def _attempts(
        self, decision: Decision, upstream: UpstreamAnswer | None = None
    ) -> tuple[UpstreamAnswer, Dispatch] | Reject | _Answered:
        """Dispatches until a replica answers; the core's Reject when it has no replica left. `upstream`:
        the first dispatch's answer, when it was sent already (the inline relay's)."""
        config = self.config
        while isinstance(decision, Dispatch):
            replica = decision.replica_id
            if upstream is not None:
                with_priority = self.with_priority
            else:
                headers, sent, with_priority = self._request_for(decision)
                try:
                    upstream = await forward.open_upstream(
                        self.shared.pool,
                        replica + self.path,
                        sent,
                        headers,
                        config.first_byte_timeout_s,
                        config.connect_timeout_s,
                    )
                except forward.UpstreamUnreachable as e:
                    decision = await self._failed(replica, f"unreachable ({e})", "upstream_unreachable")
                    continue
                except forward.UpstreamTimeout as e:
                    self._note_failure(replica, str(e), "upstream_timeout")
                    raise ProxyError(
                        504, f"the replica did not answer in time: {e}", code="upstream_timeout"
                    ) from e
            answered = upstream
            upstream = None
            if answered.status >= 500 and self.failures < config.max_retries:
                self.last_5xx = await self._read_error(answered, replica)
                decision = await self._failed(replica, f"answered {answered.status}", "upstream_5xx")
                continue
            if answered.status == 400 and with_priority:
                status, headers, error_body = await self._read_error(answered, replica)
                if _PRIORITY_OFF in error_body:
                    self.shared.no_priority.remember(replica)
                    log.warning(
                        "replica %s runs without --scheduling-policy priority: its calls go without a "
                        "priority for the next %g s (start vLLM with it for SAGA's ordering)",
                        replica,
                        self.config.priority_reprobe_s,
                        extra=self._log_context(replica),
                    )
                    continue  # the same dispatch again, without the priority
                self.downstream.answer(status, headers, error_body)  # the client's own mistake: relay it
                return _ANSWERED
            return answered, decision
        return decision

    async def _read_error(self, upstream: UpstreamAnswer, replica: str) -> tuple[int, dict[str, str], bytes]:
        try:
            async with asyncio.timeout(self.config.first_byte_timeout_s):
                error_body = await upstream.read(_MAX_ERROR_BODY)
        except (BodyFailed, TimeoutError):
            error_body = b""
        finally:
            upstream.close()
        return (
            upstream.status,
            forward.forwarded_headers(upstream.headers, {"X-Saga-Replica": replica}),
            error_body,
        )

    def _log_context(self, replica: str) -> dict[str, str]:
        info = self.info
        return {"request_id": info.request_id, "session_id": info.session_id, "replica_id": replica}

    def _note_failure(self, replica: str, reason: str, cause: str) -> bool:
        metrics = self.metrics
        metrics.upstream_failures.labels(replica).inc()
        metrics.errors.labels(cause).inc()
        opened = self.shared.guards[replica].call_failed(self.core.clock())
        if opened:
            log.warning("circuit breaker for replica %s opened after repeated failures", replica)
            # Out of rotation now, not at the next probe round: calls after a mid-answer failure would
            # otherwise keep going to it (the health loop keeps it down while the breaker is open).
            self.gate.apply(self.core.replica_stats(down_stats(replica)))
        return opened

    async def _failed(self, replica: str, reason: str, cause: str) -> Decision:
        """A dispatch failed before any byte reached the client: mark the replica down, maybe retry."""
        core, gate = self.core, self.gate
        self.failures += 1
        self._note_failure(replica, reason, cause)
        retry = self.failures <= self.config.max_retries
        log.warning(
            "replica %s marked down: call %s %s%s",
            replica,
            self.info.request_id,
            reason,
            "; retrying on another replica" if retry else "",
            extra=self._log_context(replica),
        )
        if not retry:
            gate.apply(core.replica_stats(down_stats(replica)))
            raise ProxyError(502, f"replica failed: {reason}", code="upstream_error")
        self.metrics.retries.inc()
        decision = await self._decided(core.dispatch_failed(self.info.request_id))
        gate.apply(core.replica_stats(down_stats(replica)))
        return decision

    def _no_replica_left(self, decision: Reject) -> None:
        if self.last_5xx is not None:  # every replica failed: relay the last replica error as it was
            status, headers, body = self.last_5xx
            self.downstream.answer(status, headers, body)
            return
        self.metrics.rejected.inc()
        self.metrics.errors.labels("rejected").inc()
        headers = {}
        if decision.status in (429, 503):
            headers["Retry-After"] = str(max(1, math.ceil(self.config.retry_after_s)))
        code = "queue_full" if decision.status == 429 else "no_replica"
        raise ProxyError(
            decision.status, f"request not routed: {decision.reason}", code=code, headers=headers
        )

    def _account(self, replica: str, outcome: forward.Relayed) -> None:
        metrics = self.metrics
        metrics.responses.bump(replica, str(outcome.status))
        if outcome.upstream_error is not None:
            self._note_failure(replica, outcome.upstream_error, "upstream_mid_answer")
            log.warning(
                "replica %s failed mid-answer to %s: %s",
                replica,
                self.info.request_id,
                outcome.upstream_error,
                extra=self._log_context(replica),
            )
        elif outcome.too_large:  # the replica answered; the proxy would not hold that much
            metrics.errors.labels("upstream_answer_too_large").inc()
            log.warning(
                "replica %s answered %s with more than max_answer_bytes (%d): answered 502 instead",
                replica,
                self.info.request_id,
                self.config.max_answer_bytes,
                extra=self._log_context(replica),
            )
        elif outcome.status < 500:
            self.shared.guards[replica].call_succeeded()
        else:
            self._note_failure(replica, f"answered {outcome.status}", "upstream_5xx")
        if outcome.client_gone:
            metrics.client_disconnects.inc()
            metrics.errors.labels("client_disconnect").inc()
            log.info("client hung up on %s before its answer ended", self.info.request_id)


async def _raising(error: Exception) -> None:
    raise error


def add_routes(app: web.Application) -> None:
    app[TENANT_SOURCES] = app[CONFIG].tenants.header_sources()
    app[SHARED] = _Shared(app)
    for path in CALL_ROUTES:
        app.router.add_post(path, proxy_call)
