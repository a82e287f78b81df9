# ruff: noqa
"""A fake vLLM replica: /health 200, /metrics minimal, /v1/models; chat: mode 'err500' -> 500, 'big' -> 200 with a large body."""

import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, mode = int(sys.argv[1]), sys.argv[2]


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, b"")
        elif self.path == "/metrics":
            self._send(
                200,
                b'vllm:num_requests_waiting{model_name="m"} 0\nvllm:num_requests_running{model_name="m"} 0\nvllm:kv_cache_usage_perc{model_name="m"} 0\n',
                "text/plain",
            )
        elif self.path == "/v1/models":
            self._send(
                200, json.dumps({"object": "list", "data": [{"id": "saga-sim", "object": "model"}]}).encode()
            )
        else:
            self._send(404, b"{}")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if mode == "err500":
            self._send(500, b'{"error": "boom"}')
        else:
            self._send(
                200,
                json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "y" * 5000},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode(),
            )


ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
