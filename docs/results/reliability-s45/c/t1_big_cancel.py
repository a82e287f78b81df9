# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: a big whole stored answer (8 MB) and the owner tenant's cancel, relayed vs direct: same status and body.
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27115)
saga = start_saga(27015, 27115, ["--workers", "2"], env={"SAGA_API_KEYS": json.dumps({"key-a": "alice"})})
problems = []
kinds = set()
try:
    for hdr in ({"Authorization": "Bearer key-a"}, {"x-api-key": "key-a"}):
        st, hs, body, owner = req_pid(
            27015, "POST", "/v1/responses", {"model": "fake", "input": "mode_mbig"}, hdr
        )
        rid = json.loads(body)["id"]
        res = {}
        for i in range(10):
            s, h, b, wp = req_pid(27015, "GET", f"/v1/responses/{rid}", None, hdr, timeout=30)
            res.setdefault(("relay" if wp != owner else "direct", "get"), set()).add((s, len(b), b[:60]))
            s, h, b, wp = req_pid(27015, "POST", f"/v1/responses/{rid}/cancel", None, hdr, timeout=30)
            res.setdefault(("relay" if wp != owner else "direct", "cancel"), set()).add((s, len(b), b[:60]))
        kinds |= {k[0] for k in res}
        for what in ("get", "cancel"):
            d, r = res.get(("direct", what)), res.get(("relay", what))
            if d and r and d != r:
                problems.append(f"{list(hdr)[0]} {what}: direct {sorted(d)[:2]} relayed {sorted(r)[:2]}")
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
if kinds != {"relay", "direct"}:
    print(f"DEFECT?: saw only {kinds}")
elif problems:
    print("DEFECT: " + " | ".join(problems))
else:
    print(
        "OK: 8 MB stored answer and cancel: relayed = direct (status, size, start) with Bearer and x-api-key"
    )
