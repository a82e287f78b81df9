"""An OpenAI Agents SDK agent with a function tool, through the proxy in front of simulated replicas.

The simulated model calls a tool on the first assistant turn after a user message ("auto" tool choice) and
answers after the tool result (simulator/tool_calls.py). The test sees the SDK run the tool with arguments
valid for its schema, and the tool's result sent back to the model in the next request, both with whole and
with streamed answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

agents = pytest.importorskip("agents", reason="openai-agents is not installed (in the test extra)")
from agents import (  # noqa: E402
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, DefaultAsyncHttpxClient  # noqa: E402

from proxy.config import ProxyConfig  # noqa: E402
from proxy.server import running_proxy  # noqa: E402
from simulator.server import start_fleet  # noqa: E402

TIME_SCALE = 200.0
FORECAST = "forecast-7f3a: sunny, 21 degrees"  # the tool's result, recognisable in the next request


@pytest.fixture
async def proxy_url() -> AsyncIterator[str]:
    fleet = await start_fleet(2, time_scale=TIME_SCALE)
    # Health probes time out after their interval: 2 s, as the SDK shares this event loop on a busy machine.
    config = ProxyConfig(
        replicas=fleet.urls, policy="session-affinity", port=0, seed=1, health_interval_s=2.0
    )
    try:
        async with running_proxy(config) as url:
            yield url
    finally:
        await fleet.close()


@pytest.fixture
async def round_robin_proxy_url() -> AsyncIterator[str]:
    """Two replicas behind a policy that alternates them call by call."""
    fleet = await start_fleet(2, time_scale=TIME_SCALE)
    config = ProxyConfig(replicas=fleet.urls, policy="round-robin", port=0, seed=1, health_interval_s=2.0)
    try:
        async with running_proxy(config) as url:
            yield url
    finally:
        await fleet.close()


class Recorder:
    """The JSON bodies the SDK sends to one API path (a request hook of the OpenAI client's HTTP client;
    typed loosely, as openai ships its own httpx fork)."""

    def __init__(self, path: str = "/chat/completions") -> None:
        self.path = path
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: Any) -> None:
        if request.url.path.endswith(self.path):
            self.bodies.append(json.loads(request.content))


@pytest.mark.parametrize("streamed", [False, True])
async def test_agent_calls_the_tool_and_uses_its_result(proxy_url: str, streamed: bool) -> None:
    set_tracing_disabled(True)
    calls: list[tuple[str, int]] = []

    @function_tool
    def get_forecast(city: str, days: int) -> str:
        """The weather forecast for a city.

        Args:
            city: the city's name.
            days: how many days ahead.
        """
        calls.append((city, days))
        return FORECAST

    recorder = Recorder()
    http = DefaultAsyncHttpxClient(event_hooks={"request": [recorder]})
    client = AsyncOpenAI(base_url=f"{proxy_url}/v1", api_key="unused", http_client=http, max_retries=0)
    agent = Agent(
        name="weather",
        instructions="You answer questions about the weather. Use the tool.",
        tools=[get_forecast],
        model=OpenAIChatCompletionsModel(model="saga-sim", openai_client=client),
    )
    try:
        if streamed:
            run = Runner.run_streamed(agent, "Will it rain in Lisbon this week?", max_turns=4)
            async for _ in run.stream_events():
                pass
            items, output = run.new_items, run.final_output
        else:
            result = await Runner.run(agent, "Will it rain in Lisbon this week?", max_turns=4)
            items, output = result.new_items, result.final_output
    finally:
        await http.aclose()

    (city, days), *more = calls
    assert not more and isinstance(city, str) and city and isinstance(days, int)
    assert [type(i) for i in items if isinstance(i, ToolCallItem | ToolCallOutputItem)] == [
        ToolCallItem,
        ToolCallOutputItem,
    ]
    assert isinstance(output, str) and output  # the model answered in text after the tool's result
    first, second = recorder.bodies  # one tool round, then the answer
    assert first["tools"][0]["function"]["name"] == "get_forecast"
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    (tool_call,) = assistant["tool_calls"]
    assert tool_call["function"]["name"] == "get_forecast"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": city, "days": days}
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == tool_call["id"] and FORECAST in str(tool_message["content"])


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_responses_agent_chaining_its_turns_by_previous_response_id_stays_on_one_replica(
    round_robin_proxy_url: str, streamed: bool
) -> None:
    """The SDK's default model (the Responses API) with `auto_previous_response_id`: each turn names the last
    response instead of resending the conversation, so it must reach the replica that stored that response
    (the proxy pins it: round-robin alone sends the tool round to the other replica, which answers 404)."""
    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_forecast(city: str) -> str:
        """The weather forecast for a city.

        Args:
            city: the city's name.
        """
        calls.append(city)
        return FORECAST

    recorder = Recorder("/responses")
    http = DefaultAsyncHttpxClient(event_hooks={"request": [recorder]})
    client = AsyncOpenAI(
        base_url=f"{round_robin_proxy_url}/v1", api_key="unused", http_client=http, max_retries=0
    )
    agent = Agent(
        name="weather",
        instructions="You answer questions about the weather. Use the tool.",
        tools=[get_forecast],
        model=OpenAIResponsesModel(model="saga-sim", openai_client=client),
    )
    question = "Will it rain in Lisbon this week?"
    try:
        if streamed:
            run = Runner.run_streamed(agent, question, max_turns=4, auto_previous_response_id=True)
            async for _ in run.stream_events():
                pass
            items, output = run.new_items, run.final_output
        else:
            result = await Runner.run(agent, question, max_turns=4, auto_previous_response_id=True)
            items, output = result.new_items, result.final_output
    finally:
        await http.aclose()

    assert len(calls) == 1 and calls[0]
    assert [type(i) for i in items if isinstance(i, ToolCallItem | ToolCallOutputItem)] == [
        ToolCallItem,
        ToolCallOutputItem,
    ]
    assert isinstance(output, str) and output
    first, second = recorder.bodies
    assert "previous_response_id" not in first or first["previous_response_id"] is None
    assert second["previous_response_id"]  # the tool round continues the first response, not resent
    (tool_output,) = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert FORECAST in str(tool_output["output"])
