"""Logins that cannot freeze the server or be flooded, and sessions that end when they should.

Everything here talks HTTP to a real launched chat server (Gradio, uvicorn, loopback) backed by the
embedded PostgreSQL. Each test sends its logins from its own loopback address (all of 127/8 is the
loopback interface), so the per-address limits of one test do not touch another's.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import agent.chat.login as login_module
from agent.chat.scripted import scripted_chat
from agent.core.config import Settings
from agent.records.logins import Limit, LoginLimits, Refused, address_key, admit, login_succeeded, prune_attempts
from agent.records.users import add_user, create_token, remove_user, revoke_token
from evals.doubles.scripted_agent import ScriptedModel
from knowledge.base import KnowledgeBase
from knowledge.db import Database

PASSWORD = "correct horse battery"
POLL_TRIES = 50  # a session check is cached for SESSION_RECHECK_S (1 s); 50 tries of 0.1 s bound the wait


def loopback() -> str:
    """A loopback address of its own for one test's client."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


class Server:
    def __init__(self, url: str, db: Database, tag: str) -> None:
        self.url, self.db, self.tag = url, db, tag

    def user(self, stem: str) -> str:
        name = f"{stem}-{self.tag}-{uuid.uuid4().hex[:4]}"
        with self.db.connection() as conn:
            add_user(conn, name, PASSWORD)
        return name

    def browser(self, address: str | None = None) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address or loopback())
        return httpx.Client(base_url=self.url, transport=transport, timeout=60)


@pytest.fixture(scope="module")
def server(embedded_db: Database, embedder) -> Iterator[Server]:
    settings = Settings(llm_max_retries=0, data_dir=embedded_db.embedded.root)
    kb = KnowledgeBase(embedded_db, embedder)
    tag = uuid.uuid4().hex[:6]
    with embedded_db.connection() as conn:
        add_user(conn, f"keeper-{tag}", PASSWORD)  # logins on for the whole module
    with scripted_chat(settings, kb, ScriptedModel(), login=True) as served:
        try:
            yield Server(served.url, embedded_db, tag)
        finally:
            with embedded_db.connection() as conn:
                conn.execute("DELETE FROM users WHERE name LIKE %s", (f"%-{tag}-%",))
                remove_user(conn, f"keeper-{tag}")


def log_in(browser: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    return browser.post("login", data={"username": name, "password": password})


async def _flood_then_ping(url: str, names: list[str], db: Database) -> tuple[list[str], list[int]]:
    """Wrong logins for ``names`` at once, each from an address of its own (no limit refuses any);
    once the server has taken them up, one trivial request. The order in which the answers came back."""
    order: list[str] = []
    sources = [loopback() for _ in names]
    floods = [
        httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address=a), timeout=120)
        for a in sources
    ]
    async with httpx.AsyncClient(base_url=url, timeout=120) as other:

        async def attempt(flood: httpx.AsyncClient, name: str) -> int:
            async with flood:
                reply = await flood.post("login", data={"username": name, "password": "not the password"})
            order.append("login")
            return reply.status_code

        tasks = [asyncio.create_task(attempt(f, n)) for f, n in zip(floods, names, strict=True)]
        for _ in range(500):  # until the server has admitted one of them (its password check has begun)
            with db.connection() as conn:
                row = conn.execute(
                    "SELECT 1 FROM login_attempts WHERE kind = 'address' AND key = ANY(%s)", (sources,)
                ).fetchone()
            if row or all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        assert (await other.get("gradio_api/user")).status_code == 200
        order.append("trivial")
        codes = await asyncio.gather(*tasks)
    return order, list(codes)


def test_checking_passwords_does_not_hold_up_other_requests(server: Server) -> None:
    names = [f"nobody-{server.tag}-{i}" for i in range(8)]
    order, codes = asyncio.run(_flood_then_ping(server.url, names, server.db))
    assert codes == [400] * len(names)
    # Eight Argon2id checks run one after another (one hash slot on this machine) take ~1-2 s; the
    # trivial request is answered while they are still in flight, before most of them. When the
    # check ran on the event loop, the trivial request waited behind every check that had begun.
    assert order.index("trivial") < len(names) // 2, order


def test_a_flood_is_refused_without_hashing_whatever_x_forwarded_for_says(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    real = login_module.password_matches
    monkeypatch.setattr(login_module, "password_matches", lambda h, p: hashed.append(p) or real(h, p))
    address = "127.0.0.1"  # the peer uvicorn believes X-Forwarded-For from by default
    ann = server.user("ann")

    async def flood() -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=120) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            "login",
                            data={"username": f"guess-{i}", "password": f"wrong {i}"},
                            headers={"X-Forwarded-For": f"10.{i}.0.1"},  # a spoofed client address each time
                        )
                        for i in range(30)
                    )
                )
            )

    try:
        replies = asyncio.run(flood())
        with server.db.connection() as conn:
            keys = {k for (k,) in conn.execute("SELECT key FROM login_attempts WHERE kind = 'address'")}
    finally:  # other modules' servers log in from 127.0.0.1 too
        with server.db.connection() as conn:
            conn.execute("DELETE FROM login_attempts WHERE kind = 'address' AND key = %s", (address,))
    codes = Counter(r.status_code for r in replies)
    assert set(codes) == {400, 429} and codes[429] >= 20, codes  # one peer: five checked, the rest refused
    assert len(hashed) == codes[400]  # a refused attempt computed no hash
    refused = next(r for r in replies if r.status_code == 429)
    assert "too many failed logins" in refused.json()["detail"] and int(refused.headers["Retry-After"]) >= 1
    assert address in keys and not any(k.startswith("10.") for k in keys)  # the peer counted, not the header
    with server.browser() as elsewhere:  # the flood's names were made up: a real user elsewhere logs in
        assert log_in(elsewhere, ann).status_code == 200


def test_too_many_checks_at_once_are_refused_not_queued(server: Server) -> None:
    count = login_module.MAX_WAITING_CHECKS + 8  # each from its own address: no limit refuses any of them

    async def burst() -> list[httpx.Response]:
        clients = [
            httpx.AsyncClient(base_url=server.url, transport=httpx.AsyncHTTPTransport(local_address=loopback()))
            for _ in range(count)
        ]
        try:
            return list(
                await asyncio.gather(
                    *(
                        c.post("login", data={"username": f"many-{i}", "password": "wrong"}, timeout=120)
                        for i, c in enumerate(clients)
                    )
                )
            )
        finally:
            for client in clients:
                await client.aclose()

    replies = asyncio.run(burst())
    codes = Counter(r.status_code for r in replies)
    assert set(codes) == {400, 503} and codes[400] >= login_module.MAX_WAITING_CHECKS, codes
    busy = next(r for r in replies if r.status_code == 503)
    assert "too many logins are being checked" in busy.json()["detail"] and busy.headers["Retry-After"] == "1"


def test_a_name_is_limited_across_addresses(server: Server) -> None:
    ann = server.user("ann")
    codes = []
    for _ in range(10):  # each attempt from a fresh address: only the name can be what refuses one
        with server.browser() as browser:
            codes.append(log_in(browser, ann, "wrong password").status_code)
        if codes[-1] != 400:
            break
    # five free failures, then waits of 1, 2, 4 s...: a check takes far less, so a refusal comes soon
    assert codes[:5] == [400] * 5 and codes[-1] == 429, codes


def test_delays_grow_are_capped_and_reset(embedded_db: Database) -> None:
    limits = LoginLimits(address=Limit(20, 1.0, 100.0), name=Limit(2, 1.0, 4.0), window_s=900)
    tag = uuid.uuid4().hex[:8]
    name, address = f"eve-{tag}", f"2001:db8:{int(tag[:4], 16):x}:{int(tag[4:], 16) % 65536:x}::1"
    key = address_key(address)
    assert key == address_key(address.replace("::1", "::2")) and key.endswith("/64")

    def delay(kind: str, value: str) -> float:
        with embedded_db.connection() as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM next_at - now())::float8 FROM login_attempts WHERE kind = %s AND key = %s",
                (kind, value),
            ).fetchone()
        return round(row[0]) if row else 0.0

    def spend_delays() -> None:  # as if the wait had passed
        with embedded_db.connection() as conn:
            conn.execute("UPDATE login_attempts SET next_at = now() WHERE key IN (%s, %s)", (name, key))

    with embedded_db.connection() as conn:
        assert admit(conn, name, address, limits) is None
        assert admit(conn, name, address, limits) is None  # the name's second failure: it must now wait 1 s
        refused = admit(conn, name, address, limits)
        assert refused is not None and 0 < refused.wait_s <= 1.0 and refused.keys == (("name", name),)
    seen = [delay("name", name)]
    for _ in range(4):
        spend_delays()
        with embedded_db.connection() as conn:
            assert admit(conn, name, address, limits) is None
        seen.append(delay("name", name))
    assert seen == [1, 2, 4, 4, 4]  # doubling, capped
    with embedded_db.connection() as conn:
        failures = conn.execute("SELECT failures FROM login_attempts WHERE key = %s", (key,)).fetchone()[0]
        login_succeeded(conn, name, address, limits)
        assert conn.execute("SELECT count(*) FROM login_attempts WHERE key = %s", (name,)).fetchone()[0] == 0
        refunded = conn.execute("SELECT failures FROM login_attempts WHERE key = %s", (key,)).fetchone()[0]
        assert refunded == failures - 1
        assert admit(conn, name, None, limits) is None  # the name starts afresh
        assert admit(conn, "../not a name", address, limits) is None
        assert conn.execute("SELECT count(*) FROM login_attempts WHERE key = '../not a name'").fetchone()[0] == 0
        conn.execute(
            "UPDATE login_attempts SET last_at = now() - interval '1 hour', next_at = now() WHERE key IN (%s, %s)",
            (name, key),
        )
        assert prune_attempts(conn, limits) >= 2
        assert conn.execute("SELECT count(*) FROM login_attempts WHERE key IN (%s, %s)", (name, key)).fetchone()[0] == 0


def test_concurrent_attempts_cannot_slip_past_the_count(embedded_db: Database) -> None:
    limits = LoginLimits(address=Limit(100, 1.0, 60.0), name=Limit(3, 1.0, 60.0))
    name = f"zed-{uuid.uuid4().hex[:8]}"

    def one(_: int) -> Refused | None:
        with embedded_db.connection() as conn:
            return admit(conn, name, loopback(), limits)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(12)))
    assert results.count(None) == 3
    assert all(r.wait_s > 0 and r.keys == (("name", name),) for r in results if r is not None)


def _poll_until_refused(browser: httpx.Client) -> int:
    for _ in range(POLL_TRIES):
        status = browser.get("config").status_code
        if status != 200:
            return status
        asyncio.run(asyncio.sleep(0.1))
    return 200


def test_a_password_change_ends_the_users_sessions(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli.app import app

    monkeypatch.setenv("DATABASE_URL", server.db.url)
    ann, bob = server.user("ann"), server.user("bob")
    with server.browser() as anns, server.browser() as anns_other, server.browser() as bobs:
        for browser, name in ((anns, ann), (anns_other, ann), (bobs, bob)):
            assert log_in(browser, name).status_code == 200
            assert browser.get("config").status_code == 200
        changed = CliRunner().invoke(app, ["users", "passwd", ann, "--password-stdin"], input="a new passphrase\n")
        assert changed.exit_code == 0, changed.output
        assert _poll_until_refused(anns) == 401
        assert anns_other.get("config").status_code == 401  # every session of hers, not just one
        assert bobs.get("config").status_code == 200  # bob's stays
        assert log_in(anns, ann, PASSWORD).status_code == 400
        assert log_in(anns, ann, "a new passphrase").status_code == 200
        assert anns.get("config").status_code == 200


def test_removing_a_user_ends_their_sessions(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli.app import app

    monkeypatch.setenv("DATABASE_URL", server.db.url)
    carol = server.user("carol")
    with server.browser() as browser:
        assert log_in(browser, carol).status_code == 200
        assert browser.get("config").status_code == 200
        assert CliRunner().invoke(app, ["users", "remove", carol]).exit_code == 0
        assert _poll_until_refused(browser) == 401
    with server.db.connection() as conn:  # a new user of the same name does not inherit the old sessions
        add_user(conn, carol, PASSWORD)
    with server.browser() as browser:
        assert log_in(browser, carol).status_code == 200


def test_a_revoked_token_and_the_session_it_was_lent_stop_at_once(server: Server) -> None:
    dave = server.user("dave")
    with server.db.connection() as conn:
        token_id, token = create_token(conn, dave, "to revoke")
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        lent: dict[str, Any] = client.get("gradio_api/token", headers=bearer).json()
        assert lent["user"] == dave and lent["token"]
        assert client.get("config", headers=bearer).status_code == 200
    # the session Gradio lends a token's requests is not a login: it is never honoured from a cookie
    with httpx.Client(base_url=server.url, timeout=60) as thief:
        thief.cookies.set(f"access-token-{_cookie_id(server)}", lent["token"])
        assert thief.get("config").status_code == 401
    with server.db.connection() as conn:
        revoke_token(conn, token_id)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("config", headers=bearer).status_code == 401
        mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream", **bearer}
        assert client.post("gradio_api/mcp/", json=mcp, headers=accept).status_code == 401


def _cookie_id(server: Server) -> str:
    """The server's session cookie suffix, as a browser learns it from its login."""
    with server.browser() as browser:
        reply = log_in(browser, f"keeper-{server.tag}")
        assert reply.status_code == 200
        names = [c.name for c in browser.cookies.jar if c.name.startswith("access-token-unsecure-")]
    return names[0].removeprefix("access-token-unsecure-")


def test_a_browser_session_ends_with_a_password_change(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect, sync_playwright

    from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
    from agent.cli.app import app

    monkeypatch.setenv("DATABASE_URL", server.db.url)
    erin = server.user("erin")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(locale="en-US")
            page.goto(server.url, wait_until="load")
            page.get_by_label("username").fill(erin)
            page.get_by_label("password").fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            expect(page.locator("#model_name")).to_contain_text("scripted")
            page.reload(wait_until="load")
            expect(page.locator("#model_name")).to_contain_text("scripted")  # the session holds across pages
            changed = CliRunner().invoke(app, ["users", "passwd", erin, "--password-stdin"], input="fresh passphrase\n")
            assert changed.exit_code == 0, changed.output
            for _ in range(POLL_TRIES):  # the next page load after the change shows the login form again
                page.reload(wait_until="load")
                if page.get_by_label("password").count():
                    break
            expect(page.get_by_label("password")).to_be_visible()
            expect(page.locator("#model_name")).to_have_count(0)
        finally:
            browser.close()
