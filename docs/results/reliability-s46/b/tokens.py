# ruff: noqa
"""saga_tenant_*_tokens_total vs the usage of served calls, per route/shape (fake replicas with known usage)."""

import asyncio, json
from common import *
import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from proxy.config import ProxyConfig
from proxy.server import running_proxy

P, C, K = 11, 5, 4
CHAT_U = {
    "prompt_tokens": P,
    "completion_tokens": C,
    "total_tokens": P + C,
    "prompt_tokens_details": {"cached_tokens": K},
}
RESP_U = {
    "input_tokens": P,
    "output_tokens": C,
    "total_tokens": P + C,
    "input_tokens_details": {"cached_tokens": K},
}
ANTH_U = {"input_tokens": P, "output_tokens": C, "cache_read_input_tokens": K}


def sse(*objs, names=None):
    out = b""
    for i, o in enumerate(objs):
        if names:
            out += b"event: %s\n" % names[i].encode()
        out += b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n"
    return out


state = {"fail_first": 0}


async def handler(m, path, hd, body):
    b = json.loads(body)
    tag = json.dumps(b)
    if "fail500" in tag and state["fail_first"] > 0:
        state["fail_first"] -= 1
        yield ("w", json_answer({"error": {"message": "boom"}}, 500))
        return
    if "err400usage" in tag:
        yield ("w", json_answer({"error": {"message": "bad"}, "usage": CHAT_U}, 400))
        return
    stream = b.get("stream")
    if path == "/v1/chat/completions" or path == "/v1/completions":
        chat = path.endswith("chat/completions")
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "hi", "finish_reason": "stop"}
        )
        if not stream:
            yield ("w", json_answer({"id": "x", "choices": [choice], "usage": CHAT_U}))
            return
        d = {"index": 0, "delta": {"content": "hi"}} if chat else {"index": 0, "text": "hi"}
        yield ("w", STREAM_HEAD)
        if "clientcut" in tag:
            yield ("w", chunk(sse({"choices": [d]})))
            yield ("sleep", 1.0)
        body_ = sse({"choices": [d]}, {"choices": [], "usage": CHAT_U}, b"[DONE]")
        if "forceusage" in tag:
            body_ = sse(
                {"choices": [d], "usage": {"prompt_tokens": P, "completion_tokens": 1}},
                {"choices": [d], "usage": {"prompt_tokens": P, "completion_tokens": 2}},
                {"choices": [], "usage": CHAT_U},
                b"[DONE]",
            )
        yield ("w", chunk(body_))
        yield ("w", b"0\r\n\r\n")
        return
    if path == "/v1/messages":
        if not stream:
            yield (
                "w",
                json_answer(
                    {
                        "id": "msg",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "text", "text": "hi"}],
                        "stop_reason": "end_turn",
                        "usage": ANTH_U,
                    }
                ),
            )
            return
        final_usage = {"output_tokens": C} if "specshape" in tag else ANTH_U
        names = [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        objs = [
            {
                "type": "message_start",
                "message": {
                    "id": "msg",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "usage": {"input_tokens": P, "output_tokens": 0, "cache_read_input_tokens": K},
                },
            },
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": final_usage},
            {"type": "message_stop"},
        ]
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(sse(*objs, names=names)))
        yield ("w", b"0\r\n\r\n")
        return
    if path == "/v1/responses":
        resp = {
            "id": "resp_abc",
            "object": "response",
            "status": "completed",
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
            ],
            "usage": RESP_U,
        }
        if not stream:
            yield ("w", json_answer(resp))
            return
        objs = [
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {**resp, "status": "in_progress", "usage": None},
            },
            {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "delta": "hi"},
            {"type": "response.completed", "sequence_number": 2, "response": resp},
        ]
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(sse(*objs, names=[o["type"] for o in objs])))
        yield ("w", b"0\r\n\r\n")
        return
    yield ("w", json_answer({"error": "?"}, 404))


def req(path, stream, tag, n=None):
    if path == "/v1/responses":
        b = {"model": "m", "input": tag, "stream": stream}
    elif path == "/v1/completions":
        b = {"model": "m", "prompt": tag, "stream": stream}
    else:
        b = {"model": "m", "messages": [{"role": "user", "content": tag}], "stream": stream, "max_tokens": 10}
    if n:
        b["n"] = n
    return b


CASES = [  # (tenant/label, path, stream, tag, expected (p, c, k) or None when not to be counted, extra)
    ("chat-whole", "/v1/chat/completions", False, "a", (P, C, K)),
    ("chat-stream", "/v1/chat/completions", True, "a", (P, C, K)),
    ("chat-stream-forced", "/v1/chat/completions", True, "forceusage", (P, C, K)),
    ("completions-whole", "/v1/completions", False, "a", (P, C, K)),
    ("completions-stream", "/v1/completions", True, "a", (P, C, K)),
    ("messages-whole", "/v1/messages", False, "a", (P, C, K)),
    ("messages-stream", "/v1/messages", True, "a", (P, C, K)),
    ("messages-stream-specshape", "/v1/messages", True, "specshape", (P, C, K)),
    ("responses-whole", "/v1/responses", False, "a", (P, C, K)),
    ("responses-stream", "/v1/responses", True, "a", (P, C, K)),
    ("retry-500", "/v1/chat/completions", False, "fail500", (P, C, K)),
    ("replica-400-with-usage", "/v1/chat/completions", False, "err400usage", (0, 0, 0)),
    ("client-cut", "/v1/chat/completions", True, "clientcut", (0, 0, 0)),
]


async def main():
    reps = [FakeReplica(28161, handler), FakeReplica(28162, handler)]
    urls = [await r.start() for r in reps]
    cfg = ProxyConfig(replicas=urls, port=28160, access_log=False, server="fast")
    results = []
    async with running_proxy(cfg) as purl, aiohttp.ClientSession() as http:
        for label, path, stream, tag, want in CASES:
            if tag == "fail500":
                state["fail_first"] = 1
            hd = {"X-Tenant-ID": label, "X-Session-ID": "s-" + label}
            if tag == "clientcut":
                try:
                    async with http.post(purl + path, json=req(path, stream, tag), headers=hd) as r:
                        await r.content.readany()
                        r.close()
                except Exception:
                    pass
                await asyncio.sleep(1.5)
                continue
            async with http.post(purl + path, json=req(path, stream, tag), headers=hd) as r:
                await r.read()
                results.append((label, r.status))
        await asyncio.sleep(0.3)
        async with http.get(purl + "/metrics") as r:
            text = await r.text()
    for r in reps:
        await r.stop()
    got = {}
    for fam in text_string_to_metric_families(text):
        for kind in ("prompt", "completion", "cached_prompt"):
            if fam.name == f"saga_tenant_{kind}_tokens":
                for s in fam.samples:
                    if s.name.endswith("_total"):
                        got.setdefault(s.labels["tenant"], {})[kind] = s.value
    for label, path, stream, tag, want in CASES:
        g = got.get(label, {})
        have = (g.get("prompt", 0), g.get("completion", 0), g.get("cached_prompt", 0))
        note = ""
        if label == "messages-stream-specshape" or label.startswith("messages"):
            note = " (message_start carried the input tokens; message_delta only output_tokens, as Anthropic's own API sends it)"
        ok = tuple(int(x) for x in have) == want
        print(
            ("OK" if ok else "DEFECT")
            + f": {label}: counted prompt/completion/cached={tuple(int(x) for x in have)} want {want}{'' if ok else note}"
        )


asyncio.run(main())
