# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# A fake vLLM replica with controllable timing. Run: python3 fake_replica.py PORT
import asyncio, json, sys, itertools
from aiohttp import web

counter = itertools.count()
STATS = {
    "active_streams": 0,
    "max_active": 0,
    "aborted_streams": 0,
    "finished_streams": 0,
    "gets": 0,
    "cancels": 0,
}


def body_of(rid, text="hello"):
    return {
        "id": rid,
        "object": "response",
        "status": "completed",
        "model": "fake",
        "output": [
            {
                "type": "message",
                "id": "msg_" + rid,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
    }


async def health(r):
    return web.Response(text="")


async def models(r):
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


async def create(r):
    d = await r.json()
    inp = d.get("input")
    mode = inp if isinstance(inp, str) and inp.startswith("mode") else "plain"
    rid = f"resp_{mode.replace(':', '_')}_{sys.argv[1]}x{next(counter)}"
    body = body_of(rid, "answer " + rid)
    if d.get("tools"):
        body["output"] = [
            {
                "type": "reasoning",
                "id": "rs_" + rid,
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "think"}],
                "encrypted_content": None,
            },
            {
                "type": "function_call",
                "id": "fc_" + rid,
                "call_id": "call_" + rid,
                "name": "get_weather",
                "arguments": '{"city": "Paris", "n": 1}',
                "status": "completed",
            },
        ]
    if not d.get("stream"):
        return web.json_response(body)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(r)
    created = {**body, "status": "in_progress", "output": [], "usage": None}
    await resp.write(
        (
            "event: response.created\ndata: "
            + json.dumps({"type": "response.created", "response": created})
            + "\n\n"
        ).encode()
    )
    for i, word in enumerate(("answer " + rid).split(" ")):
        await resp.write(
            (
                "event: response.output_text.delta\ndata: "
                + json.dumps({"type": "response.output_text.delta", "sequence_number": i, "delta": word})
                + "\n\n"
            ).encode()
        )
        await asyncio.sleep(0.01)
    if d.get("metadata", {}).get("cut") != "1":
        await resp.write(
            (
                "event: response.completed\ndata: "
                + json.dumps({"type": "response.completed", "response": body})
                + "\n\n"
            ).encode()
        )
    return resp


async def get(r):
    rid = r.match_info["rid"]
    STATS["gets"] += 1
    if "_m404" in rid:
        return web.json_response(
            {"error": {"message": "nope", "type": "invalid_request_error", "code": 404}},
            status=404,
            headers={"X-Request-Id": "req-fake-1"},
        )
    if "_m500" in rid:
        return web.json_response({"error": {"message": "boom"}}, status=500)
    if "_m400" in rid:
        return web.json_response({"error": {"message": "bad"}}, status=400)
    if "_mbig" in rid:
        return web.json_response(body_of(rid, "x" * (8 * 1024 * 1024)))
    if r.query.get("stream") == "true":
        n = 40 if "_mslow" in rid else 5
        delay = 0.5 if "_mslow" in rid else 0.05
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        STATS["active_streams"] += 1
        STATS["max_active"] = max(STATS["max_active"], STATS["active_streams"])
        try:
            for i in range(n):
                await resp.write(
                    f"event: response.output_text.delta\ndata: {json.dumps({'type': 'response.output_text.delta', 'sequence_number': i, 'delta': 't%d' % i})}\n\n".encode()
                )
                await asyncio.sleep(delay)
            await resp.write(
                (
                    "event: response.completed\ndata: "
                    + json.dumps({"type": "response.completed", "response": body_of(rid)})
                    + "\n\n"
                ).encode()
            )
            STATS["finished_streams"] += 1
        except (ConnectionError, asyncio.CancelledError):
            STATS["aborted_streams"] += 1
            raise
        finally:
            STATS["active_streams"] -= 1
        return resp
    return web.json_response(body_of(rid))


async def cancel(r):
    STATS["cancels"] += 1
    return web.json_response({**body_of(r.match_info["rid"]), "status": "cancelled"})


async def stats(r):
    return web.json_response(STATS)


app = web.Application(client_max_size=64 * 2**20)
app.router.add_get("/health", health)
app.router.add_get("/v1/models", models)
app.router.add_post("/v1/responses", create)
app.router.add_get("/v1/responses/{rid}", get)
app.router.add_post("/v1/responses/{rid}/cancel", cancel)
app.router.add_get("/stats", stats)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, handler_cancellation=True)
