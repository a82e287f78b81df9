# ruff: noqa
"""max_sessions: 'a new session beyond it evicts ... one of a tenant holding more than an equal share of the
table (one tenant opening sessions pushes out its own, not another tenant's workflow waiting on a tool call)'.
Without client API keys the tenant is X-Tenant-ID: a client opening sessions under a fresh tenant name each
pushes out the victim tenant's idle workflows instead of its own."""

import os, sys, json, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *

P, S = 43310, 43300
ADM = {"Authorization": "Bearer adm"}


def sessions():
    _, _, b = req(P, "GET", "/saga/v1/sessions?limit=5000", headers=ADM)
    return json.loads(b)["sessions"]


def run(rotate):
    for i in range(6):
        s, h, b = chat(
            P,
            [{"role": "user", "content": f"victim task {i}"}],
            {"X-Tenant-ID": "victim", "X-Session-ID": f"victim-{rotate}-{i}"},
        )
        assert s == 200, (s, b)
    time.sleep(0.3)
    for i in range(40):
        tenant = f"flood-{i}" if rotate else "flood"
        s, h, b = chat(
            P,
            [{"role": "user", "content": f"flood {i}"}],
            {"X-Tenant-ID": tenant, "X-Session-ID": f"flood-{rotate}-{i}"},
        )
        assert s == 200, (s, b)
    time.sleep(1.5)
    ss = sessions()
    left = [x["session_id"] for x in ss if x["session_id"].startswith(f"victim-{rotate}-")]
    return len(left), len(ss)


try:
    setup(S, 1, P, config="admin_token: adm\nmax_sessions: 20\n", tag="ev")
    one = run(False)
    for x in sessions():  # end everything between the two rounds
        req(P, "POST", f"/saga/v1/sessions/{x['session_id']}/end", headers=ADM)
    rot = run(True)
    print(
        f"flood under one tenant: victim sessions kept {one[0]}/6 (table {one[1]}); "
        f"flood under 40 tenant names: victim kept {rot[0]}/6 (table {rot[1]})"
    )
    if rot[0] < one[0]:
        print(
            f"DEFECT: rotating X-Tenant-ID evicts the victim tenant's idle sessions ({rot[0]}/6 kept vs {one[0]}/6 with one flood tenant)"
        )
    else:
        print("OK: rotating tenant names does not push out another tenant's sessions")
finally:
    stop_all()
