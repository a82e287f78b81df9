# ruff: noqa
"""Change 2 (ChainOwners.record_sent / sent_to): a compacting agent's first call C of its new conversation.
Modes (K agents each, in threads; linked = C's X-Session-ID equals the summary's session):
 retry0    C streamed, dropped after its first bytes, sent again at once          -> should link
 dup1      C answered in full, then sent again                                       -> should NOT link
 dupshort  C answered in full with a short (<200 chars) answer, then sent again      -> should NOT link
 triple    C dropped, retry answered in full, then C a third time                    -> 3rd should NOT link
 endretry  C dropped, the summary's session ended (POST /saga/v1/sessions/{id}/end), C again -> should NOT link
 tenant    (api_keys) tenant A's C dropped; tenant B sends the identical C           -> B must NOT link; A's retry then links
Trees/workers from env RUNS (e.g. "AFTER:2,MID:2,AFTER:1")."""

import os, sys, threading, socket, time, json, http.client

os.environ.setdefault("REVIEW_LOG", "/tmp/rev54/logs")
sys.path.insert(0, "/work/main/docs/results/reliability-s53")
from review_common import compaction, body_for, text_of

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import stack, post, get, AFTER, MID, BEFORE

K = int(os.environ.get("K", "6"))
MODES = os.environ.get("MODES", "retry0,dup1,dupshort,triple,endretry,tenant").split(",")
RUN = int(os.environ.get("RUN", "0"))
KA = {"Authorization": "Bearer key-a-123"}
KB = {"Authorization": "Bearer key-b-456"}
P = "/v1/chat/completions"


def dropped(url, body, headers=None):
    host, port = url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(
        "POST",
        P,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    r = c.getresponse()
    sid = r.getheader("X-Session-ID")
    r.read1(64)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    return sid


def one(url, i, mode):
    h = KA if mode == "tenant" else None
    s_sum, summary, system, _ = compaction(
        url, 5000 + 37 * i + 1000 * MODES.index(mode) + RUN, n=120, headers=h
    )
    time.sleep(0.2)
    C = [("user", "Summary of the work so far:\n" + summary)]
    if mode == "retry0":
        s1 = dropped(url, body_for(P, system, C, 400, True))
        st, txt, s2 = post(url, body_for(P, system, C, 20))
        return s2 == s_sum, s1 == s_sum
    if mode in ("dup1", "dupshort"):
        st, txt, s1 = post(url, body_for(P, system, C, 60 if mode == "dup1" else 4))
        ln = len(text_of(txt, P))
        st, txt, s2 = post(url, body_for(P, system, C, 60))
        return s2 == s_sum, s1 == s_sum
    if mode == "triple":
        s0 = dropped(url, body_for(P, system, C, 400, True))
        st, txt, s1 = post(url, body_for(P, system, C, 60))
        st, txt, s2 = post(url, body_for(P, system, C, 60))
        return s2 == s_sum, s1 == s_sum
    if mode == "endretry":
        s1 = dropped(url, body_for(P, system, C, 400, True))
        time.sleep(0.2)
        st, txt, _ = post(url, {}, path=f"/saga/v1/sessions/{s_sum}/end")
        time.sleep(0.2)
        st, txt, s2 = post(url, body_for(P, system, C, 20))
        return s2 == s_sum, s1 == s_sum
    if mode == "retrypooled":
        # every call of the agent but the dropped one on one keep-alive connection (a pooling SDK), which moved
        # between workers at most once: the retry read there is relayed, not handed over
        host, port = url.split("//")[1].split(":")
        pc = http.client.HTTPConnection(host, int(port), timeout=60)

        def ppost(body):
            pc.request(
                "POST", P, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            r = pc.getresponse()
            t = r.read()
            return r.status, t, r.getheader("X-Session-ID")

        system = f"You are pooled agent number {i}-{RUN}, a careful coder."
        msgs = [("user", f"Task {i}: refactor pooled module {i} {RUN} please")]
        for k in range(2):
            st, txt, s = ppost(body_for(P, system, msgs, 120))
            msgs += [("assistant", text_of(txt, P)), ("user", f"tool output {k} " + "x" * 200)]
        msgs[-1] = ("user", "Summarize the conversation so far.")
        st, txt, s_sum = ppost(body_for(P, system, msgs, 120))
        C2 = [("user", "Summary of the work so far:\n" + text_of(txt, P))]
        s1 = dropped(url, body_for(P, system, C2, 400, True))
        time.sleep(float(os.environ.get("RSLEEP", "0")))
        st, txt, s2 = ppost(body_for(P, system, C2, 20))
        pc.close()
        return s2 == s_sum, s1 == s_sum
    if mode == "retrylive":
        # the first attempt still open (client timed out but has not closed yet), the retry sent meanwhile
        host, port = url.split("//")[1].split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request(
            "POST",
            P,
            body=json.dumps(body_for(P, system, C, 400, True)).encode(),
            headers={"Content-Type": "application/json"},
        )
        r = c.getresponse()
        s1 = r.getheader("X-Session-ID")
        r.read1(64)
        st, txt, s2 = post(url, body_for(P, system, C, 20))
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        return s2 == s_sum, s1 == s_sum
    if mode == "htenant":
        HA, HB = {"X-Tenant-ID": f"ta{i}"}, {"X-Tenant-ID": f"tb{i}"}
        s_sum2, summary2, system2, _ = compaction(url, 9000 + 37 * i + RUN, n=120, headers=HA)
        C2 = [("user", "Summary of the work so far:\n" + summary2)]
        s1 = dropped(url, body_for(P, system2, C2, 400, True), HA)
        st, txt, sb = post(url, body_for(P, system2, C2, 20), HB)
        return sb == s_sum2, s1 == s_sum2
    if mode == "tenant":
        s1 = dropped(url, body_for(P, system, C, 400, True), KA)
        st, txt, sb = post(url, body_for(P, system, C, 20), KB)
        st, txt, s2 = post(url, body_for(P, system, C, 20), KA)
        # for tenant, "linked" reported = B joined A (bad); second = A's retry linked (good)
        return sb == s_sum, s2 == s_sum


EXPECT = {
    "retry0": True,
    "dup1": False,
    "dupshort": False,
    "triple": False,
    "endretry": False,
    "tenant": False,
    "htenant": False,
    "retrylive": True,
    "retrypooled": True,
}
trees = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}
runs = [r.split(":") for r in os.environ.get("RUNS", "AFTER:2,MID:2,AFTER:1").split(",")]
summary = []
for j, (name, w) in enumerate(runs):
    w = int(w)
    sp, pp = 26310 + 20 * j + 100 * (RUN % 3), 26300 + 20 * j + 100 * (RUN % 3)
    env = {"SAGA_API_KEYS": json.dumps({"key-a-123": "ta", "key-b-456": "tb"})} if "tenant" in MODES else None
    # api keys apply to all modes when set; the other modes then send no key -> run tenant in a stack of its own
    for group in ([m for m in MODES if m != "tenant"], [m for m in MODES if m == "tenant"]):
        if not group:
            continue
        with stack(
            trees[name],
            sp,
            pp,
            workers=w,
            sim_args=("--profile", "tiny-cpu", "--time-scale", "20"),
            env={"SAGA_API_KEYS": json.dumps({"key-a-123": "ta", "key-b-456": "tb"})}
            if group == ["tenant"]
            else None,
        ) as url:
            for mode in group:
                out = []

                def ag(i):
                    try:
                        out.append(one(url, i, mode))
                    except Exception as e:
                        out.append(("ERR " + repr(e)[:150], None))

                ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
                [t.start() for t in ts]
                [t.join() for t in ts]
                linked = sum(o[0] is True for o in out)
                second = sum(o[1] is True for o in out)
                errs = [o[0] for o in out if isinstance(o[0], str)]
                print(
                    f"{name} w={w} {mode}: linked {linked}/{len(out)} (other {second}) {errs[:2]}", flush=True
                )
                summary.append((name, w, mode, linked, len(out), second))
        sp += 10
        pp += 10
bad = []
for name, w, mode, linked, n, second in summary:
    want = EXPECT[mode]
    if name == "AFTER" and ((want and linked < n) or (not want and linked > 0)):
        bad.append(f"{name} w={w} {mode} {linked}/{n}")
print(
    "DEFECT" if bad else "OK",
    "c2_marker:",
    "; ".join(f"{a} w={b} {m} {l}/{n}" for a, b, m, l, n, s in summary),
    "| unexpected on AFTER:",
    bad,
)
