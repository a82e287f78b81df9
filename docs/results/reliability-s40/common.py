"""The fifth review's helpers: docs/results/reliability-s39/lib.py of the tree at `SAGA_ROOT` (default: this
repository), compiled modules unless PURE=1."""

import asyncio
import json
import os
import sys
import time

ROOT = os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
os.environ.setdefault("SAGA_ROOT", ROOT)
sys.path.insert(0, os.path.join(ROOT, "docs/results/reliability-s39"))
import lib  # noqa: E402

if os.environ.get("PURE") != "1":
    lib.ENV.pop("SAGA_PURE_PYTHON", None)
import aiohttp  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": n,
            "parameters": {"type": "object", "properties": {"p": {"type": "string"}}, "required": ["p"]},
        },
    }
    for n in ("read_file", "run_tests")
]


async def agent_call(
    s,
    base,
    sid,
    msgs,
    *,
    agent="coder",
    tool="read_file",
    max_tokens=8,
    end=False,
    extra=None,
    timeout=60,  # noqa: ASYNC109 (the client's own bound)
    model="saga-sim",
):
    h = {"X-Session-ID": sid, "X-Agent-Type": agent}
    if end:
        h["X-Session-End"] = "true"
    h.update(extra or {})
    body = {
        "model": model,
        "messages": msgs,
        "max_tokens": max_tokens,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": tool}},
    }
    t0 = time.time()
    try:
        async with s.post(
            f"{base}/v1/chat/completions", json=body, headers=h, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            txt = await r.text()
            return r.status, time.time() - t0, txt, dict(r.headers)
    except Exception as e:
        return f"err:{type(e).__name__}", time.time() - t0, str(e), {}


def next_msgs(msgs, answer_text):
    """Append the assistant's tool call and a tool result (an agent loop)."""
    try:
        m = json.loads(answer_text)["choices"][0]["message"]
    except Exception:
        return [*msgs, {"role": "user", "content": "go on"}]
    out = [*msgs, {"role": "assistant", "content": m.get("content"), "tool_calls": m.get("tool_calls")}]
    for tc in m.get("tool_calls") or []:
        out.append({"role": "tool", "tool_call_id": tc["id"], "content": "result " * 20})
    return out


async def long_direct(s, url, words, tag, max_tokens=1500, timeout=120, priority=None):  # noqa: ASYNC109
    """A call sent to a replica directly (another client of the fleet), decoding `max_tokens` tokens."""
    body = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": lib.prompt(words, tag)}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    if priority is not None:
        body["priority"] = priority
    try:
        async with s.post(
            f"{url}/v1/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            return r.status, await r.text()
    except Exception as e:
        return f"err:{type(e).__name__}", ""


def run_with_proxy(main, sim_port: int, replicas: int, blocks: int, proxy_port: int, extra=()) -> None:
    """`main()` against `saga serve` on `proxy_port` (health every 0.2 s, then `extra`) in front of `replicas`
    simulated ones of `blocks` KV blocks each on `sim_port`..; both stopped after, whatever happens."""
    sims = lib.start_sims(sim_port, replicas, blocks)
    urls = [f"http://127.0.0.1:{sim_port + i}" for i in range(replicas)]
    proxy = lib.start_proxy(proxy_port, urls, ["--health-interval-s", "0.2", *extra])
    try:
        asyncio.run(main())
    finally:
        lib.stop(proxy)
        lib.stop(sims)
