"""Browser logins of the chat server, and the sessions they open.

Checking: Gradio's login route awaits an async ``auth`` callable (a sync one it calls on its event
loop, which froze every user while Argon2 ran). ``BrowserLogins.auth`` is async: it asks
agent.records.logins whether the attempt may go on (a worker thread, one indexed read for a refused
one), then computes the Argon2id hash in a thread of its own pool, at most ``hash_slots`` at a
time, at the lowest CPU priority and without a database connection held. A refused attempt is
answered at once with 429 and Retry-After, 503 when too many checks already wait; once the
database has refused an address or a name, this process refuses the rest of its wait from memory
(an address before its form is even read), so a flood costs a few microseconds an attempt.

Sessions: Gradio keeps them in ``app.tokens`` (cookie value -> user name), per process, for as long
as the process lives. ``SessionGuard`` (ASGI middleware) notes the user id and session generation of
each login it lets through, and on every later request compares them with the users table, cached
for at most SESSION_RECHECK_S: a session whose user is gone or whose password changed since then is
deleted from ``app.tokens`` and its cookie stripped, so Gradio sees a request that is not logged in.
A Gradio session that no login here opened (such as the one BearerTokens lends a token's caller) is
never honoured from a cookie.

Client address: the TCP peer. Uvicorn takes the address from X-Forwarded-For when the peer is in
FORWARDED_ALLOW_IPS, which defaults to loopback; ``pin_forwarded_trust`` makes the default "no
proxy", so only an operator who names their proxy in FORWARDED_ALLOW_IPS has the header believed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio import to_thread
from fastapi import HTTPException
from starlette.requests import cookie_parser

from agent.records.logins import (
    LoginLimits,
    Refused,
    address_key,
    admit,
    attempt_keys,
    login_succeeded,
    prune_attempts,
)
from agent.records.users import Login, login_record, password_matches, session_generation
from knowledge.db import DatabaseError

if TYPE_CHECKING:
    from knowledge.db import Database

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A password change or a removed user ends a session on every server process within this long. Each
# browser request is checked, and a page load is dozens of requests: one second keeps that to one
# query per user per second per process, and is shorter than anyone can act on a stolen cookie by hand.
SESSION_RECHECK_S = 1.0
MAX_WAITING_CHECKS = 16  # admitted attempts waiting for a hash slot; more are refused with 503
ADMIT_SLOTS = 2  # concurrent admission queries: logins borrow at most this many pooled connections
MAX_SESSIONS = 10_000  # per process; past it the oldest session ends
MAX_KEYS_NOTED = 10_000  # refused keys remembered per process; past it the oldest go (the database still knows)
PRUNE_EVERY_S = 60.0
LOGIN_PATHS = frozenset({"/login", "/login/"})
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"


def pin_forwarded_trust() -> str:
    """Trust X-Forwarded-For from no peer unless the operator set FORWARDED_ALLOW_IPS (uvicorn's own
    setting, comma-separated proxy addresses); returns what is trusted. Call before the server starts."""
    trusted = os.environ.setdefault(FORWARDED_ALLOW_IPS, "")
    if trusted:
        log.info("client addresses are taken from X-Forwarded-For when the peer is %s", trusted)
    return trusted


def _lowest_cpu_priority() -> None:
    """Run this thread, and the threads Argon2id starts from it, at the lowest CPU priority (Linux
    keeps a nice value per thread): when the CPUs are busy, logins wait rather than users' turns."""
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:  # a sandbox that forbids it: full priority, still off the event loop
            log.debug("cannot lower the priority of the password-check thread", exc_info=True)


def hash_slots_default() -> int:
    """Password checks at a time: Argon2id uses several cores each, so a quarter of them, at least one."""
    return max(1, (os.cpu_count() or 1) // 4)


class LoginService:
    """The blocking parts of a login (the database and Argon2id); BrowserLogins runs each in a worker thread."""

    def __init__(self, db: Database | None, limits: LoginLimits | None = None) -> None:
        self.db = db
        self.limits = limits or LoginLimits()
        self._pruned = 0.0
        self._prune_lock = threading.Lock()

    def admit(self, name: str, address: str | None) -> Refused | None:
        """None when the attempt may check its password (it is charged); else how long it must wait."""
        if self.db is None:
            return None
        with self.db.connection() as conn:
            wait = admit(conn, name, address, self.limits)
            self._maybe_prune(conn)
        return wait

    def record(self, name: str) -> tuple[Login, str] | None:
        """The user's login and password hash (None for no such user), for ``password_matches``."""
        if self.db is None:
            return None
        with self.db.connection() as conn:
            return login_record(conn, name)

    def succeeded(self, name: str, address: str | None) -> None:
        if self.db is not None:
            with self.db.connection() as conn:
                login_succeeded(conn, name, address, self.limits)

    def generation(self, user_id: int) -> int | None:
        """The user's session generation now; None when the user is gone."""
        if self.db is None:
            return None
        with self.db.connection() as conn:
            return session_generation(conn, user_id)

    def _maybe_prune(self, conn: Any) -> None:
        with self._prune_lock:
            if time.monotonic() - self._pruned < PRUNE_EVERY_S:
                return
            self._pruned = time.monotonic()
        prune_attempts(conn, self.limits)


@dataclass
class _Attempt:
    """One POST /login, from SessionGuard to BrowserLogins.auth and back."""

    address: str | None
    login: Login | None = None


@dataclass(frozen=True)
class _Session:
    user_id: int
    generation: int


_attempt: ContextVar[_Attempt | None] = ContextVar("ladder_login_attempt", default=None)


LIMITED = "too many failed logins from this address or for this name; try again in {seconds} s"


def _refusal(status: int, wait_s: float, message: str) -> HTTPException:
    seconds = max(1, math.ceil(wait_s))
    return HTTPException(status, detail=message.format(seconds=seconds), headers={"Retry-After": str(seconds)})


class BrowserLogins:
    """Gradio's ``auth`` callable (``auth``) and the sessions it opened, for SessionGuard."""

    def __init__(
        self,
        service: LoginService,
        *,
        hash_slots: int | None = None,
        max_waiting: int = MAX_WAITING_CHECKS,
        recheck_s: float = SESSION_RECHECK_S,
    ) -> None:
        self.service = service
        self.hash_slots = hash_slots or hash_slots_default()
        self.max_waiting = max_waiting
        self.recheck_s = recheck_s
        self._waiting = 0
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._hash_pool: ThreadPoolExecutor | None = None
        self._sessions: dict[str, _Session] = {}  # Gradio's cookie value -> what its login checked
        self._generations: dict[int, tuple[float, int | None]] = {}  # user id -> (when read, generation)
        # (kind, key) -> until when (monotonic) the database said it must wait: the rest of a flood is
        # refused from memory, without a query. Only what the database said, so never more than its limit.
        self._waiting_keys: dict[tuple[str, str], float] = {}

    def known_wait(self, keys: list[tuple[str, str]]) -> float | None:
        """The seconds some of these keys must still wait, as far as this process knows; None if none."""
        now = time.monotonic()
        waits = [self._waiting_keys.get(k, 0.0) - now for k in keys]
        return max(waits) if max(waits, default=0.0) > 0 else None

    def _note(self, refused: Refused) -> None:
        now = time.monotonic()
        if len(self._waiting_keys) >= MAX_KEYS_NOTED:
            self._waiting_keys = {k: t for k, t in self._waiting_keys.items() if t > now}
        while len(self._waiting_keys) >= MAX_KEYS_NOTED:
            del self._waiting_keys[next(iter(self._waiting_keys))]
        for key in refused.keys:
            self._waiting_keys[key] = now + refused.wait_s

    def _limiter(self, kind: str) -> anyio.CapacityLimiter:
        # made on first use: a limiter belongs to the event loop of the server, which runs in its own thread
        if kind not in self._limiters:
            self._limiters[kind] = anyio.CapacityLimiter(ADMIT_SLOTS)
        return self._limiters[kind]

    async def auth(self, name: str, password: str) -> bool:
        """Check a login without blocking the event loop; raises 429/503 when the attempt is refused."""
        attempt = _attempt.get() or _Attempt(None)
        known = self.known_wait(attempt_keys(name, attempt.address))
        if known is not None:
            raise _refusal(429, known, LIMITED)
        try:
            refused = await to_thread.run_sync(self.service.admit, name, attempt.address, limiter=self._limiter("db"))
            if refused is not None:
                self._note(refused)
                raise _refusal(429, refused.wait_s, LIMITED)
            if self._waiting >= self.max_waiting:  # many addresses at once: refuse rather than queue without end
                raise _refusal(503, 1, "too many logins are being checked right now; try again in {seconds} s")
            self._waiting += 1
            try:
                login = await self._check(name, password)
            finally:
                self._waiting -= 1
            if login is not None:
                await to_thread.run_sync(self.service.succeeded, name, attempt.address, limiter=self._limiter("db"))
        except DatabaseError as exc:  # the database away: say so, as the rest of the chat does
            raise HTTPException(503, detail=str(exc)) from exc
        attempt.login = login
        return login is not None

    async def _check(self, name: str, password: str) -> Login | None:
        """The login when the password is right: the record read at normal priority, then the hash
        computed in a hashing thread without a database connection held."""
        found = await to_thread.run_sync(self.service.record, name, limiter=self._limiter("db"))
        stored = found[1] if found else None
        matches = await asyncio.get_running_loop().run_in_executor(self._hashing(), password_matches, stored, password)
        return found[0] if found and matches else None

    def _hashing(self) -> ThreadPoolExecutor:
        if self._hash_pool is None:
            self._hash_pool = ThreadPoolExecutor(
                self.hash_slots, thread_name_prefix="ladder-password-check", initializer=_lowest_cpu_priority
            )
        return self._hash_pool

    def opened(self, cookie: str, login: Login, tokens: MutableMapping[str, str]) -> None:
        """Note the session Gradio just opened for a login that ``auth`` let through."""
        for value in [v for v in self._sessions if v not in tokens]:  # logged out meanwhile
            del self._sessions[value]
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = next(iter(self._sessions))
            del self._sessions[oldest]
            tokens.pop(oldest, None)
        self._sessions[cookie] = _Session(login.user.id, login.generation)

    async def valid(self, cookie: str) -> bool:
        """Whether the session is one of ours whose user still exists with the password it logged in with."""
        session = self._sessions.get(cookie)
        if session is None:
            return False
        if await self._generation(session.user_id) == session.generation:
            return True
        del self._sessions[cookie]
        return False

    async def _generation(self, user_id: int) -> int | None:
        seen = self._generations.get(user_id)
        if seen is not None and time.monotonic() - seen[0] < self.recheck_s:
            return seen[1]
        current = await to_thread.run_sync(self.service.generation, user_id, limiter=self._limiter("db"))
        if len(self._generations) > MAX_SESSIONS:
            self._generations.clear()
        self._generations[user_id] = (time.monotonic(), current)
        return current


class SessionGuard:
    """ASGI middleware on Gradio's app: lends POST /login its peer address and notes the session it
    opens; ends, on any other request, a session whose user changed password or is gone."""

    def __init__(self, app: ASGIApp, *, logins: BrowserLogins) -> None:
        self.app = app
        self.logins = logins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gradio_app = scope.get("app")
        tokens = getattr(gradio_app, "tokens", None)
        cookie_id = getattr(gradio_app, "cookie_id", None)
        if scope["type"] not in ("http", "websocket") or tokens is None or cookie_id is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in LOGIN_PATHS:
            await self._login(scope, receive, send, tokens, cookie_id)
            return
        headers = await self._checked(scope, tokens, cookie_id)
        if headers is not None:
            scope = dict(scope)
            scope["headers"] = headers
        await self.app(scope, receive, send)

    async def _login(
        self, scope: Scope, receive: Receive, send: Send, tokens: MutableMapping[str, str], cookie_id: str
    ) -> None:
        client = scope.get("client")
        attempt = _Attempt(client[0] if client else None)
        known = self.logins.known_wait([("address", address_key(attempt.address))])
        if known is not None:  # this address must wait: refused before the form is even read
            refusal = _refusal(429, known, LIMITED)
            await _respond(send, refusal.status_code, {"detail": refusal.detail}, refusal.headers or {})
            return
        name = f"access-token-{cookie_id}"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 200 and attempt.login:
                for key, value in message.get("headers") or []:
                    if key.lower() == b"set-cookie":
                        found = cookie_parser(value.decode("latin-1").split(";", 1)[0])
                        if found.get(name):
                            self.logins.opened(found[name], attempt.login, tokens)
            await send(message)

        reset = _attempt.set(attempt)
        try:
            await self.app(scope, receive, sending)
        finally:
            _attempt.reset(reset)

    async def _checked(
        self, scope: Scope, tokens: MutableMapping[str, str], cookie_id: str
    ) -> list[tuple[bytes, bytes]] | None:
        """The request's headers without its session cookies when its session has ended; None when
        there is nothing to strip. Reads the first Cookie header, as Starlette (and so Gradio) does."""
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        raw = next((v for k, v in headers if k == b"cookie"), None)
        if raw is None:
            return None
        cookies = cookie_parser(raw.decode("latin-1"))
        names = (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}")
        ended = False
        for value in {cookies[n] for n in names if cookies.get(n)}:
            if value in tokens and not await self.logins.valid(value):
                tokens.pop(value, None)  # Gradio forgets the session too, whichever cookie brings it next
                ended = True
        if not ended:
            return None
        kept = "; ".join(f"{k}={v}" for k, v in cookies.items() if k not in names)
        rest = [(k, v) for k, v in headers if k != b"cookie"]
        return [*rest, (b"cookie", kept.encode("latin-1"))] if kept else rest


async def _respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    fields += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": data})
