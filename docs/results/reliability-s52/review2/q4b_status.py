# ruff: noqa
import sys, json, urllib.request, urllib.error

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack

SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
with stack(sys.argv[1], 27140, 27150, sim_args=SIM) as url:
    text = "\n".join(f"line {j:06d} " + "y" * 45 for j in range(20000))
    b = json.dumps(
        {"model": "saga-sim", "max_tokens": 1, "messages": [{"role": "user", "content": text}] * 4}
    ).encode()
    try:
        r = urllib.request.urlopen(
            urllib.request.Request(
                url + "/v1/chat/completions", data=b, headers={"Content-Type": "application/json"}
            )
        )
        print(r.status)
    except urllib.error.HTTPError as e:
        print(e.code, e.read()[:200])
