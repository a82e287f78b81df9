# ruff: noqa
"""Claude-Code-shaped compaction over /v1/messages: the new conversation's user message holds content blocks
[summary text, recently read file (30 lines of code)] - consecutive user messages are merged into one message
with several blocks. The in-process look reads the first 512 lines (the summary first); AFTER's table lookup reads
only the text's last 16 long lines (the file). AFTER w=2 vs MID w=2 vs AFTER w=1. Plain sim (one-line summaries)."""

import os, sys, threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

MID = os.environ.get("MID", "/tmp/snap53a")
K = int(os.environ.get("K", "12"))
FILE = "".join(
    f"    {j:4d}\t    result_{j} = compute_value(items[{j}], threshold={j}, verbose=False)\n"
    for j in range(30)
)
P = "/v1/messages"


def run(tree, sp, pp, workers):
    with stack(tree, sp, pp, workers=workers) as url:
        out = []

        def ag(i):
            try:
                s_sum, summary, system, _ = compaction(url, 1200 + i, P)
                time.sleep(0.2)
                content = [
                    {
                        "type": "text",
                        "text": "This session is being continued from a previous conversation. Summary:\n"
                        + summary
                        + "\n",
                    },
                    {"type": "text", "text": '<file path="src/mod.py">\n' + FILE + "</file>"},
                ]
                b = {
                    "model": "saga-sim",
                    "max_tokens": 20,
                    "ignore_eos": True,
                    "system": system,
                    "messages": [{"role": "user", "content": content}],
                }
                st, txt, s_new = post(url, b, path=P)
                out.append(s_new == s_sum if st == 200 else f"ERR {st} {txt[:100]}")
            except Exception as e:
                out.append("ERR " + repr(e)[:100])

        ts = [threading.Thread(target=ag, args=(i,)) for i in range(K)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return sum(1 for o in out if o is True), len(out), [o for o in out if isinstance(o, str)][:1]


R = {}
for name, tree, w, sp, pp in [
    ("AFTER w=2", AFTER, 2, 29600, 29610),
    ("MID w=2", MID, 2, 29620, 29630),
    ("AFTER w=1", AFTER, 1, 29640, 29650),
]:
    R[name] = run(tree, sp, pp, w)
    print(name, "linked", R[name], flush=True)
a, m, o = (R[k][0] for k in ("AFTER w=2", "MID w=2", "AFTER w=1"))
print("DEFECT" if a < min(m, o) - 2 else "OK", "linked: AFTER w=2", a, "MID w=2", m, "AFTER w=1", o, "of", K)
