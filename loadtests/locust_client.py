"""The agent client for Locust: `loadtests.agent_client.AgentClient`'s conversation, over gevent.

Contract: `LocustAgentClient.run_task_sync(task)` runs one whole agent task exactly as `AgentClient.run_task`
renders it (the same messages, headers, request bodies and tool waits: it *is* that coroutine), but each
call is a blocking `requests` call and each tool wait a `gevent.sleep`, both of which yield to other Locust
users under gevent's monkey-patching. The coroutine therefore never suspends on an asyncio future and is
driven to completion with one `send(None)`; if it ever did suspend, `run_task_sync` raises RuntimeError
rather than hang. `on_call(record, headers)` is called as each call ends, so Locust can report it at once.
Times are workload times (wall seconds x `time_scale`), as in AgentClient; `request_timeout_s` too: the
longest a call may take, its whole answer read (a streamed one included), else it fails as a timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import gevent  # type: ignore[import-untyped]
import msgspec
import requests

from loadtests.agent_client import AgentClient, StreamReader, _answer, _CallFailed, _record_usage
from loadtests.tasks import AgentTask, CallRecord, Step, TaskRecord

CallHook = Callable[[CallRecord, dict[str, str]], None]


class LocustAgentClient(AgentClient):
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        time_scale: float,
        stream: bool,
        request_timeout_s: float,
        on_call: CallHook | None = None,
        end_sessions: bool = False,
    ) -> None:
        # The aiohttp session is never used: `_call` is replaced below.
        super().__init__(
            cast(aiohttp.ClientSession, None),
            base_url,
            model=model,
            time_scale=time_scale,
            stream=stream,
            end_sessions=end_sessions,
        )
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.request_timeout_s = request_timeout_s
        self.on_call = on_call

    def run_task_sync(self, task: AgentTask) -> TaskRecord:
        coroutine = self.run_task(task)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return cast(TaskRecord, done.value)
        coroutine.close()
        raise RuntimeError("the agent task awaited an asyncio future under gevent")

    def close(self) -> None:
        self.http.close()

    def end_session(self, session_id: str) -> None:
        """Ends a session whose task stopped before its last call (a failed call, the user stopped), by
        SAGA's `POST /saga/v1/sessions/{id}/end`: best effort (another router answers 404; a proxy with an
        `admin_token`, 401; with `api_keys`, the id is not the proxy's own name for it), never raising."""
        url = f"{self.base_url}/saga/v1/sessions/{quote(session_id, safe='')}/end"
        with contextlib.suppress(requests.RequestException, gevent.Timeout), gevent.Timeout(5):
            self.http.post(url, timeout=5).close()

    async def _tool_wait(self, seconds: float) -> None:
        gevent.sleep(seconds)

    async def _call(
        self, index: int, messages: list[dict[str, Any]], step: Step, headers: dict[str, str]
    ) -> tuple[CallRecord, str]:
        started = self.now()
        call = CallRecord(step=index, started_s=started, latency_s=0.0)
        text = ""
        # The whole call's limit, in wall seconds (`request_timeout_s` is workload time, as every time here):
        # requests' own timeout bounds each read alone, so a stream that kept coming never ran out of it.
        wall_limit = self.request_timeout_s / self.time_scale
        deadline = gevent.Timeout(wall_limit)
        deadline.start()
        try:
            with self.http.post(
                self.url,
                data=msgspec.json.encode(self._request_body(messages, step)),
                headers=headers,
                stream=self.stream,
                timeout=wall_limit,
            ) as resp:
                call.status = resp.status_code
                call.replica = resp.headers.get("X-Saga-Replica", resp.headers.get("X-Replica", ""))
                if resp.status_code != 200:
                    call.error_kind = "http"
                    call.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                elif self.stream:
                    reader = StreamReader(call, started, self.now)
                    for line in _lines(resp):
                        if reader.feed(line):
                            break
                    text = reader.finish()
                else:
                    answer = _answer.decode(resp.content)
                    call.ttft_s = self.now() - started
                    message = answer.choices[0].message
                    text = (message.content or "") if message else ""
                    _record_usage(call, answer.usage)
        except _CallFailed as e:
            call.error_kind, call.error = e.kind, str(e)
        except requests.Timeout as e:
            call.error_kind, call.error = "timeout", repr(e)
        except requests.RequestException as e:
            call.error_kind, call.error = "disconnected", repr(e)
        except (msgspec.DecodeError, IndexError) as e:
            call.error_kind, call.error = "bad_answer", repr(e)
        except gevent.Timeout as e:
            if e is not deadline:
                raise
            call.error_kind = "timeout"
            call.error = f"no whole answer within --request-timeout ({self.request_timeout_s:g} s)"
        finally:
            deadline.close()
        call.latency_s = self.now() - started
        if self.on_call is not None:
            self.on_call(call, headers)
        return call, text


def _lines(resp: requests.Response) -> Iterator[bytes]:
    """The response's lines as its chunks arrive (requests' `iter_lines` waits for fixed-size blocks)."""
    pending = b""
    for chunk in resp.iter_content(chunk_size=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending
