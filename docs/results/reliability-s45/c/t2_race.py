# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 2: two supervisors' hold_port at the same instant on one port, spelled 127.0.0.1 / 0.0.0.0 / :: : never both hold.
import sys, subprocess, time, json, itertools

CHILD = r"""
import sys, time, json
sys.path.insert(0, os.environ.get("SAGA_TREE", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../.."))))
from proxy.supervisor import hold_port
host, port, at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < at: pass
try:
    s = hold_port(host, port); s.listen(); ok = True
except OSError as e:
    ok = False
print(json.dumps(ok), flush=True)
time.sleep(0.6)
"""
pairs = [
    ("127.0.0.1", "0.0.0.0"),
    ("0.0.0.0", "127.0.0.1"),
    ("127.0.0.1", "::"),
    ("::", "0.0.0.0"),
    ("127.0.0.1", "127.0.0.1"),
]
both = []
tries = 0
port = 27200
for rnd in range(8):
    for a, b in pairs:
        port += 1
        tries += 1
        at = time.time() + 0.4
        ps = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, h, str(port), str(at)], stdout=subprocess.PIPE, text=True
            )
            for h in (a, b)
        ]
        res = [json.loads(p.communicate(timeout=20)[0].strip() or "false") for p in ps]
        if all(res):
            both.append(f"{a}+{b}:{port}")
print(
    f"DEFECT: both held the port in {len(both)} of {tries} same-instant tries: {both[:6]}"
    if both
    else f"OK: {tries} same-instant tries over {len(pairs)} spelling pairs, never both held"
)
