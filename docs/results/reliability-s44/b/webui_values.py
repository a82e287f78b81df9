"""docs/loadtesting.md lists --time-scale / --request-timeout / --tenant-mix among the 'Custom parameters of the web UI'.
The command line refuses 0 and a bad mix; does the web UI's swarm form?"""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import json, subprocess, sys, time, urllib.parse, urllib.request

SNAP, PORT, WEB = TREE, 24064, 24089
srv = subprocess.Popen([sys.executable, HERE + "/fake_upstream.py", str(PORT), "0.05"])
loc = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtests/locustfile.py",
        "WebArenaAgent",
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(WEB),
        "--host",
        f"http://127.0.0.1:{PORT}",
        "--no-stream",
    ],
    cwd=SNAP,
    stdout=open("/tmp/saga-review44b/webui_locust.log", "w"),
    stderr=subprocess.STDOUT,
    text=True,
)
CASE = {"time_scale": "0"} if sys.argv[1:] == ["time_scale"] else {"tenant_mix": "a:x"}
try:
    time.sleep(5)
    form = urllib.parse.urlencode(
        {"user_count": 2, "spawn_rate": 2, "host": f"http://127.0.0.1:{PORT}", **CASE}
    ).encode()
    ans = urllib.request.urlopen(f"http://127.0.0.1:{WEB}/swarm", form, timeout=10).read().decode()
    print("swarm answer:", ans[:200])
    time.sleep(6)
    stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{WEB}/stats/requests", timeout=10))
    print(
        "state:",
        stats.get("state"),
        "user_count:",
        stats.get("user_count"),
        "requests:",
        [(s["method"], s["name"], s["num_requests"], s["num_failures"]) for s in stats["stats"]],
    )
    exc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{WEB}/exceptions"))
    print("exceptions:", [(e["count"], e["msg"][:100]) for e in exc.get("exceptions", [])])
    urllib.request.urlopen(f"http://127.0.0.1:{WEB}/stop", b"", timeout=10)
    if "true" in ans.lower() and stats.get("state") in ("running", "spawning"):
        print(
            f"DEFECT: the web UI took {CASE} (the command line refuses it) and the run is 'running' with "
            f"{stats.get('user_count')} users and {stats['stats'][-1]['num_requests']} requests; user exceptions: "
            + str([e["msg"][:80] for e in exc.get("exceptions", [])])
        )
    else:
        print("OK: refused")
finally:
    loc.terminate()
    srv.kill()
    try:
        loc.wait(10)
    except subprocess.TimeoutExpired:
        loc.kill()
    srv.wait()
