# ruff: noqa
"""A compaction whose new conversation's user message is the summary followed by attached file contents (20 long
lines) in the SAME message, vs the attachments in a later user message. With workers=2 AFTER looks up only each
text's last QUOTE_PROBES=16 long lines in the table, so the summary's lines are not probed and the compaction is
sent to the summary's worker only when read there. Multi-line answers via shim.py."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

MID = os.environ.get("MID", "/tmp/snap53a")
K = int(os.environ.get("K", "10"))
FILES = "\n".join(
    f"    def method_{j}(self, value): return self.compute_{j}(value) * {j}  # file line" for j in range(20)
)


def run(tree, sp, pp, workers):
    res = {}
    with shim_stack(tree, sp, pp, workers=workers) as url:
        for mode in ("same-message", "later-message"):
            out = []

            def ag(i):
                try:
                    s_sum, summary, system, _ = compaction(
                        url, 700 + i + (100 if mode == "later-message" else 0), n=120
                    )
                    time.sleep(0.2)
                    if mode == "same-message":
                        msgs = [
                            (
                                "user",
                                "This session continues a previous one. Summary:\n"
                                + summary
                                + "\n\nRecently read files:\n"
                                + FILES,
                            )
                        ]
                    else:
                        msgs = [
                            ("user", "This session continues a previous one. Summary:\n" + summary),
                            ("user", "Recently read files:\n" + FILES),
                        ]
                    st, txt, s_new = post(url, body_for("/v1/chat/completions", system, msgs, 20))
                    out.append(s_new == s_sum)
                except Exception as e:
                    out.append("ERR " + repr(e)[:100])

            ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            res[mode] = (
                sum(1 for o in out if o is True),
                len(out),
                [o for o in out if isinstance(o, str)][:1],
            )
    return res


R = {}
for name, tree, w, sp, pp in [
    ("AFTER w=2", AFTER, 2, 29200, 29210),
    ("MID w=2", MID, 2, 29220, 29230),
    ("AFTER w=1", AFTER, 1, 29240, 29250),
]:
    R[name] = run(tree, sp, pp, w)
    print(name, R[name], flush=True)
a, m, o = (
    R["AFTER w=2"]["same-message"][0],
    R["MID w=2"]["same-message"][0],
    R["AFTER w=1"]["same-message"][0],
)
print(
    "DEFECT" if a < min(m, o) - 2 else "OK", "same-message linked: AFTER w=2", a, "MID w=2", m, "AFTER w=1", o
)
