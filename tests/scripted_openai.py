"""A scripted OpenAI-compatible server on loopback, for the parts that would call a hosted model.

The real ``openai`` client talks to it over HTTP; it answers ``/v1/embeddings`` with deterministic
bag-of-words vectors and ``/v1/chat/completions`` (plain or streamed) with a scripted reply, and
records every request so tests can check what was sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIMENSION = 32


def bag_of_words_vector(text: str, dimension: int = DIMENSION) -> list[float]:
    vector = [0.0] * dimension
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip(".,?!").encode()).digest()
        vector[digest[0] % dimension] += 1.0
    return vector


class ScriptedOpenAI:
    """Start with ``with ScriptedOpenAI() as server:``; ``server.base_url`` goes to the client."""

    def __init__(self, reply: Any = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply = reply or (lambda question: f"You asked: {question}")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if self.path == "/v1/chat/completions":
                    return self._chat(body)
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": "not scripted", "type": "invalid_request_error"}})
                if body.get("model") == "refuse-me":
                    return self._send(400, {"error": {"message": "model refused", "type": "invalid_request_error"}})
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = [
                    {"object": "embedding", "index": i, "embedding": bag_of_words_vector(text)}
                    for i, text in enumerate(inputs)
                ]
                data.reverse()  # the API does not promise order; clients must sort by index
                usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
                return self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

            def _chat(self, body: dict[str, Any]) -> None:
                last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
                reply = outer.reply(last)
                usage = {"prompt_tokens": 7, "completion_tokens": len(reply.split()), "total_tokens": 7}
                usage["total_tokens"] += usage["completion_tokens"]
                base = {"id": "chatcmpl-scripted", "created": 0, "model": body["model"]}
                if not body.get("stream"):
                    message = {"role": "assistant", "content": reply}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    return self._send(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = reply.split(" ")
                for i, word in enumerate(words):
                    delta = {"content": word + (" " if i < len(words) - 1 else "")}
                    chunk = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                done = {"index": 0, "delta": {}, "finish_reason": "stop"}
                self.wfile.write(
                    f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [done]})}\n\n".encode()
                )
                if (body.get("stream_options") or {}).get("include_usage"):
                    tail = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                    self.wfile.write(f"data: {json.dumps(tail)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
