# ruff: noqa
"""Sans-IO (no processes needed): a session ended (X-Session-End on one of its parallel calls, or the admin
API's end) while another call of it still runs: that call's finish files the session in the release queue's
SessionHistory again (fairness/cost.py `finished`: setdefault), after `forget` ran, so nothing ever removes it.
Each such session leaks one entry for the life of the process, and a later session of that id starts with the
stale estimate."""

import os, sys, itertools

sys.path.insert(
    0,
    os.environ.get(
        "SAGA_ROOT",
        os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")),
    ),
)
from fairness import TenantsConfig
from proxy.scheduler import SchedulerCore, RequestInfo, build_policy, Dispatch
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueue, ReleaseQueueSpec
from proxy.scheduler.types import Usage


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


clock = Clock()
spec = ReleaseQueueSpec(order="afs", gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 64}))
rq = ReleaseQueue(spec, TenantsConfig())
core = SchedulerCore(["r0"], build_policy("session-affinity"), clock, release=rq)
ids = itertools.count()
N = 1000
for i in range(N):
    sid = f"s{i}"
    a = RequestInfo(f"q{next(ids)}", sid, clock(), tenant_id="t", prompt_tokens=100)
    b = RequestInfo(f"q{next(ids)}", sid, clock(), tenant_id="t", prompt_tokens=100)
    core.request_arrived(a)
    core.request_arrived(b)
    core.request_finished(a.request_id, Usage(prompt_tokens=100, completion_tokens=1))
    core.session_ended(sid)  # the call that said X-Session-End: true is done
    core.request_finished(b.request_id, Usage(prompt_tokens=100, completion_tokens=1))
    clock.t += 0.01
clock.t += 100000
core.tick() if hasattr(core, "tick") else None
left = len(rq.history._seen)
print(f"sessions known to the core: {len(core.sessions)}; release-queue history entries: {left}")
if left > 0:
    print(
        f"DEFECT: {left} of {N} ended sessions stay in the release queue's SessionHistory for good (unbounded growth)"
    )
else:
    print("OK: ended sessions leave no history behind")


def sizes(obj, name, depth=0):
    out = {}
    for k, v in vars(obj).items() if hasattr(obj, "__dict__") else []:
        try:
            if isinstance(v, (dict, set, list)) and len(v) >= N:
                out[f"{name}.{k}"] = len(v)
        except Exception:
            pass
    return out


print("predictor maps >= N:", sizes(core.predictor, "predictor"), "core maps >= N:", sizes(core, "core"))
