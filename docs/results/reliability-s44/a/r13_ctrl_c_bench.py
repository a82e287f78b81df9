"""Ctrl-C (SIGINT) during `saga bench des` (README.md:354-357): the signal is not acted on until the
discrete-event runs already queued have all finished (here every policy runs to its end, ~20 s after the
signal), and then `saga` exits 0 without printing any results, as if it had succeeded (proxy/cli.py
suppresses KeyboardInterrupt and returns 0). An interrupted `saga demo` also exits 0. No ports are opened
by the des run; the demo uses ephemeral ports of its own for ~8 s."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, signal, subprocess, sys, time


def interrupted(args, delay):
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *args],
        env={**os.environ, "PYTHONPATH": TREE},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as in a terminal
    time.sleep(delay)
    t = time.time()
    os.kill(p.pid, signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    return p.returncode, time.time() - t, out


rc, took, out = interrupted(
    ["bench", "des", "--workload", "swe", "--tasks", "300", "--policies", "saga,session-affinity"], 3
)
ran = [l.split(":")[0] for l in out.splitlines() if "TCT geomean" in l]
print(
    f"bench des: exit {rc}, {took:.1f} s from SIGINT to exit, policies run to the end after it: {ran}, results table printed: {'speedup' in out}"
)
rc2, took2, out2 = interrupted(["demo"], 8)
print(
    f"demo: exit {rc2}, {took2:.1f} s from SIGINT to exit, {out2.count('client hung up')} 'client hung up' warnings printed"
)
bad = (rc == 0 and "speedup" not in out) or took > 5 or rc2 == 0
print(
    "DEFECT: an interrupted run exits 0 (and bench des ignores Ctrl-C until its runs finish)"
    if bad
    else "OK: Ctrl-C stops at once with a non-zero status"
)
