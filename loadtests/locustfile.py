"""Agent-shaped load for Locust: users that run whole agent tasks against any OpenAI-compatible endpoint.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000               # web UI
    locust -f loadtests/locustfile.py --headless -u 16 -r 16 -t 5m --host URL    # headless
    locust -f loadtests/locustfile.py SweAgent --tenant-mix tiers --shape burst ...

Each user runs agent tasks from `loadtests/workloads` one after another (closed loop), each a growing
conversation with tool waits between its calls and the session, tenant and agent-type headers a router
schedules by (the rendering is `loadtests.agent_client.AgentClient`'s own, via `loadtests.locust_client`).
What Locust reports (docs/loadtesting.md explains how to read it):
- `chat <tenant>/<agent type>`: every LLM call, response time = the call's latency (last byte);
- `ttft <tenant>/<agent type>`: every successful call's time to first token (streaming; `--no-stream`:
  equal to the latency);
- `agent_task <tenant>/<agent type>`: every finished task, response time = its completion time (first call
  sent to last answer, tool waits included), response length = its number of calls;
- `agent_task_failed <tenant>/<agent type>`: every task that ended at a failed call (an agent cannot go on
  without the answer), a failure, response time = how long it ran (kept apart from the completion times).
Times are workload times: wall time x `--time-scale` (1 against real vLLM). Options: loadtests/
locust_options.py; shapes (`--shape ramp|step|burst`): loadtests/locust_shapes.py.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar

import gevent  # type: ignore[import-untyped]
from locust import LoadTestShape, User, constant, events, task

from loadtests import locust_shapes
from loadtests.locust_client import LocustAgentClient
from loadtests.locust_options import AUTO, LocustOptions, TaskSource, add_options, parse_tenant_mix
from loadtests.tasks import CallRecord, TaskRecord
from loadtests.workloads.catalog import TenantStream

_user_numbers = iter(range(1 << 62))


class AgentUser(User):
    """Runs agent tasks of `workload` (unless `--workload` names one for every user) back to back."""

    abstract = True
    workload: ClassVar[str] = "swe"
    fixed_tenant: ClassVar[str | None] = None  # a tenant of its own instead of `--tenant-mix`
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = LocustOptions.of(self.environment)
        if not self.host:
            raise ValueError("the agent locustfile needs --host (the OpenAI-compatible base URL)")
        workload = self.workload if opts.workload == AUTO else opts.workload
        tenants = parse_tenant_mix(opts.tenant_mix)
        if self.fixed_tenant is not None:
            tenants = [TenantStream(self.fixed_tenant, 1.0, "standard", workload)]
        self.source = TaskSource(
            workload, tenants, seed=opts.agent_seed, user_key=f"{type(self).__name__}-{next(_user_numbers)}"
        )
        self.agent = LocustAgentClient(
            self.host,
            model=opts.model,
            time_scale=opts.time_scale,
            stream=not opts.no_stream,
            request_timeout_s=opts.request_timeout,
            on_call=self._report_call,
            end_sessions=not opts.no_session_end,
        )
        self.task_session: str | None = None  # the session of the task in progress

    def on_stop(self) -> None:
        if self.task_session is not None and self.agent.end_sessions:  # stopped mid-task
            self.agent.end_session(self.task_session)
        self.agent.close()

    @task
    def agent_task(self) -> None:
        agent_task = self.source.next()
        self.task_session = agent_task.session_id
        record = self.agent.run_task_sync(agent_task)
        self.task_session = None
        if self.agent.end_sessions and any(c.error is not None for c in record.calls):
            self.agent.end_session(record.session_id)  # it ended before its last call, which ends it
        self._report_task(record)

    def _report_call(self, call: CallRecord, headers: dict[str, str]) -> None:
        name = f"{headers.get('X-Tenant-ID', 'default')}/{headers.get('X-Agent-Type', 'default')}"
        error = RuntimeError(call.error) if call.error is not None else None
        context = {"session": headers.get("X-Session-ID"), "replica": call.replica}
        fire = self.environment.events.request.fire
        fire(
            request_type="chat",
            name=name,
            response_time=call.latency_s * 1000,
            response_length=call.completion_tokens,
            exception=error,
            context={**context, "cached_tokens": call.cached_tokens, "prompt_tokens": call.prompt_tokens},
        )
        if error is None and call.ttft_s is not None:
            fire(
                request_type="ttft",
                name=name,
                response_time=call.ttft_s * 1000,
                response_length=0,
                exception=None,
                context=context,
            )

    def _report_task(self, record: TaskRecord) -> None:
        errors = [c.error for c in record.calls if c.error is not None]
        self.environment.events.request.fire(
            # a failed task on a row of its own: Locust puts a failure's time in its row's statistics, and a
            # task refused at its first call (milliseconds) pulled the completion times down
            request_type="agent_task_failed" if errors else "agent_task",
            name=f"{record.tenant_id}/{record.agent_type}",
            response_time=record.completion_time_s * 1000,
            response_length=len(record.calls),
            # the cause alone (the session is in `context`): Locust groups failures by message, and one row
            # per task (a session id each) made a table that grew without bound and could not be read
            exception=RuntimeError(f"task failed: {errors[0]}") if errors else None,
            context={"session": record.session_id},
        )


class SweAgent(AgentUser):
    """A coding agent (SWE-bench-like): long growing conversations, tool waits of milliseconds to minutes."""

    workload = "swe"


class WebArenaAgent(AgentUser):
    """A browser agent (WebArena-like): ~16 steps, page observations, ~1 s browser actions."""

    workload = "webarena"


class BurstTenantAgent(AgentUser):
    """The bursting tenant of `--shape burst` (tenant `burst`); left out of every other run."""

    workload = "swe"
    fixed_tenant = "burst"


class AgentShape(LoadTestShape):
    """`--shape ramp|step|burst` over Locust's own -u, -r and -t (loadtests/locust_shapes.py); with the
    default `--shape none` it is switched off and Locust runs -u users as usual."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | tuple[int, float, list[type[User]]] | None:
        env = self.runner.environment if self.runner is not None else None
        opts: Any = getattr(env, "parsed_options", None)
        if env is None or opts is None:
            return None
        run_time = opts.run_time or 600  # a shape needs an end; 10 minutes without -t
        classes = {c.__name__: c for c in env.user_classes}
        background = [n for n in classes if n != locust_shapes.BURST_CLASS]
        target = locust_shapes.plan(
            opts.shape,
            self.get_run_time(),  # type: ignore[no-untyped-call]
            users=opts.num_users or 1,
            spawn_rate=opts.spawn_rate or 1.0,
            run_time_s=run_time,
            background=background,
        )
        if target is None or len(target) == 2:
            return target
        users, rate, names = target
        return users, rate, [classes[n] for n in names if n in classes]


def _configure(environment: Any, **_: Any) -> None:
    opts = LocustOptions.of(environment)
    problem = opts.problem()
    if problem is not None:  # at start, as argparse's errors are (before: a traceback through Locust's hook)
        print(f"locust: error: {problem}", file=sys.stderr)
        sys.exit(2)
    if opts.shape == "none":
        environment.shape_class = None
    if getattr(environment.parsed_options, "worker", False):
        # a worker runs what the master's spawns name (its own --shape is the default): it keeps every class
        # (without BurstTenantAgent, each spawn of a distributed burst failed with a KeyError)
        if BurstTenantAgent not in environment.user_classes:
            environment.user_classes.append(BurstTenantAgent)
        return
    classes = list(environment.user_classes)
    if opts.shape != "burst" and len(classes) > 1:
        classes = [c for c in classes if c is not BurstTenantAgent]
    elif opts.shape == "burst" and BurstTenantAgent not in classes:
        classes.append(BurstTenantAgent)  # the burst's own users, also when classes are named (SweAgent)
    environment.user_classes[:] = classes


def _check_run(environment: Any, **_: Any) -> None:
    """Each run's options again as it starts: the web UI's "Custom parameters" skip the checks the command
    line makes (`LocustOptions.problem`). A bad value stops the run at once, saying why (logged, and in the
    web UI's Exceptions tab), instead of running users that all fail."""
    problem = LocustOptions.of(environment).problem()
    runner = environment.runner
    if problem is None or runner is None:
        return
    logging.getLogger("locustfile").error("the run is stopped: %s", problem)
    runner.log_exception("local", f"the run is stopped: {problem}", "")
    gevent.spawn(runner.stop)  # after the start that fired this event, not inside it


events.init_command_line_parser.add_listener(add_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_configure)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_check_run)  # type: ignore[no-untyped-call]
