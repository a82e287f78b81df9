"""Agent workflows in virtual time: the discrete-event counterpart of `loadtests.agent_client`.

Contract:
- Token ids, no text. Every task of one agent type starts with the same `system_tokens` ids (a pure function
  of the agent type and length), then its own prompt (a function of its session id and seed). Each call's
  prompt is the previous prompt + the model's actual output tokens + the tool observation's tokens (with
  `replace_history`: the system prompt + the observation; after a step with `compact_to_tokens`: that many
  leading tokens of the previous prompt + output, then the observation), so a session's prefix repeats
  exactly.
- A `Conversation` keeps the chain hashes of its full blocks as it grows, with the engine's "builtin"
  algorithm and no salt: each block is hashed once per session (the shared system prompt once per agent
  type), so a call passes `prompt_block_hashes` and `prefix_hashes` without rehashing a 50k-token prompt.
- `AgentRun` does no I/O and reads no clock: the cluster tells it when its call was answered or failed; it
  says what to send and when its next call or its end is due.
- Records are `loadtests.agent_client` records in virtual seconds. As with `AgentClient`, a task ends after
  its last step's tool time, or at its first failed call (an agent cannot go on without an answer).
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from typing import cast

import numpy as np

from loadtests.tasks import AgentTask, CallRecord, TaskRecord
from proxy.scheduler.types import PREFIX_CHUNK_TOKENS, RequestInfo
from simulator.block_hash import BlockHash, HashFn, hash_function, none_hash
from simulator.engine_types import RequestOutput, prompt_checksum
from simulator.tokenizer import VOCAB_SIZE

HASH_ALGO = "builtin"
_FIRST_TEXT_ID = 256  # ids below are the tokenizer's special tokens
# Maps 16 random bits (little-endian) to a text token id, as one vectorised look-up.
_ID_OF_U16 = _FIRST_TEXT_ID + np.arange(1 << 16, dtype=np.int64) % (VOCAB_SIZE - _FIRST_TEXT_ID)
_U16_LE = np.dtype("<u2")


def random_token_ids(rng: random.Random, n: int) -> array[int]:
    """`n` text token ids drawn from `rng` (the same on every platform), as 64-bit ints (`array("q")`: a
    conversation's tokens are copied and released as one buffer, not one int object at a time)."""
    ids = array("q")
    ids.frombytes(_ID_OF_U16[np.frombuffer(rng.randbytes(2 * n), dtype=_U16_LE)].astype("=i8").tobytes())
    return ids


class Conversation:
    """A growing prompt (token ids as `array("q")`) and the chain hashes of all its full blocks
    (`len(tokens) // block_size` of them)."""

    __slots__ = ("_block_size", "_hash", "_root", "block_hashes", "checksum", "tokens")

    def __init__(self, tokens: array[int], known_hashes: Sequence[BlockHash], block_size: int) -> None:
        """`known_hashes`: hashes of some leading full blocks of `tokens` (the rest are hashed here)."""
        self.tokens = tokens
        # builtin hashes are 64-bit ints: one buffer, which the engine copies and its pool views as it is
        self.block_hashes: array[int] = array("q", cast("Sequence[int]", known_hashes))
        self._block_size = block_size
        self._hash: HashFn = hash_function(HASH_ALGO)
        self._root = none_hash(HASH_ALGO)
        self._hash_full_blocks()
        self.checksum = prompt_checksum(tokens)  # of `tokens`, kept up to date as it grows

    def extend(
        self,
        new_tokens: Sequence[int],
        known_hashes: Sequence[BlockHash] | None = None,
        *,
        appended: bool = False,
    ) -> None:
        """Append `new_tokens`; `known_hashes`: the chain an engine hashed over these same tokens (the prompt
        it was given, then its output), whose blocks beyond ours are taken instead of hashed again.
        `appended`: the tokens are in `tokens` already (an engine that owned the prompt appended its
        output), only the hashes and the checksum catch up."""
        if not appended:
            self.tokens.extend(new_tokens)
        hashes = self.block_hashes
        if known_hashes is not None and len(known_hashes) > len(hashes):
            end = min(len(known_hashes), len(self.tokens) // self._block_size)
            hashes.extend(cast("Sequence[int]", known_hashes[len(hashes) : end]))
        self._hash_full_blocks()
        self.checksum = prompt_checksum(new_tokens, self.checksum)

    def truncate(self, num_tokens: int) -> None:
        """Keep only the first `num_tokens` tokens (and the hashes of the blocks they fill)."""
        del self.tokens[num_tokens:]
        del self.block_hashes[num_tokens // self._block_size :]
        self.checksum = prompt_checksum(self.tokens)

    def prefix_hashes(self) -> tuple[int, ...]:
        """One chain hash per full PREFIX_CHUNK_TOKENS chunk: the hash of the block that ends the chunk."""
        per_chunk = PREFIX_CHUNK_TOKENS // self._block_size
        return cast("tuple[int, ...]", tuple(self.block_hashes[per_chunk - 1 :: per_chunk]))

    def _hash_full_blocks(self) -> None:
        tokens, hashes, bs, hash_fn = self.tokens, self.block_hashes, self._block_size, self._hash
        k = len(hashes)
        parent = hashes[-1] if k else self._root
        while (k + 1) * bs <= len(tokens):
            parent = hash_fn(parent, tokens[k * bs : (k + 1) * bs], None)
            hashes.append(cast("int", parent))
            k += 1


class PromptSource:
    """Builds each task's first prompt; the shared system prompt of an agent type is made and hashed once."""

    def __init__(self, block_size: int) -> None:
        if PREFIX_CHUNK_TOKENS % block_size:
            raise ValueError(f"block size {block_size} must divide the prefix chunk ({PREFIX_CHUNK_TOKENS})")
        self.block_size = block_size
        self._system: dict[tuple[str, int], Conversation] = {}

    def system_prompt(self, agent_type: str, num_tokens: int) -> Conversation:
        key = (agent_type, num_tokens)
        conv = self._system.get(key)
        if conv is None:
            tokens = random_token_ids(random.Random(f"shared/{agent_type}"), num_tokens)
            conv = self._system[key] = Conversation(tokens, (), self.block_size)
        return conv

    def start(self, task: AgentTask) -> tuple[Conversation, random.Random]:
        """The task's first prompt and the random source of its own tokens (prompt, observations)."""
        system = self.system_prompt(task.agent_type, task.system_tokens)
        rng = random.Random(f"{task.session_id}/{task.seed}")
        tokens = system.tokens + random_token_ids(rng, task.task_tokens)
        return Conversation(tokens, system.block_hashes, self.block_size), rng


class PendingCall:
    """One LLM call from its sending to its end: the request, what came back so far, and its record."""

    __slots__ = (
        "checksum",
        "info",
        "max_tokens",
        "output",
        "prompt",
        "prompt_hashes",
        "record",
        "replica_id",
        "run",
    )

    def __init__(
        self,
        run: AgentRun,
        info: RequestInfo,
        prompt: array[int],
        prompt_hashes: array[int],
        checksum: int,
    ) -> None:
        self.run = run
        self.info = info
        # the conversation's own buffers: it does not change while the call is out, but for the answer's
        # tokens, which the engine that owns the prompt appends (Engine.add_request's `own_prompt`)
        self.prompt = prompt
        self.prompt_hashes = prompt_hashes
        self.checksum = checksum
        self.max_tokens = run.task.steps[len(run.record.calls)].output_tokens
        self.record = CallRecord(
            step=len(run.record.calls), started_s=info.arrived_at, latency_s=0.0, prompt_tokens=len(prompt)
        )
        self.output: list[int] = []
        self.replica_id = ""


class AgentRun:
    """One task being run: its conversation, which step it is at, and its record."""

    __slots__ = ("conversation", "parent", "record", "rng", "task", "waiting")

    def __init__(
        self, task: AgentTask, prompts: PromptSource, now: float, parent: AgentRun | None = None
    ) -> None:
        self.task = task
        self.conversation, self.rng = prompts.start(task)
        self.record = TaskRecord(task.session_id, task.tenant_id, task.agent_type, started_s=now)
        self.parent = parent  # the run that spawned this subagent's
        self.waiting = 0  # what its next call waits for: its tool's time and the subagents it spawned

    def next_call(self, now: float) -> PendingCall:
        """The call of the current step, sent at `now` (the prompt is the conversation's: an engine copies
        what it keeps)."""
        task, conv = self.task, self.conversation
        session, parent = task.session_id, task.parent_session
        if task.merged:  # as a proxy that does not tell subagents apart: one session with its parent
            session, parent = parent, ""
        info = RequestInfo(
            request_id=f"{task.session_id}/{len(self.record.calls)}",
            session_id=session,
            parent_session=parent,
            arrived_at=now,
            tenant_id=task.tenant_id,
            agent_type=task.agent_type,
            prompt_tokens=len(conv.tokens),
            prefix_hashes=conv.prefix_hashes(),
            tool_names=self._tool_results(),
        )
        return PendingCall(self, info, conv.tokens, conv.block_hashes, conv.checksum)

    def _tool_results(self) -> tuple[str, ...]:
        """The tool whose result the next call carries: the previous step's (none for a person's turn)."""
        done = len(self.record.calls)
        if done == 0 or self.task.replace_history:
            return ()
        name = self.task.steps[done - 1].tool_name
        return (name,) if name else ()

    def answer_tools(self, call: PendingCall) -> tuple[str, tuple[str, ...]]:
        """(finish_reason, tool names) of the call's answer: the step's tool call; `stop` without tools when
        the step hands back to a person (an empty tool name) or is the task's last (an agent's loop ends when
        the model answers without calling a tool)."""
        step = call.record.step
        name = self.task.steps[step].tool_name
        last = step == len(self.task.steps) - 1
        return ("tool_calls", (name,)) if name and not last else ("stop", ())

    def first_token(self, call: PendingCall, now: float) -> None:
        call.record.ttft_s = now - call.record.started_s

    def call_finished(self, call: PendingCall, last: RequestOutput, now: float) -> tuple[float, bool]:
        """Record the answer and grow the conversation; returns (when, another call is due) — when the next
        call is sent, or when the task ends."""
        rec = call.record
        rec.latency_s = now - rec.started_s
        rec.queue_s = last.first_scheduled_time - rec.started_s
        rec.replica = call.replica_id
        if last.usage is not None:
            rec.prompt_tokens = last.usage.prompt_tokens
            rec.completion_tokens = last.usage.completion_tokens
            rec.cached_tokens = last.usage.cached_tokens
        self.record.calls.append(rec)
        step = self.task.steps[rec.step]
        more = len(self.record.calls) < len(self.task.steps)
        conv = self.conversation
        if more:
            observation = random_token_ids(self.rng, step.observation_tokens)
            if self.task.replace_history:
                conv.truncate(self.task.system_tokens)
            else:  # the engine appended the output to the prompt it owned, and hashed the same chain
                conv.extend(call.output, last.block_hashes, appended=True)
                if step.compact_to_tokens is not None:  # the next prompt restarts from the context's start
                    conv.truncate(step.compact_to_tokens)
            conv.extend(observation)
        else:
            del conv.tokens[len(conv.tokens) - len(call.output) :]  # the last answer ends the conversation
            self.record.finished_s = now + step.tool_time_s
        return now + step.tool_time_s, more

    def call_failed(self, call: PendingCall, error: str, now: float) -> None:
        """Record a call that got no answer; the task ends now."""
        call.record.latency_s = now - call.record.started_s
        call.record.error = error
        call.record.replica = call.replica_id
        self.record.calls.append(call.record)
        self.record.finished_s = now
