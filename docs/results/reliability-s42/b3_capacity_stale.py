# ruff: noqa: E501, SIM115  (a reviewer's reproduction, kept as it ran)
"""B3: a replica publishes vllm:cache_config_info (1000 blocks x 16 = 16000 tokens), then its /metrics no longer
lists it (restarted as a server that does not publish it, or with the gauge gone). /saga/v1/replicas says
kv_capacity_tokens is 'None: not published'."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TMP, fake, proxy, replicas, stop

PX, REP = 26020, 26021
url = f"http://127.0.0.1:{REP}"
mf = os.path.join(TMP, "metrics.txt")
FULL = (
    'vllm:num_requests_waiting{model_name="m"} 7\nvllm:num_requests_running{model_name="m"} 3\n'
    'vllm:kv_cache_usage_perc{model_name="m"} 0.5\nvllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0\n'
)
open(mf, "w").write(FULL)
fp = fake(REP, "metrics_file", FAKE_METRICS_FILE=mf)
px = proxy(PX, [url], extra=["--health-interval-s", "0.2"], log=os.path.join(TMP, "proxy.log"))
base = f"http://127.0.0.1:{PX}"
time.sleep(1)
r = replicas(base)[0]
print("published:", {k: r[k] for k in ("healthy", "waiting", "running", "kv_usage", "kv_capacity_tokens")})
# the replica restarts (down for a few probes) and comes back publishing no cache_config_info
stop(fp)
time.sleep(2.5)
r = replicas(base)[0]
print("while down:", {k: r[k] for k in ("healthy", "waiting", "running", "kv_usage", "kv_capacity_tokens")})
open(mf, "w").write(
    'vllm:num_requests_waiting{model_name="m"} 0\nvllm:num_requests_running{model_name="m"} 0\n'
)
fp = fake(REP, "metrics_file", FAKE_METRICS_FILE=mf)
time.sleep(2.5)
r = replicas(base)[0]
print(
    "back, no cache_config_info:",
    {k: r[k] for k in ("healthy", "waiting", "running", "kv_usage", "kv_capacity_tokens")},
)
if r["kv_capacity_tokens"]:
    print(
        f"DEFECT: replica publishes no cache_config_info, proxy still uses kv_capacity_tokens={r['kv_capacity_tokens']} (from before its restart)"
    )
else:
    print("OK")
