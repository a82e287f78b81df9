import os
import sys
import time

sys.path.insert(
    0, os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
)
from proxy import health

LIM = 16 * 1024 * 1024 - 100


def mk(line):
    n = LIM // len(line)
    return line * n


cases = {
    "waiting": "vllm:num_requests_waiting 1\n",
    "waiting_labels": 'vllm:num_requests_waiting{model_name="m",engine="0"} 1\n',
    "cache": 'vllm:cache_config_info{block_size="16",num_gpu_blocks="100",kv_offloading_size="None"} 1\n',
    "cache_manylabels": "vllm:cache_config_info{" + ",".join(f'a{i}="x"' for i in range(200)) + "} 1\n",
    "comment": "# HELP x\n",
    "nonmatch": "vllm:num_requests_waitingX 1\n",
    "long_unclosed": "vllm:cache_config_info{" + 'a="' + "b" * (LIM - 40) + "\n",
    "long_braces": "vllm:num_requests_waiting{" + "} x " * (LIM // 4 - 20) + "y z\n",
}
for k, line in cases.items():
    text = mk(line) if len(line) < 100000 else line
    t = time.perf_counter()
    r = health.parse_load(text)
    dt = time.perf_counter() - t
    print(f"{k:18s} {len(text) / 1e6:.1f}MB parse {dt:.2f}s -> {str(r)[:80]}")
