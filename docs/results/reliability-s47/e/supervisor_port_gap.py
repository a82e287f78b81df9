# ruff: noqa
"""`saga serve --workers 2` started beside TIME_WAIT connections holds its port with SO_REUSEADDR; its contract
says the held socket keeps any other program from taking the port while workers come and go. Kill both
workers; in the restart gap, a plain SO_REUSEADDR listener (as uvicorn, nginx or a one-process saga serve
bind) tries the port. DEFECT when it gets the port in the TIME_WAIT case (control: the clean case refuses it)."""

import os, sys, time, socket, signal, subprocess, threading, asyncio

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47f")
REP = 27410


def free_port(lo, hi):
    """A port with no socket at all on it (no TIME_WAIT left by an earlier run)."""
    used = subprocess.run(["ss", "-tanH"], capture_output=True, text=True).stdout
    for p in range(lo, hi):
        if f":{p} " not in used:
            return p
    raise SystemExit("no free port")


def replica():
    from aiohttp import web

    async def ok(r):
        return web.Response(text="")

    async def models(r):
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", ok)
    app.router.add_get("/v1/models", models)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", REP).start())
    loop.run_forever()


threading.Thread(target=replica, daemon=True).start()


def time_wait(port):
    """Leaves a server-side connection in TIME_WAIT on `port` (the server closes first)."""
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen()
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = l.accept()
    s.close()
    c.recv(1)
    c.close()
    l.close()
    time.sleep(0.2)


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def trial(with_time_wait):
    global PORT
    PORT = free_port(27450, 27480) if with_time_wait else free_port(27420, 27450)
    if with_time_wait:
        time_wait(PORT)
    env = {**os.environ, "PYTHONPATH": TREE}
    sup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--workers",
            "2",
            "--port",
            str(PORT),
            "--replica",
            f"http://127.0.0.1:{REP}",
            "--no-access-log",
        ],
        cwd=TREE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    try:
        deadline = time.time() + 40
        line = ""
        while time.time() < deadline:
            line = sup.stdout.readline()
            if "listening" in line or not line:
                break
        if "listening" not in line:
            return f"supervisor did not start: {line!r}"
        workers = children(sup.pid)
        for w in workers:
            os.kill(w, signal.SIGKILL)
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        got = None
        t0 = time.time()
        while time.time() - t0 < 1.0:  # the workers' restart gap
            try:
                other.bind(("127.0.0.1", PORT))
                other.listen()
                got = True
                break
            except OSError:
                time.sleep(0.005)
        other.close()
        return "another program took the port" if got else "the port stayed held"
    finally:
        os.killpg(sup.pid, signal.SIGTERM)
        try:
            sup.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()


clean = trial(False)
time.sleep(0.5)
tw = trial(True)
print(f"clean start: {clean}; started beside TIME_WAIT: {tw}")
if tw == "another program took the port" and clean == "the port stayed held":
    print(
        "DEFECT: started beside TIME_WAIT, the supervisor's held port (SO_REUSEADDR) lets any SO_REUSEADDR listener take it while its workers restart (its contract: no other program takes the port while workers come and go; the lock refuses only other supervisors)"
    )
elif tw == "the port stayed held":
    print("OK: the port stayed held in the workers' restart gap")
else:
    print(f"INCONCLUSIVE: {clean} / {tw}")
