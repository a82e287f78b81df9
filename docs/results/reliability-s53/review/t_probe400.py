# ruff: noqa
import os, sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from review_common import *

exec(open("/tmp/rev53a/t_cost_big.py").read().split("def run")[0].split("from review_common import *")[1])
with stack(AFTER, 27500, 27510, workers=2) as url:
    st, txt, s = post(url, shortlines(1))
    print(st, txt[:300])
    st, txt, s = post(
        url,
        {
            "model": "saga-sim",
            "max_tokens": 1,
            "messages": [
                {"role": "system", "content": SYS},
                {
                    "role": "user",
                    "content": "\n".join(f"{1:05d} short line number {k:06d} xx" for k in range(200)),
                },
            ],
        },
    )
    print(st, txt[:200])
