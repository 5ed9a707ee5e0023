"""Bearer tokens for MCP and API callers of the chat server, as ASGI middleware on Gradio's app.

Gradio's login (``launch(auth=...)``) is a browser session cookie, and its MCP endpoint checks no
login at all. This middleware closes both gaps: with logins on, every MCP request needs
``Authorization: Bearer <token>``; and a request with a valid token is given the Gradio session
of the token's user, so the API routes, ``gr.Request.username`` and the per-user checks behind
them work the same for a token as for a browser login. A bad token is refused with 401 here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MCP_PREFIX = "/gradio_api/mcp"
OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible API (agent/chat/openai_api.py): its clients read OpenAI's error shape


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for any other value."""
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class BearerTokens:
    """ASGI middleware: ``resolve(token)`` gives the user name of a valid token, or None."""

    def __init__(self, app: ASGIApp, *, resolve: Callable[[str], str | None], login_required: bool) -> None:
        self.app = app
        self.resolve = resolve
        self.login_required = login_required
        self._sessions: dict[str, str] = {}  # user name -> the Gradio session token lent to their API calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        token = bearer_token(next((v for k, v in headers if k == b"authorization"), b"").decode("latin-1"))
        if not self.login_required and scope.get("path", "").startswith(OPENAI_PREFIX):
            token = None  # no users: the local operator asks; OpenAI clients must send some key, any key will do
        if token is not None:
            user = await to_thread.run_sync(self.resolve, token)
            if user is None:
                await _refuse(scope, send, "invalid or revoked token")
                return
            scope = dict(scope)
            scope["headers"] = self._as_session(scope, headers, user)
        elif self.login_required and scope.get("path", "").startswith((MCP_PREFIX, OPENAI_PREFIX)):
            await _refuse(scope, send, "this server needs a bearer token: ladder users token NAME")
            return
        await self.app(scope, receive, send)

    def _as_session(self, scope: Scope, headers: list[tuple[bytes, bytes]], user: str) -> list[tuple[bytes, bytes]]:
        """The headers with the caller's cookies replaced by the user's Gradio session cookie."""
        gradio_app = scope.get("app")
        tokens = getattr(gradio_app, "tokens", None)
        cookie_id = getattr(gradio_app, "cookie_id", None)
        kept = [(k, v) for k, v in headers if k != b"cookie"]
        if tokens is None or cookie_id is None:
            return kept
        session = self._sessions.get(user)
        if session is None or tokens.get(session) != user:
            session = self._sessions[user] = secrets.token_urlsafe(32)
            tokens[session] = user
        return [*kept, (b"cookie", f"access-token-{cookie_id}={session}".encode())]


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    error: object = message
    if str(scope.get("path", "")).startswith(OPENAI_PREFIX):
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="ladder"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
