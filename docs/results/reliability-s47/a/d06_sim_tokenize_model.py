# ruff: noqa
"""DEFECT check: /tokenize and /detokenize on the simulated replica ignore `model`; vLLM 0.32 answers
404 NotFoundError param=model ("The model `nope` does not exist. Valid aliases: ...") as on its generating
routes (the serving class's _check_model). The proxy relays these routes to "the least busy healthy replica
serving the model they name", so a misspelt model is a 404 from vLLM but a 200 from the simulator."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import post, report, sim

with sim() as port:
    problems = []
    for path, body in (
        ("/tokenize", {"model": "nope", "prompt": "hi"}),
        ("/detokenize", {"model": "nope", "tokens": [72]}),
    ):
        st, j, raw = post(port, path, body)
        if st != 404:
            problems.append(f"{path} with model 'nope': sim {st}, vLLM 404 NotFoundError param=model")
report(problems, "simulated replica refuses an unknown model on /tokenize and /detokenize")
