"""A call's dispatch attempts (proxy/call.py's `Call`): send, retry elsewhere, account for each outcome.

Contract:
- `attempts` dispatches until a replica answers: a connect error or a 5xx before any byte reached the client
  asks the core again (`dispatch_failed`, which rebinds the session, never to a replica the call tried), up
  to `max_retries` times. A connect error marks the replica down; a first-byte timeout is a 504 (the replica
  may be working on it: not retried); a 400 to a request priority from a replica without vLLM's priority
  scheduling sends the call again without one. It returns the answer to relay, the core's Reject when no
  replica is left, or `ANSWERED` when it relayed the replica's own error itself.
- A whole answer whose body breaks off or stalls before any of it reached the client, or a stream before
  its first whole event (its head waits for it), is asked of another replica the same way while retries are
  left (`cut_short`; the replica is not marked down, and counts toward its breaker as a 5xx does).
- Circuit breakers: a connect error, a first-byte timeout and a stream's failure mid-answer count toward
  the replica's breaker at once; a whole answer cut short (none of it sent) counts as a 5xx does. A 5xx
  before any byte may be the request's fault (one that crashes the engine): the replica is kept in
  `Call.refused` and counts only once another replica answered the same call, whole, with a status below
  500 (`account`, when that answer is relayed); a call whose every answer was a 5xx (relayed as
  it was, or with no replica left), or that ends otherwise (a 504, a 502, its client gone), counts its 5xx
  toward no breaker, so a request every replica refuses does not take them all out (nor does any 5xx with
  one replica, or with `max_retries` 0). `Call._finish` drops what is left, so each is settled once.
- `no_replica_left` relays the last replica error as it was, or raises the refusal (a 429 from a full queue
  and a 503 carry `Retry-After`).
- `account` counts a relayed answer once: the replica's circuit breaker, the error causes, the logs.
- Counting: every failed attempt on a replica is one `saga_upstream_failures_total{replica, cause}`
  (`note_failure`, or `failed` for a 5xx), at once, whether or not a retry saved the call; a call that
  failed for its client is one `saga_errors_total{cause}`: the code of the proxy's own error answer (counted
  where it is written), or here `upstream_5xx` (a replica's 5xx relayed as it was), `upstream_mid_answer`
  (the replica failed after its answer began), `upstream_answer_too_large` or `client_disconnect`. So no
  cause is counted twice for a call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy import forward
from proxy.context import down_stats
from proxy.errors import ProxyError, refusal_body, retry_after
from proxy.scheduler import Decision, Dispatch, Reject
from proxy.upstream_pool import AnswerTooLarge, BodyFailed, UpstreamAnswer

if TYPE_CHECKING:
    from proxy.call import Call

log = logging.getLogger("saga.proxy")

# What vLLM answers (400) to a request priority when it runs without `--scheduling-policy priority`
_PRIORITY_OFF = b"Priority scheduling is not enabled"


class Answered:
    """`attempts` relayed the replica's error answer to the client itself: nothing is left to relay."""


ANSWERED = Answered()


async def attempts(
    call: Call, decision: Decision, upstream: UpstreamAnswer | None = None
) -> tuple[UpstreamAnswer, Dispatch] | Reject | Answered:
    """Dispatches until a replica answers; the core's Reject when it has no replica left. `upstream`:
    the first dispatch's answer, when it was sent already (the inline relay's)."""
    config = call.config
    while isinstance(decision, Dispatch):
        replica = decision.replica_id
        if upstream is not None:
            with_priority = call.with_priority
        else:
            headers, sent, with_priority = call.request_for(decision)
            try:
                upstream = await forward.open_upstream(
                    call.shared.pool,
                    replica + call.path,
                    sent,
                    headers,
                    config.first_byte_timeout_s,
                    config.connect_timeout_s,
                )
            except forward.UpstreamUnreachable as e:
                decision = await failed(call, replica, f"unreachable ({e})", "upstream_unreachable")
                continue
            except forward.UpstreamTimeout as late:  # one name per exception type: mypyc types it once
                note_failure(call, replica, str(late), "upstream_timeout")
                raise ProxyError(
                    504, f"the replica did not answer in time: {late}", code="upstream_timeout"
                ) from late
        answered = upstream
        upstream = None
        if answered.status >= 500 and call.failures < config.max_retries:
            status, headers, error_body = await read_error(call, answered, replica)
            call.last_5xx = (replica, status, headers, error_body)
            decision = await failed(
                call, replica, f"answered {answered.status}", "upstream_5xx", replica_down=False
            )
            continue
        if answered.status == 400 and with_priority:
            status, headers, error_body = await read_error(call, answered, replica)
            if _PRIORITY_OFF in error_body:
                call.shared.no_priority.remember(replica)
                log.warning(
                    "replica %s runs without --scheduling-policy priority: its calls go without a "
                    "priority for the next %g s (start vLLM with it for SAGA's ordering)",
                    replica,
                    call.config.priority_reprobe_s,
                    extra=log_context(call, replica),
                )
                continue  # the same dispatch again, without the priority
            if call.refused is not None:  # it answered what others failed with a 5xx: theirs count
                count_refused(call)
            if status != answered.status:  # its error answer was over max_answer_bytes, or was cut short
                too_large = b'"upstream_answer_too_large"' in error_body
                call.metrics.errors.bump("upstream_answer_too_large" if too_large else "upstream_error")
            call.shared.guards[replica].call_succeeded()  # it answered: the client's own mistake
            call.relay_error(replica, status, headers, error_body)
            return ANSWERED
        return answered, decision  # (the 5xx of others count once its answer is relayed whole: `account`)
    return decision


async def read_error(call: Call, upstream: UpstreamAnswer, replica: str) -> tuple[int, dict[str, str], bytes]:
    """The replica's error answer, read whole (up to `max_answer_bytes`, as any whole answer; past it the
    proxy's 502): cut short, it was JSON the client could not parse (vLLM before 0.32 quoted the whole input
    in its 400 to a body it could not validate; a reverse proxy's error page can be long too)."""
    config = call.config
    limit = config.max_answer_bytes
    try:
        async with asyncio.timeout(config.first_byte_timeout_s):
            error_body = await upstream.read(max_bytes=limit, idle_timeout_s=config.stream_idle_timeout_s)
    except (BodyFailed, TimeoutError) as e:  # stalled or cut: the proxy's own error, not an empty "JSON" body
        stalled = isinstance(e, TimeoutError)
        failure = ProxyError(
            502,
            f"the replica answered {upstream.status}, then its error answer "
            + ("stalled (stream_idle_timeout_s)" if stalled else "broke off"),
            code="upstream_error",
        )
        headers = {"Content-Type": "application/json", "X-Saga-Replica": replica}
        return failure.status, headers, refusal_body(call.path, failure)
    except AnswerTooLarge:  # counted if relayed: the caller may retry elsewhere
        too_large = forward.too_large_error(limit)
        headers = {"Content-Type": "application/json", "X-Saga-Replica": replica}
        return too_large.status, headers, refusal_body(call.path, too_large)
    finally:
        upstream.close()
    return (
        upstream.status,
        # (the replica's own X-Session-ID dropped too: `Call.relay_error` sets the proxy's)
        forward.forwarded_headers(upstream.headers, {"X-Saga-Replica": replica}, forward.ANSWER_EXTRA),
        error_body,
    )


def log_context(call: Call, replica: str) -> dict[str, str]:
    info = call.info
    return {"request_id": info.request_id, "session_id": info.session_id, "replica_id": replica}


def note_failure(call: Call, replica: str, reason: str, cause: str) -> bool:
    """A failed attempt that counts toward the replica's breaker at once; True when it opened it."""
    call.metrics.upstream_failures.bump(replica, cause)  # an attempt: the call's own error is counted once
    return breaker_failed(call, replica)


def count_refused(call: Call) -> None:
    """Another replica answered the call without a 5xx: each earlier 5xx counts toward its replica's
    breaker (once: the list is let go)."""
    refused = call.refused
    call.refused = None
    if refused is not None:
        for replica in refused:
            breaker_failed(call, replica)


def breaker_failed(call: Call, replica: str) -> bool:
    opened = call.shared.guards[replica].call_failed(call.core.clock())
    if opened:
        log.warning("circuit breaker for replica %s opened after repeated failures", replica)
        # Out of rotation now, not at the next probe round: calls after a mid-answer failure would
        # otherwise keep going to it (the health loop keeps it down while the breaker is open).
        call.gate.apply(call.core.replica_stats(down_stats(replica)))
    return opened


async def failed(call: Call, replica: str, reason: str, cause: str, *, replica_down: bool = True) -> Decision:
    """A dispatch failed before any byte reached the client: maybe retry elsewhere. `replica_down`: the
    replica could not be reached, so it is out of rotation until a probe succeeds and counts toward its
    breaker now; one that answered a 5xx (`replica_down` False) waits in `Call.refused` (`count_refused`)."""
    core, gate = call.core, call.gate
    call.failures += 1
    opened = False
    if replica_down:
        opened = note_failure(call, replica, reason, cause)
    else:
        call.metrics.upstream_failures.bump(replica, cause)  # the attempt is counted at once all the same
        if call.refused is None:
            call.refused = [replica]
        else:
            call.refused.append(replica)
    what = "marked down" if replica_down or opened else "failed a call"
    if call.failures > call.config.max_retries:
        _log_failed(call, replica, what, reason, "")
        if replica_down:
            gate.apply(core.replica_stats(down_stats(replica)))
        raise ProxyError(502, f"replica failed: {reason}", code="upstream_error")
    return await _elsewhere(call, replica, reason, what, replica_down)


async def cut_short(call: Call, replica: str, reason: str) -> Decision:
    """A whole answer that broke off or stalled before any of it reached the client (asked only while
    `call.failures < max_retries`): the call is asked of another replica (the session rebinds; the replica
    is not marked down: a lone replica's other calls would be refused until its next probe). Retried, the
    cut counts as a 5xx before any byte does: the attempt at once, the replica's breaker only once another
    replica answers the call (one request that every replica cuts took them all out of rotation: the
    forty-seventh session's review). Not retried (no other replica, or one call pinned there), the caller
    answers the 502 of a failure mid-answer, counted as before retries were made (`account`)."""
    call.failures += 1
    decision = await _elsewhere(call, replica, reason, "failed mid-answer", False)
    if isinstance(decision, Dispatch):
        call.metrics.upstream_failures.bump(replica, "upstream_mid_answer")
        if call.refused is None:
            call.refused = [replica]
        else:
            call.refused.append(replica)
    return decision


async def _elsewhere(call: Call, replica: str, reason: str, what: str, replica_down: bool) -> Decision:
    """`failed`'s and `cut_short`'s ask for another replica (the session rebinds), logged."""
    core, gate = call.core, call.gate
    decision = await call._decided(core.dispatch_failed(call.info.request_id, replica_down))
    if replica_down:
        gate.apply(core.replica_stats(down_stats(replica)))
    retried = isinstance(decision, Dispatch)  # else no other replica is left: counted as no retry
    if retried:
        call.metrics.retries.inc()
    then = "; retrying on another replica" if retried else "; no other replica left to retry on"
    _log_failed(call, replica, what, reason, then)
    return decision


def _log_failed(call: Call, replica: str, what: str, reason: str, then: str) -> None:
    log.warning(
        "replica %s %s: call %s %s%s",
        replica,
        what,
        call.info.request_id,
        reason,
        then,
        extra=log_context(call, replica),
    )


def no_replica_left(call: Call, decision: Reject) -> None:
    if call.last_5xx is not None:  # every replica failed: relay the last replica error as it was
        replica, status, headers, body = call.last_5xx
        call.relay_error(replica, status, headers, body)  # (each attempt was counted when it failed)
        call.metrics.errors.bump("upstream_5xx")
        return
    call.metrics.rejected.inc()  # the refusal's code is counted in saga_errors_total when it is answered
    headers = {}
    if decision.status in (429, 503):
        headers["Retry-After"] = retry_after(call.config.retry_after_s)
    code = "queue_full" if decision.status == 429 else "shutting_down" if call.gate.stopping else "no_replica"
    raise ProxyError(decision.status, f"request not routed: {decision.reason}", code=code, headers=headers)


def account(call: Call, replica: str, outcome: forward.Relayed) -> None:
    metrics = call.metrics
    metrics.responses.bump(replica, str(outcome.status))
    if outcome.upstream_error is not None:
        if outcome.whole_cut:  # none of it was sent: a 5xx's rule (the call ends here, answered by none)
            metrics.upstream_failures.bump(replica, "upstream_mid_answer")
        else:
            note_failure(call, replica, outcome.upstream_error, "upstream_mid_answer")
        metrics.errors.bump("upstream_mid_answer")
        log.warning(
            "replica %s failed mid-answer to %s: %s",
            replica,
            call.info.request_id,
            outcome.upstream_error,
            extra=log_context(call, replica),
        )
    elif outcome.too_large:  # the replica answered; the proxy would not hold that much
        metrics.errors.labels("upstream_answer_too_large").inc()
        log.warning(
            "replica %s answered %s with more than max_answer_bytes (%d): answered 502 instead",
            replica,
            call.info.request_id,
            call.config.max_answer_bytes,
            extra=log_context(call, replica),
        )
    elif outcome.status < 500:
        call.shared.guards[replica].call_succeeded()
        if call.refused is not None:  # it answered what others failed (a 5xx, a whole answer cut short)
            count_refused(call)
    else:  # a 5xx relayed: no replica answered the call without one, so it counts toward no breaker
        metrics.upstream_failures.bump(replica, "upstream_5xx")
        metrics.errors.bump("upstream_5xx")
    if outcome.client_gone and call.gate.stopping:  # the proxy cut it at the end of its drain
        metrics.errors.labels("shutting_down").inc()
        log.info("%s ended by the proxy's stop before its answer ended", call.info.request_id)
    elif outcome.client_gone:
        metrics.client_disconnects.inc()
        metrics.errors.labels("client_disconnect").inc()
        log.info("client hung up on %s before its answer ended", call.info.request_id)
