"""A fast vLLM stand-in for the one-shot flood (one_shot_flood.sh): `/health`, `/v1/models`, a `/metrics`
reporting 100,000 KV blocks of 16 tokens (1.6M tokens) and nothing in its queue, and a one-token chat answer
with usage. Keep-alive, Content-Length bodies only. Usage: `python fake_replica.py PORT`."""

from __future__ import annotations

import asyncio
import json
import sys

import uvloop

METRICS = (
    b'vllm:num_requests_waiting{model_name="m"} 0\n'
    b'vllm:num_requests_running{model_name="m"} 0\n'
    b'vllm:kv_cache_usage_perc{model_name="m"} 0.0\n'
    b'vllm:cache_config_info{block_size="16",num_gpu_blocks="100000"} 1.0\n'
)
MODELS = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
ANSWER = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
).encode()


class Replica(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]  # a stream transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(" ")[1]
            if path.startswith("/metrics"):
                body, kind = METRICS, b"text/plain"
            elif path.startswith("/v1/models"):
                body, kind = MODELS, b"application/json"
            elif path.startswith("/health"):
                body, kind = b"", b"text/plain"
            else:
                body, kind = ANSWER, b"application/json"
            head_out = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            self.transport.write(head_out % (kind, len(body)) + body)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Replica, "127.0.0.1", port, backlog=1024)
    print("replica on", port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
