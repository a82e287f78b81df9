# ruff: noqa
import os, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
LOGS = tempfile.mkdtemp(prefix="saga-r15-")
import os, sys, json, time, subprocess, http.client, socket

R, P, P2 = 45011, 45012, 45013
procs = []


def start(args, log):
    p = subprocess.Popen(
        args,
        stdout=open(os.path.join(LOGS, log), "w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    procs.append(p)
    return p


def wait(port, path="/health"):
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"port {port} never up")


def post(port, path, raw, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("POST", path, raw, dict({"Content-Type": "application/json"}, **(headers or {})))
    r = c.getresponse()
    d = r.read()
    c.close()
    return r.status, d


def last_body():
    c = http.client.HTTPConnection("127.0.0.1", R)
    c.request("GET", "/_bodies")
    return json.loads(c.getresponse().read())[-1]["body"]


res = []
try:
    start([sys.executable, os.path.join(HERE, "fake_vllm.py"), str(R), "force"], "fv.log")
    wait(R)
    open(os.path.join(LOGS, "salt.yaml"), "w").write(
        "api_keys:\n  sk-aaaa-1234567890: alice\n  sk-bbbb-1234567890: bob\n"
    )
    open(os.path.join(LOGS, "nosalt.yaml"), "w").write(
        "api_keys:\n  sk-aaaa-1234567890: alice\ntenant_cache_salt: false\n"
    )
    start(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            f"http://127.0.0.1:{R}",
            "--port",
            str(P),
            "--config",
            os.path.join(LOGS, "salt.yaml"),
            "--health-interval-s",
            "0.5",
        ],
        "p1.log",
    )
    start(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            f"http://127.0.0.1:{R}",
            "--port",
            str(P2),
            "--config",
            os.path.join(LOGS, "nosalt.yaml"),
            "--health-interval-s",
            "0.5",
        ],
        "p2.log",
    )
    wait(P)
    wait(P2)
    time.sleep(1.5)
    A = {"Authorization": "Bearer sk-aaaa-1234567890"}
    B = {"Authorization": "Bearer sk-bbbb-1234567890"}
    g = {"model": "m", "token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 2}}
    s, d = post(P, "/inference/v1/generate", json.dumps(g), A)
    sa = json.loads(d).get("cache_salt")
    s, d = post(P, "/inference/v1/generate", json.dumps(g), B)
    sb = json.loads(d).get("cache_salt")
    res.append((f"salted per tenant ({s})", bool(sa) and bool(sb) and sa != sb))
    s, d = post(P, "/inference/v1/generate", json.dumps(dict(g, cache_salt="mine")), A)
    sc = json.loads(d).get("cache_salt")
    res.append(("client salt replaced by tenant-derived", sc not in (None, "mine", sa)))
    s, d = post(P, "/inference/v1/generate", json.dumps(dict(g, cache_salt=None)), A)
    res.append(("null salt -> tenant salt", json.loads(d).get("cache_salt") == sa))
    s, d = post(P, "/inference/v1/generate", b"\xef\xbb\xbf" + json.dumps(g).encode(), A)
    res.append(
        (
            f"UTF-8 BOM body ({s}) still salted (replica would accept it: json.loads)",
            s != 200 or json.loads(d).get("cache_salt") is not None,
        )
    )
    s, d = post(P, "/inference/v1/generate", json.dumps(g).encode("utf-16"), A)
    res.append((f"UTF-16 body ({s}) still salted", s != 200 or json.loads(d).get("cache_salt") is not None))
    s, d = post(P, "/inference/v1/generate", "[1,2]", A)
    res.append((f"array body passes as sent ({s})", last_body() == "[1,2]"))
    s, d = post(P2, "/inference/v1/generate", json.dumps(g), A)
    res.append(("tenant_cache_salt false: no salt", json.loads(d).get("cache_salt") is None))
    s, d = post(P, "/tokenize", json.dumps({"model": "m", "prompt": "x"}), A)
    res.append(("other passthrough not salted", "cache_salt" not in last_body()))
    # forced usage, vLLM's rule: a client without stream_options gets the final usage event directly
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    s, direct = post(R, "/v1/chat/completions", chat)
    s, via = post(P, "/v1/chat/completions", chat, A)
    dn = direct.count(b'"choices":[]')
    vn = via.count(b'"choices": []') + via.count(b'"choices":[]')
    res.append(
        (
            f"forced-usage (vLLM should_include_usage) replica: usage events direct={dn} via proxy={vn} (sent: {last_body()[-80:]})",
            dn == vn,
        )
    )
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
bad = [n for n, ok in res if not ok]
for n, ok in res:
    print(("ok  " if ok else "BAD ") + n)
print(("DEFECT: " + " | ".join(bad)) if bad else "OK: salting and forced usage as intended")
