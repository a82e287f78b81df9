# ruff: noqa
"""Odd bodies under a prompt_cache_key, each sent (a) as the key's first call and (b) while the key's own
conversation has a call in flight (the path that decodes the first user message). Prints status, session,
seconds; then in_flight/queued/sessions from /saga/v1/state after all ended. No 500s/hangs expected."""

import asyncio, sys, time, json, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get

K256 = "k" * 256
CASES = {
    "img_array": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    },
    "empty_str": {"messages": [{"role": "user", "content": ""}]},
    "null_content": {"messages": [{"role": "user", "content": None}]},
    "no_user": {"messages": [{"role": "system", "content": "only system"}]},
    "empty_list": {"messages": []},
    "messages_str": {"messages": "hello"},
    "messages_ints": {"messages": [1, 2]},
    "no_role": {"messages": [{"content": "x"}]},
    "content_obj": {"messages": [{"role": "user", "content": {"a": [1, {"b": None}]}}]},
    "deep_nest": "RAW",
    "msg_10MB": {"messages": [{"role": "user", "content": "a" * 10_000_000}]},
}


async def post(http, url, path, body, key):
    if body == "RAW":
        data = (
            '{"model":"saga-sim","max_tokens":5,"prompt_cache_key":"%s","messages":[{"role":"user","content":'
            % key
            + "[" * 5000
            + "]" * 5000
            + "}]}"
        ).encode()
    else:
        data = json.dumps({"model": "saga-sim", "max_tokens": 5, "prompt_cache_key": key, **body}).encode()
    t0 = time.monotonic()
    try:
        async with http.post(
            url + path,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as r:
            txt = await r.text()
            return (
                r.status,
                r.headers.get("X-Session-ID"),
                round(time.monotonic() - t0, 2),
                txt[:90].replace("\n", " "),
            )
    except Exception as e:
        return "EXC " + type(e).__name__, None, round(time.monotonic() - t0, 2), ""


async def main(url):
    async with aiohttp.ClientSession() as http:
        for name, body in CASES.items():
            key = f"first-{name}"
            a = await post(http, url, "/v1/chat/completions", body, key)
            # busy path: own conversation's long call in flight, then the odd call under the same key
            key2 = K256 if name in ("empty_str", "img_array") else f"busy-{name}"
            own = asyncio.create_task(
                post(
                    http,
                    url,
                    "/v1/chat/completions",
                    {"max_tokens": 300, "messages": [{"role": "user", "content": "own conversation"}]},
                    key2,
                )
            )
            await asyncio.sleep(0.3)
            b = await post(http, url, "/v1/chat/completions", body, key2)
            o = await own
            print(
                f"{name:13s} first: {a[0]} {str(a[1])[:40]} {a[2]}s | busy: {b[0]} {str(b[1])[-30:]} {b[2]}s | own {o[0]} | {b[3] if b[0] not in (200,) else ''}"
            )
        # responses & messages odd inputs while busy
        for name, path, body in [
            ("resp_input_num", "/v1/responses", {"input": 5}),
            ("resp_items_bad", "/v1/responses", {"input": [{"type": "message", "role": 3}]}),
            ("resp_prev_only", "/v1/responses", {"input": "x", "previous_response_id": "resp_nope"}),
            (
                "msgs_system_top",
                "/v1/messages",
                {
                    "system": [{"type": "text", "text": "s"}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "anth"}]}],
                },
            ),
            ("completions", "/v1/completions", {"prompt": "hello"}),
        ]:
            key = f"busy-{name}"
            own = asyncio.create_task(
                post(
                    http,
                    url,
                    "/v1/chat/completions",
                    {"max_tokens": 300, "messages": [{"role": "user", "content": "own"}]},
                    key,
                )
            )
            await asyncio.sleep(0.3)
            b = await post(http, url, path, body, key)
            await own
            print(f"{name:15s} busy: {b[0]} {b[1]} {b[2]}s {b[3] if b[0] != 200 else ''}")
    await asyncio.sleep(1)
    s = get(url + "/saga/v1/state")
    print(
        "after: in_flight",
        s["in_flight"],
        "queued",
        s["queued"],
        "replica in_flight",
        [r["in_flight"] for r in s["replicas"]],
        "reserved",
        [r["reserved_tokens"] for r in s["replicas"]],
        "cache_keys",
        s.get("cache_keys"),
    )
    logs = open(f"/tmp/reviewK/logs/proxy-{tree.split('/')[-1]}-{port}.log").read()
    print("Traceback in proxy log:", logs.count("Traceback"))


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port) as url:
    asyncio.run(main(url))
