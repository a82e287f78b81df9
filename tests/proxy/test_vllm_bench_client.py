"""vLLM's own benchmark client works through the proxy unchanged (issue 12).

vLLM's multi-turn benchmark (`benchmarks/multi_turn/` in vLLM's repository) is not shipped in the wheel; the
request function its shipped `vllm bench serve` uses is: `vllm/benchmarks/lib/endpoint_request_func.py`,
`async_request_openai_chat_completions` (streamed, `stream_options.include_usage`). This test runs it from
the vLLM environment (`.venv-vllm`, loaded by file path so vLLM itself is not imported) through the proxy in
front of simulated replicas, as a three-turn conversation: every turn must succeed with its tokens and usage
counted, and the conversation must stay on one replica (session inferred by prefix chaining).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import start_fleet

VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"

CLIENT = r"""
import asyncio, importlib.util, json, sys
import aiohttp

spec = importlib.util.find_spec("vllm")
path = spec.submodule_search_locations[0] + "/benchmarks/lib/endpoint_request_func.py"
module_spec = importlib.util.spec_from_file_location("endpoint_request_func", path)
erf = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(erf)

async def main(base):
    messages = [{"role": "system", "content": "You are a coding agent."}]
    turns = []
    async with aiohttp.ClientSession(timeout=erf.AIOHTTP_TIMEOUT) as session:
        for turn in range(3):
            messages.append({"role": "user", "content": f"step {turn}: run the tests and report"})
            request = erf.RequestFuncInput(
                prompt="", api_url=base + "/v1/chat/completions", prompt_len=0, output_len=8,
                model="saga-sim", chat_messages=list(messages),
            )
            out = await erf.async_request_openai_chat_completions(request, session)
            turns.append({"success": out.success, "error": out.error[-500:],
                          "output_tokens": out.output_tokens, "prompt_len": out.prompt_len,
                          "text": out.generated_text})
            messages.append({"role": "assistant", "content": out.generated_text})
    print(json.dumps(turns))

asyncio.run(main(sys.argv[1]))
"""


def _vllm_available() -> bool:
    if not VLLM_PYTHON.exists():
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([str(VLLM_PYTHON), "-c", probe], timeout=60).returncode == 0


@pytest.mark.skipif(not _vllm_available(), reason="vLLM's environment (.venv-vllm) is not installed")
async def test_vllm_bench_request_function_runs_a_conversation_through_the_proxy() -> None:
    fleet = await start_fleet(2, time_scale=200.0)
    try:
        config = ProxyConfig(replicas=fleet.urls, port=0, seed=1, health_interval_s=0.2)
        async with running_proxy(config) as url:
            proc = await asyncio.create_subprocess_exec(
                str(VLLM_PYTHON), "-c", CLIENT, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 120)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            async with aiohttp.ClientSession() as http, http.get(f"{url}/saga/v1/sessions") as r:
                sessions = await r.json()
    finally:
        await fleet.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    turns = json.loads(out)
    assert [t["success"] for t in turns] == [True, True, True], turns
    assert all(t["output_tokens"] > 0 and t["prompt_len"] > 0 and t["text"] for t in turns)
    assert turns[2]["prompt_len"] > turns[0]["prompt_len"]  # the conversation grew
    assert sessions["total"] == 1  # the three turns were recognised as one conversation
