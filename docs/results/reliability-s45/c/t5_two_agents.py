# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 5: agents with the same opening whose answers differ must not share a session; each keeps its own.
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fakes = [start_fake(p) for p in (27131, 27132, 27133)]
saga = start_saga_multi(27031, [27131, 27132, 27133], ["--workers", "2"])
opening = [{"role": "user", "content": f"Same opening {time.time()}"}]
agents = [list(opening) for _ in range(6)]
sessions = [[] for _ in agents]
try:
    for turn in range(4):
        for i, inp in enumerate(agents):
            body = {
                "model": "fake",
                "input": inp,
                "store": False,
                "instructions": "shared",
                "stream": bool(i % 2),
            }
            st, hs, data = req(27031, "POST", "/v1/responses", body)
            out = sse_final(data)["output"] if i % 2 else json.loads(data)["output"]
            sessions[i].append(hget(hs, "X-Session-ID"))
            agents[i] = inp + out + [{"role": "user", "content": f"next {turn}"}]
finally:
    stop(saga)
    for f in fakes:
        f.terminate()
        f.wait()
split = [i for i, s in enumerate(sessions) if len(set(s[1:])) != 1 or s[0] != s[1]]
shared = {}
for i, s in enumerate(sessions):
    for x in set(s):
        shared.setdefault(x, set()).add(i)
merged = {k: v for k, v in shared.items() if len(v) > 1}
if split or merged:
    print(f"DEFECT: same-opening agents: split {split}, merged {merged}; sessions {sessions}")
else:
    print(
        "OK: 6 agents with one opening and different answers kept 6 distinct sessions over 4 turns (--workers 2, whole and streamed)"
    )
