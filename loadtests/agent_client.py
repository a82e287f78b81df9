"""An async agent client: runs agent workflows against any OpenAI-compatible URL and records what happened.

A workflow is a real conversation. Each step sends every message so far, appends the model's answer and,
after sleeping for the tool's time, the tool's observation; so the prompt grows and its prefix repeats, as
with a real coding or browser agent. A step that compacts (`Step.compact_to_tokens`) cuts the conversation to
its first that many tokens (words; see `compact`) before the observation, sent as a user message. Times are
recorded in the workload's time: wall seconds x `time_scale`, where `time_scale` is the speed-up of
simulated replicas (1 for real ones); tool sleeps are divided by it.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import msgspec

from loadtests.tasks import AgentTask, CallRecord, Step, TaskRecord
from loadtests.workloads.text import shared_text, words


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None


class _Error(msgspec.Struct):
    message: str = ""


class _Answer(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None
    error: _Error | None = None  # an error event in a stream (OpenAI's shape)


class _CallFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Failures an OpenAI client retries by default (server errors, rate limits, dropped connections).
_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


_answer = msgspec.json.Decoder(_Answer)


class AgentClient:
    """Runs tasks through one base URL. `stream` chooses SSE answers (TTFT measured) or whole ones."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        model: str = "saga-sim",
        time_scale: float = 1.0,
        stream: bool = False,
        retries: int = 0,
        call_timeout_s: float | None = None,
        end_sessions: bool = False,
    ) -> None:
        """`retries`: attempts after a retryable failure (5xx, 429, a dropped connection, a timeout), as the
        OpenAI client makes, each recorded as its own call; `call_timeout_s`: wall seconds a call may take
        before it counts as hung (error kind "timeout"); `end_sessions`: each task's last call carries
        `X-Session-End: true` (SAGA forgets the session when it ends and counts the task in
        `saga_task_completion_seconds`; other routers pass the header on, which vLLM ignores). Off by
        default: agents seldom say when their task is done, and the benchmarks model those that do not."""
        self.session = session
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.time_scale = time_scale
        self.stream = stream
        self.retries = retries
        self.call_timeout = None if call_timeout_s is None else aiohttp.ClientTimeout(total=call_timeout_s)
        self.end_sessions = end_sessions

    def now(self) -> float:
        return time.monotonic() * self.time_scale

    async def run_task(self, task: AgentTask) -> TaskRecord:
        if any(step.subagents for step in task.steps):
            raise ValueError(f"task {task.session_id!r} spawns subagents: such workloads run in the DES only")
        record = TaskRecord(task.session_id, task.tenant_id, task.agent_type, started_s=self.now())
        rng = random.Random(f"{task.session_id}/{task.seed}")
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": shared_text(task.agent_type, task.system_tokens)},
            {"role": "user", "content": words(rng, task.task_tokens)},
        ]
        headers = {
            "X-Session-ID": task.session_id,
            "X-Tenant-ID": task.tenant_id,
            "X-Agent-Type": task.agent_type,
            "Content-Type": "application/json",
        }
        last = len(task.steps) - 1
        for i, step in enumerate(task.steps):
            if i == last and self.end_sessions:
                headers = {**headers, "X-Session-End": "true"}
            for _attempt in range(self.retries + 1):
                call, answer = await self._call(i, messages, step, headers)
                record.calls.append(call)
                if not _retryable(call):
                    break
            if call.error is not None:
                break  # an agent cannot go on without the answer
            await self._tool_wait(step.tool_time_s / self.time_scale)
            observation = f"[{step.tool_name}] {words(rng, step.observation_tokens)}"
            if task.replace_history:
                messages[1:] = [{"role": "user", "content": observation}]
            elif step.compact_to_tokens is not None:
                messages.append({"role": "assistant", "content": answer})
                compact(messages, step.compact_to_tokens)
                messages.append({"role": "user", "content": observation})
            else:
                # The answer names the tool it called, as an OpenAI tool call; the result answers that call.
                call_id = f"call_{i}"
                function = {"name": step.tool_name, "arguments": "{}"}
                messages.append(
                    {
                        "role": "assistant",
                        "content": answer,
                        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
                    }
                )
                messages.append({"role": "tool", "tool_call_id": call_id, "content": observation})
        record.finished_s = self.now()
        return record

    async def run_all(
        self,
        tasks: Sequence[AgentTask],
        concurrency: int | None = None,
        on_task_done: Callable[[], None] | None = None,
    ) -> list[TaskRecord]:
        """Runs every task. Tasks with `arrival_s` start at that workload time after the call (open loop);
        the others start as soon as fewer than `concurrency` tasks run (closed loop; all at once if None)."""
        limit = asyncio.Semaphore(concurrency or len(tasks) or 1)
        start = self.now()

        async def run(task: AgentTask) -> TaskRecord:
            record = await self.run_task(task)
            if on_task_done is not None:
                on_task_done()
            return record

        async def bounded(task: AgentTask) -> TaskRecord:
            if task.arrival_s is not None:
                await asyncio.sleep(max(0.0, start + task.arrival_s - self.now()) / self.time_scale)
                return await run(task)
            async with limit:
                return await run(task)

        return list(await asyncio.gather(*(bounded(t) for t in tasks)))

    async def _tool_wait(self, seconds: float) -> None:
        """The tool's time, in wall seconds (a hook: the Locust client waits with gevent)."""
        await asyncio.sleep(seconds)

    def _request_body(self, messages: list[dict[str, Any]], step: Step) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": step.output_tokens,
            "ignore_eos": True,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _call(
        self, index: int, messages: list[dict[str, Any]], step: Step, headers: dict[str, str]
    ) -> tuple[CallRecord, str]:
        body = self._request_body(messages, step)
        started = self.now()
        call = CallRecord(step=index, started_s=started, latency_s=0.0)
        text = ""
        data = msgspec.json.encode(body)
        try:
            post = self.session.post(self.url, data=data, headers=headers, timeout=self.call_timeout)
            async with post as resp:
                call.status = resp.status
                call.replica = resp.headers.get("X-Saga-Replica", resp.headers.get("X-Replica", ""))
                if resp.status != 200:
                    call.error_kind = "http"
                    call.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                elif self.stream:
                    text = await self._read_stream(resp, call, started)
                else:
                    # a whole answer's first token is not seen: ttft_s stays None (reports count its
                    # latency as its TTFT, and do not split it into prefill and decode)
                    answer = _answer.decode(await resp.read())
                    text = answer.choices[0].message.content or "" if answer.choices[0].message else ""
                    _record_usage(call, answer.usage)
        except _CallFailed as e:
            call.error_kind, call.error = e.kind, str(e)
        except TimeoutError as e:
            call.error_kind, call.error = "timeout", repr(e)
        except aiohttp.ClientError as e:
            call.error_kind, call.error = "disconnected", repr(e)
        except (msgspec.DecodeError, IndexError) as e:
            call.error_kind, call.error = "bad_answer", repr(e)
        call.latency_s = self.now() - started
        return call, text

    async def _read_stream(self, resp: aiohttp.ClientResponse, call: CallRecord, started: float) -> str:
        reader = StreamReader(call, started, self.now)
        async for line in resp.content:
            if reader.feed(line):
                break
        return reader.finish()


class StreamReader:
    """One streamed answer's SSE lines, fed as they arrive (by any HTTP client): records TTFT and usage on
    `call`, collects the text; `finish()` returns it, or raises `_CallFailed` for an error event or a stream
    that ended without `[DONE]`."""

    def __init__(self, call: CallRecord, started: float, now: Callable[[], float]) -> None:
        self.call = call
        self.started = started
        self.now = now
        self.parts: list[str] = []
        self.done = False

    def feed(self, line: bytes) -> bool:
        """Take one line; True once the stream's end event came."""
        if not line.startswith(b"data:"):
            return False
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return True
        chunk = _answer.decode(payload)
        if chunk.error is not None:
            raise _CallFailed("stream_error", f"error event: {chunk.error.message[:200]}")
        if self.call.ttft_s is None:
            self.call.ttft_s = self.now() - self.started
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                self.parts.append(choice.delta.content)
        if chunk.usage is not None:
            _record_usage(self.call, chunk.usage)
        return False

    def finish(self) -> str:
        if not self.done:
            raise _CallFailed("disconnected", "the stream ended without [DONE]")
        return "".join(self.parts)


def _retryable(call: CallRecord) -> bool:
    if call.error_kind in ("disconnected", "timeout"):
        return True
    return call.error_kind == "http" and call.status in _RETRYABLE_STATUS


def compact(messages: list[dict[str, Any]], num_tokens: int) -> None:
    """Keep the conversation's first `num_tokens` tokens, counting a word as a token (the simulated
    tokenizer's rule; approximate for a real one, and the chat template's few tokens are not counted): whole
    messages while they fit, then the first words of the next one, cut at a word's end so the rendered text
    stays a prefix of the old rendering up to the cut (an assistant message cut there loses its tool calls,
    whose results are gone)."""
    left = num_tokens
    for i, message in enumerate(messages):
        content = message.get("content") or ""
        ends = [m.end() for m in _WORD.finditer(content)]
        if len(ends) < left or (len(ends) == left and "tool_calls" not in message):
            left -= len(ends)
            continue
        kept = dict(message, content=content[: ends[left - 1]] if left else "")
        kept.pop("tool_calls", None)
        messages[i:] = [kept] if kept["content"] or kept["role"] == "tool" else []
        return


_WORD = re.compile(r"\S+")


def _record_usage(call: CallRecord, usage: _Usage | None) -> None:
    if usage is None:
        return
    call.prompt_tokens = usage.prompt_tokens
    call.completion_tokens = usage.completion_tokens
    details = usage.prompt_tokens_details or {}
    call.cached_tokens = int(details.get("cached_tokens") or 0)
