"""An async agent client: runs agent workflows against any OpenAI-compatible URL and records what happened.

A workflow is a real conversation. Each step sends every message so far, appends the model's answer and,
after sleeping for the tool's time, the tool's observation; so the prompt grows and its prefix repeats, as
with a real coding or browser agent. Times are recorded in the workload's time: wall seconds x
`time_scale`, where `time_scale` is the speed-up of simulated replicas (1 for real ones); tool sleeps are
divided by it.
"""

from __future__ import annotations

import asyncio
import random
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


class _Answer(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None


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
    ) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.time_scale = time_scale
        self.stream = stream

    def now(self) -> float:
        return time.monotonic() * self.time_scale

    async def run_task(self, task: AgentTask) -> TaskRecord:
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
        for i, step in enumerate(task.steps):
            call, answer = await self._call(i, messages, step, headers)
            record.calls.append(call)
            if call.error is not None:
                break  # an agent cannot go on without the answer
            await asyncio.sleep(step.tool_time_s / self.time_scale)
            observation = f"[{step.tool_name}] {words(rng, step.observation_tokens)}"
            if task.replace_history:
                messages[1:] = [{"role": "user", "content": observation}]
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

    async def _call(
        self, index: int, messages: list[dict[str, Any]], step: Step, headers: dict[str, str]
    ) -> tuple[CallRecord, str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": step.output_tokens,
            "ignore_eos": True,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        started = self.now()
        call = CallRecord(step=index, started_s=started, latency_s=0.0)
        text = ""
        try:
            async with self.session.post(self.url, data=msgspec.json.encode(body), headers=headers) as resp:
                call.replica = resp.headers.get("X-Saga-Replica", resp.headers.get("X-Replica", ""))
                if resp.status != 200:
                    call.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                elif self.stream:
                    text = await self._read_stream(resp, call, started)
                else:
                    answer = _answer.decode(await resp.read())
                    call.ttft_s = self.now() - started
                    text = answer.choices[0].message.content or "" if answer.choices[0].message else ""
                    _record_usage(call, answer.usage)
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, IndexError) as e:
            call.error = repr(e)
        call.latency_s = self.now() - started
        return call, text

    async def _read_stream(self, resp: aiohttp.ClientResponse, call: CallRecord, started: float) -> str:
        parts: list[str] = []
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            chunk = _answer.decode(payload)
            if call.ttft_s is None:
                call.ttft_s = self.now() - started
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    parts.append(choice.delta.content)
            if chunk.usage is not None:
                _record_usage(call, chunk.usage)
        return "".join(parts)


def _record_usage(call: CallRecord, usage: _Usage | None) -> None:
    if usage is None:
        return
    call.prompt_tokens = usage.prompt_tokens
    call.completion_tokens = usage.completion_tokens
    details = usage.prompt_tokens_details or {}
    call.cached_tokens = int(details.get("cached_tokens") or 0)
