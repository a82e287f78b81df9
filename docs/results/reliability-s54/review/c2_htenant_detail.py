# ruff: noqa
"""Header-named tenants (no api_keys): tenant A (X-Tenant-ID) compacts, its new conversation's first call C
is dropped; tenant B sends the identical C. Which session and which tenant B's call is counted under."""

import os, sys, json, time

os.environ.setdefault("REVIEW_LOG", "/tmp/rev54/logs")
sys.path.insert(0, "/work/main/docs/results/reliability-s53")
from review_common import compaction, body_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import stack, post, get, AFTER, MID
import c2_marker_helpers as h

P = "/v1/chat/completions"
out = []
for j, (name, tree, w) in enumerate([("AFTER", AFTER, 1), ("MID", MID, 1), ("AFTER", AFTER, 2)]):
    with stack(
        tree,
        26410 + 20 * j,
        26400 + 20 * j,
        workers=w,
        sim_args=("--profile", "tiny-cpu", "--time-scale", "20"),
    ) as url:
        joined = 0
        for i in range(4):
            HA, HB = {"X-Tenant-ID": "alice"}, {"X-Tenant-ID": "bob"}
            s_sum, summary, system, _ = compaction(url, 7000 + i + 10 * j, n=120, headers=HA)
            C = [("user", "Summary of the work so far:\n" + summary)]
            h.dropped(url, body_for(P, system, C, 400, True), HA)
            st, txt, sb = post(url, body_for(P, system, C, 20), HB)
            joined += sb == s_sum
            if sb == s_sum and i == 0:
                sess = (
                    [
                        s
                        for s in get(url + "/saga/v1/sessions").get("sessions", [])
                        if s.get("session_id") == s_sum
                    ]
                    if isinstance(get(url + "/saga/v1/sessions"), dict)
                    else []
                )
                print(
                    "  bob's call went to alice's session", s_sum, "session record:", json.dumps(sess)[:300]
                )
        out.append((name, w, joined))
        print(name, f"w={w}", f"bob's identical C joined alice's session {joined}/4", flush=True)
print("NOTE", "header tenants, bob's C joined alice's session:", out)
