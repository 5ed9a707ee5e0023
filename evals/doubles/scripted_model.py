"""A scripted OpenAI-compatible server on loopback, for tests and benchmarks of the parts that
would call a hosted model.

The real ``openai`` client talks to it over HTTP. It answers ``/v1/embeddings`` with
deterministic bag-of-words vectors and ``/v1/chat/completions`` (plain, streamed, or with tool
calls) with whatever the test's ``chat`` function returns, and records every request.

``chat(body)`` returns a string (the reply), a dict (an assistant message, e.g. with
``tool_calls``), or raises ``Fail`` to answer with an HTTP error.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIMENSION = 32


class Fail(Exception):
    """Answer this request with an HTTP error (and optional headers, such as retry-after)."""

    def __init__(self, status: int, message: str = "scripted failure", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


CUT = "\x00cut\x00"  # in a scripted reply: a streamed answer stops here, the connection dropped mid-stream


def bag_of_words_vector(text: str, dimension: int = DIMENSION) -> list[float]:
    vector = [0.0] * dimension
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip(".,?!").encode()).digest()
        vector[digest[0] % dimension] += 1.0
    return vector


def last_user(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


class ScriptedOpenAI:
    """Start with ``with ScriptedOpenAI(chat=...) as server:``; ``server.base_url`` goes to the client."""

    def __init__(
        self,
        chat: Callable[[dict[str, Any]], str | dict[str, Any]] | None = None,
        *,
        delay_s: float = 0.0,
        token_delay_s: float = 0.0,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}  # uploads to /v1/files
        self.jobs: dict[str, dict[str, Any]] = {}  # fine-tuning jobs
        self.chat = chat or (lambda body: f"You asked: {last_user(body)}")
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s  # between streamed words, so that a UI sees the stream arrive
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _remember(self, body: dict[str, Any] | None) -> None:
                with outer._lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})

            def do_GET(self) -> None:
                self._remember(None)
                path = self.path.split("?", 1)[0]
                parts = path.strip("/").split("/")
                if path == "/v1/fine_tuning/jobs":
                    return self._send(200, {"object": "list", "data": list(outer.jobs.values()), "has_more": False})
                if len(parts) == 4 and parts[:3] == ["v1", "fine_tuning", "jobs"] and parts[3] in outer.jobs:
                    return self._send(200, outer.jobs[parts[3]])
                if len(parts) == 5 and parts[4] == "events" and parts[3] in outer.jobs:
                    event = {"id": "ev-1", "object": "fine_tuning.job.event", "created_at": 0, "level": "info"}
                    data = [{**event, "message": f"Job {parts[3]} is {outer.jobs[parts[3]]['status']}"}]
                    return self._send(200, {"object": "list", "data": data, "has_more": False})
                return self._send(404, {"error": {"message": "not scripted", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/files":  # multipart upload: keep the bytes for the test to read
                    with outer._lock:
                        file_id = f"file-{len(outer.files) + 1}"
                        outer.files[file_id] = raw
                        outer.requests.append(
                            {"path": self.path, "body": None, "auth": self.headers.get("Authorization")}
                        )
                    return self._send(
                        200,
                        {
                            "id": file_id,
                            "object": "file",
                            "bytes": len(raw),
                            "created_at": 0,
                            "filename": "upload.jsonl",
                            "purpose": "fine-tune",
                            "status": "processed",
                        },
                    )
                body = json.loads(raw or b"{}")
                if self.path == "/v1/fine_tuning/jobs":
                    with outer._lock:
                        job_id = f"ftjob-{len(outer.jobs) + 1}"
                        outer.jobs[job_id] = {
                            "id": job_id,
                            "object": "fine_tuning.job",
                            "created_at": 0,
                            "model": body["model"],
                            "training_file": body["training_file"],
                            "validation_file": body.get("validation_file"),
                            "status": "queued",
                            "fine_tuned_model": None,
                            "organization_id": "org-scripted",
                            "result_files": [],
                            "seed": 0,
                            "hyperparameters": {"n_epochs": "auto"},
                            "finished_at": None,
                            "error": None,
                            "trained_tokens": None,
                        }
                        outer.requests.append(
                            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                        )
                    return self._send(200, outer.jobs[job_id])
                with outer._lock:
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
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                try:
                    reply = outer.chat(body)
                except Fail as fail:
                    payload = {"error": {"message": fail.message, "type": "server_error"}}
                    return self._send(fail.status, payload, fail.headers)
                message = reply if isinstance(reply, dict) else {"role": "assistant", "content": reply}
                message.setdefault("role", "assistant")
                content = message.get("content") or ""
                usage = {"prompt_tokens": 11, "completion_tokens": max(1, len(content.split()))}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                base = {"id": "chatcmpl-scripted", "created": 0, "model": body["model"]}
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                if not body.get("stream"):
                    choice = {"index": 0, "message": message, "finish_reason": finish}
                    return self._send(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                cut = CUT in content
                words = content.split(CUT)[0].split(" ")
                for i, word in enumerate(words):
                    delta = {"content": word + (" " if i < len(words) - 1 else "")}
                    self._event({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})
                    if outer.token_delay_s:
                        time.sleep(outer.token_delay_s)
                if cut:  # drop the connection without finishing the stream
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                done = {"index": 0, "delta": {}, "finish_reason": finish}
                self._event({**base, "object": "chat.completion.chunk", "choices": [done]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def _event(self, payload: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
