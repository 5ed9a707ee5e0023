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
        self._server = _ScriptedServer(self)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def remember(self, path: str, body: dict[str, Any] | None, auth: str | None) -> None:
        """Record one request for the test to read."""
        with self._lock:
            self._record(path, body, auth)

    def store_file(self, raw: bytes, path: str, auth: str | None) -> str:
        """Keep an upload's bytes and record its request; returns the new file's id."""
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = raw
            self._record(path, None, auth)
        return file_id

    def create_job(self, body: dict[str, Any], path: str, auth: str | None) -> dict[str, Any]:
        """Queue a fine-tuning job and record its request; returns the job."""
        with self._lock:
            job_id = f"ftjob-{len(self.jobs) + 1}"
            self.jobs[job_id] = _fine_tuning_job(job_id, body)
            self._record(path, body, auth)
        return self.jobs[job_id]

    def _record(self, path: str, body: dict[str, Any] | None, auth: str | None) -> None:
        self.requests.append({"path": path, "body": body, "auth": auth})

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _file_object(file_id: str, size: int) -> dict[str, Any]:
    """The API's description of an uploaded file."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": 0,
        "filename": "upload.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }


def _fine_tuning_job(job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A freshly queued fine-tuning job, as the API describes it."""
    return {
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


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Bag-of-words embeddings of the request's inputs, in reversed order."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [
        {"object": "embedding", "index": i, "embedding": bag_of_words_vector(text)} for i, text in enumerate(inputs)
    ]
    data.reverse()  # the API does not promise order; clients must sort by index
    usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
    return {"object": "list", "data": data, "model": body["model"], "usage": usage}


def _assistant_message(reply: str | dict[str, Any]) -> dict[str, Any]:
    """The scripted reply as an assistant message."""
    message = reply if isinstance(reply, dict) else {"role": "assistant", "content": reply}
    message.setdefault("role", "assistant")
    return message


def _usage(content: str) -> dict[str, int]:
    """Token counts for a reply: a fixed prompt size and one token per word."""
    usage = {"prompt_tokens": 11, "completion_tokens": max(1, len(content.split()))}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


NOT_SCRIPTED = {"error": {"message": "not scripted", "type": "invalid_request_error"}}


class _ScriptedServer(ThreadingHTTPServer):
    """A loopback HTTP server whose handlers read and write one ``ScriptedOpenAI``."""

    daemon_threads = True

    def __init__(self, scripted: ScriptedOpenAI) -> None:
        self.scripted = scripted
        super().__init__(("127.0.0.1", 0), ScriptedHandler)


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests as the scripted OpenAI-compatible API."""

    protocol_version = "HTTP/1.1"
    server: _ScriptedServer

    def log_message(self, *args: object) -> None:
        return

    @property
    def scripted(self) -> ScriptedOpenAI:
        return self.server.scripted

    def _auth(self) -> str | None:
        return self.headers.get("Authorization")

    def do_GET(self) -> None:
        """Fine-tuning jobs: the list, one job, or one job's events."""
        scripted = self.scripted
        scripted.remember(self.path, None, self._auth())
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if path == "/v1/fine_tuning/jobs":
            return self._send(200, {"object": "list", "data": list(scripted.jobs.values()), "has_more": False})
        if len(parts) == 4 and parts[:3] == ["v1", "fine_tuning", "jobs"] and parts[3] in scripted.jobs:
            return self._send(200, scripted.jobs[parts[3]])
        if len(parts) == 5 and parts[4] == "events" and parts[3] in scripted.jobs:
            event = {"id": "ev-1", "object": "fine_tuning.job.event", "created_at": 0, "level": "info"}
            data = [{**event, "message": f"Job {parts[3]} is {scripted.jobs[parts[3]]['status']}"}]
            return self._send(200, {"object": "list", "data": data, "has_more": False})
        return self._send(404, NOT_SCRIPTED)

    def do_POST(self) -> None:
        """File uploads, fine-tuning jobs, chat completions and embeddings."""
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/files":  # multipart upload: keep the bytes for the test to read
            file_id = self.scripted.store_file(raw, self.path, self._auth())
            return self._send(200, _file_object(file_id, len(raw)))
        body = json.loads(raw or b"{}")
        if self.path == "/v1/fine_tuning/jobs":
            return self._send(200, self.scripted.create_job(body, self.path, self._auth()))
        self.scripted.remember(self.path, body, self._auth())
        if self.path == "/v1/chat/completions":
            return self._chat(body)
        if self.path != "/v1/embeddings":
            return self._send(404, NOT_SCRIPTED)
        if body.get("model") == "refuse-me":
            return self._send(400, {"error": {"message": "model refused", "type": "invalid_request_error"}})
        return self._send(200, _embeddings(body))

    def _chat(self, body: dict[str, Any]) -> None:
        """Answer a chat completion with the scripted reply, whole or streamed."""
        if self.scripted.delay_s:
            time.sleep(self.scripted.delay_s)
        try:
            reply = self.scripted.chat(body)
        except Fail as fail:
            payload = {"error": {"message": fail.message, "type": "server_error"}}
            return self._send(fail.status, payload, fail.headers)
        message = _assistant_message(reply)
        usage = _usage(message.get("content") or "")
        base = {"id": "chatcmpl-scripted", "created": 0, "model": body["model"]}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return self._send(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        return self._stream(body, message.get("content") or "", base, finish, usage)

    def _stream(
        self, body: dict[str, Any], content: str, base: dict[str, Any], finish: str, usage: dict[str, int]
    ) -> None:
        """Stream the reply word by word as server-sent events; drop the connection at a ``CUT``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        words = content.split(CUT)[0].split(" ")
        for i, word in enumerate(words):
            delta = {"content": word + (" " if i < len(words) - 1 else "")}
            self._event({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})
            if self.scripted.token_delay_s:
                time.sleep(self.scripted.token_delay_s)
        if CUT in content:  # drop the connection without finishing the stream
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
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
