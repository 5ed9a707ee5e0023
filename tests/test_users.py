"""Users kept apart: logins, bearer tokens on every face (API, MCP, the chat's handlers), and
private collections. User B must not read or continue user A's thread, whatever face B uses."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent.chat.handlers import ChatHandlers
from agent.chat.scripted import scripted_chat
from agent.core.config import Settings
from agent.core.turn import Agent, TurnRequest
from agent.records.access import AccessError, prepare_write, readable_collections, set_visibility
from agent.records.turns import list_turns
from agent.records.users import (
    UserError,
    add_user,
    create_token,
    remove_user,
    revoke_token,
    set_password,
    user_for_token,
    verify_login,
)
from evals.doubles.scripted_agent import ScriptedModel
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
PASSWORD = "correct horse battery"


class Server:
    def __init__(self, url: str, agent: Agent, handlers: ChatHandlers, users: dict[str, Any], collection: str) -> None:
        self.url, self.agent, self.handlers, self.users, self.collection = url, agent, handlers, users, collection

    def client(self, name: str | None) -> Any:
        from gradio_client import Client

        headers = {"Authorization": f"Bearer {self.users[name]['token']}"} if name else None
        return Client(self.url, verbose=False, analytics_enabled=False, headers=headers)


@pytest.fixture(scope="module")
def server(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tag = uuid.uuid4().hex[:6]
    collection = f"users-{tag}"
    docs = tmp_path_factory.mktemp("users") / "docs.jsonl"
    write_jsonl(docs, DOCS)
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([docs], collection, progress=False)
    users: dict[str, Any] = {}
    with embedded_db.connection() as conn:
        for name in (f"ann-{tag}", f"bob-{tag}"):
            user = add_user(conn, name, PASSWORD)
            users[name] = {"user": user, "token": create_token(conn, name, "test")[1]}
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root)
    with scripted_chat(settings, kb, ScriptedModel(), login=True) as served:
        try:
            yield Server(served.url, served.agent, ChatHandlers(served.services), users, collection)
        finally:
            with embedded_db.connection() as conn:
                for name in users:
                    remove_user(conn, name)


def names(server: Server) -> tuple[str, str]:
    ann, bob = server.users
    return ann, bob


def as_request(name: str) -> Any:
    """What Gradio hands a handler for a logged-in browser (only the user name is read)."""
    return SimpleNamespace(username=name)


def test_passwords_and_tokens(embedded_db: Database) -> None:
    name = f"carol-{uuid.uuid4().hex[:6]}"
    with embedded_db.connection() as conn:
        user = add_user(conn, name, PASSWORD)
        stored = conn.execute("SELECT password_hash FROM users WHERE id = %s", (user.id,)).fetchone()[0]
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
        assert verify_login(conn, name, PASSWORD) == user
        assert verify_login(conn, name, PASSWORD + "!") is None
        assert verify_login(conn, "nobody-" + name, PASSWORD) is None
        with pytest.raises(UserError, match="already exists"):
            add_user(conn, name, PASSWORD)
        with pytest.raises(UserError, match="at least 8"):
            add_user(conn, name + "x", "short")
        with pytest.raises(UserError, match="user name"):
            add_user(conn, "../etc", PASSWORD)
        set_password(conn, name, "another password")
        assert verify_login(conn, name, PASSWORD) is None and verify_login(conn, name, "another password") == user
        token_id, token = create_token(conn, name)
        assert token.startswith("ldr_")
        digests = [r[0] for r in conn.execute("SELECT token_sha256 FROM api_tokens WHERE user_id = %s", (user.id,))]
        assert digests and token not in digests
        assert user_for_token(conn, token) == user
        assert user_for_token(conn, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        revoke_token(conn, token_id)
        assert user_for_token(conn, token) is None
        remove_user(conn, name)
        assert verify_login(conn, name, "another password") is None


def test_a_thread_is_only_its_owners_through_every_face(server: Server, embedded_db: Database) -> None:
    ann, bob = names(server)
    first = json.loads(server.client(ann).predict("How long do refunds take?", "", "", api_name="/ask"))
    assert "error" not in first, first
    thread = first["thread_id"]

    # The API: bob continues ann's thread by id
    refused = json.loads(server.client(bob).predict("And what did I ask before?", "", thread, api_name="/ask"))
    assert refused == {"error": f"no thread {thread!r}"}

    # MCP with bob's token
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def over_mcp(token: str) -> dict[str, Any]:
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with (
            http,
            streamable_http_client(server.url + "gradio_api/mcp/", http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            called = await session.call_tool("ask", {"question": "Repeat my last answer", "thread_id": thread})
            return json.loads(called.content[0].text)

    assert asyncio.run(over_mcp(server.users[bob]["token"])) == {"error": f"no thread {thread!r}"}

    # The chat: bob's browser holding ann's thread id gets a fresh, empty thread
    state, history = server.handlers.restore({"thread": thread}, as_request(bob))
    assert state["thread"] != thread and history == []
    state, history = server.handlers.restore({"thread": thread}, as_request(ann))
    assert state["thread"] == thread and history[0]["content"] == "How long do refunds take?"
    *_, (history, _, _) = server.handlers.respond(
        "Tell me more", [], {"thread": thread}, server.collection, "", [], as_request(bob)
    )
    assert history[-1]["content"] == f"<p><strong>Error:</strong> no thread {thread!r}</p>"

    # Feedback: a forged history pointing at ann's turn
    forged = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "metadata": {"id": f"turn:{first['turn_id']}"}},
    ]
    _, feedback_id, notice = server.handlers.like(forged, SimpleNamespace(index=1, liked=False), as_request(bob))
    assert feedback_id is None and "no turn" in notice

    with embedded_db.connection() as conn:
        in_thread = [(t["user"], t["question"]) for t in list_turns(conn, limit=1000) if t["thread_id"] == thread]
        assert in_thread == [(ann, "How long do refunds take?")]  # bob's refused asks never entered the thread
        assert [t["turn_id"] for t in list_turns(conn, user=bob)] == []
        assert conn.execute("SELECT count(*) FROM feedback WHERE turn_id = %s", (first["turn_id"],)).fetchone()[0] == 0

    # ann herself continues, and her feedback is stored
    again = json.loads(server.client(ann).predict("Where do parcels ship from?", "", thread, api_name="/ask"))
    assert again["thread_id"] == thread and "error" not in again
    _, feedback_id, _ = server.handlers.like(forged, SimpleNamespace(index=1, liked=False), as_request(ann))
    assert feedback_id is not None


def test_requests_without_a_valid_token_are_refused(server: Server, embedded_db: Database) -> None:
    from gradio_client import Client

    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a 401
        Client(server.url, verbose=False, analytics_enabled=False)
    assert httpx.post(server.url + "gradio_api/call/ask", json={"data": ["q", "", ""]}).status_code == 401
    mcp = server.url + "gradio_api/mcp/"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(mcp, json=body, headers=accept).status_code == 401
    assert httpx.post(mcp, json=body, headers={**accept, "Authorization": "Bearer ldr_forged"}).status_code == 401
    ann, _ = names(server)
    with embedded_db.connection() as conn:
        token_id, token = create_token(conn, ann, "to revoke")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.url + "gradio_api/info", headers=headers).status_code == 200
    with embedded_db.connection() as conn:
        revoke_token(conn, token_id)
    assert httpx.get(server.url + "gradio_api/info", headers=headers).status_code == 401


def test_the_browser_login_checks_the_users_table(server: Server) -> None:
    ann, _ = names(server)
    with httpx.Client(base_url=server.url) as browser:
        assert browser.get("config").status_code == 401
        wrong = browser.post("login", data={"username": ann, "password": "not it"})
        assert wrong.status_code >= 400
        right = browser.post("login", data={"username": ann, "password": PASSWORD})
        assert right.status_code == 200, right.text
        assert browser.get("config").status_code == 200


def test_private_collections(server: Server, embedded_db: Database, embedder, tmp_path: Path) -> None:
    ann, bob = names(server)
    anns = server.users[ann]["user"]
    bobs = server.users[bob]["user"]
    private = f"ann-notes-{time.time_ns()}"
    notes = tmp_path / "notes.md"
    notes.write_text("# Salary\n\nAnn's salary review is on the fourth of May.\n")
    quiet = lambda *a, **k: None  # noqa: E731 - gr.Progress stand-in
    report = server.handlers.ingest([str(notes)], private, as_request(ann), progress=quiet)
    assert "1 added" in report, report
    refused = server.handlers.ingest([str(notes)], private, as_request(bob), progress=quiet)
    assert refused == f"**Error:** no collection {private!r}"
    refused = server.handlers.ingest([str(notes)], server.collection, as_request(ann), progress=quiet)
    assert "read-only for you" in refused  # the operator's collection
    with embedded_db.connection() as conn:
        prepare_write(conn, private, anns, embedder)  # hers: allowed again
        with pytest.raises(AccessError, match="no collection"):
            prepare_write(conn, private, bobs, embedder)
    with embedded_db.connection() as conn:
        assert private in readable_collections(conn, anns) and private not in readable_collections(conn, bobs)
        assert server.collection in readable_collections(conn, bobs)
    assert private not in server.handlers.collections(as_request(bob))
    assert private in server.handlers.collections(as_request(ann))

    refused = json.loads(server.client(bob).predict("salary", 3, private, api_name="/search_knowledge"))
    assert refused == {"error": f"no collection {private!r}"}
    asked = json.loads(server.client(bob).predict("When is the salary review?", private, "", api_name="/ask"))
    assert asked == {"error": f"no collection {private!r}"}
    with pytest.raises(AccessError):
        server.agent.ask(TurnRequest("When is the salary review?", private, user=bobs))
    found = json.loads(server.client(ann).predict("salary", 3, private, api_name="/search_knowledge"))
    assert found[0]["doc_id"].endswith("notes.md")

    with embedded_db.connection() as conn:
        set_visibility(conn, private, "shared")
    shared = json.loads(server.client(bob).predict("salary", 3, private, api_name="/search_knowledge"))
    assert shared[0]["doc_id"] == found[0]["doc_id"]


def test_users_cli(embedded_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli.app import app

    monkeypatch.setenv("DATABASE_URL", embedded_db.url)
    name = f"dave-{uuid.uuid4().hex[:6]}"
    runner = CliRunner()
    added = runner.invoke(app, ["users", "add", name, "--password-stdin"], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    short = runner.invoke(app, ["users", "add", name + "x", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output and "Traceback" not in short.output
    token = runner.invoke(app, ["users", "token", name, "--label", "ci"])
    assert token.exit_code == 0
    secret = token.stdout.strip().splitlines()[0]
    assert secret.startswith("ldr_")
    listed = runner.invoke(app, ["users", "tokens", name])
    assert "ci" in listed.stdout and secret not in listed.stdout
    with embedded_db.connection() as conn:
        assert verify_login(conn, name, PASSWORD) is not None
    assert runner.invoke(app, ["users", "remove", name]).exit_code == 0
    gone = runner.invoke(app, ["users", "remove", name])
    assert gone.exit_code == 1 and "no user" in gone.output


def test_a_public_bind_needs_users() -> None:
    import typer

    from agent.cli.ask import check_bind

    assert check_bind("127.0.0.1", login=False, no_login=False) is None
    assert check_bind("::1", login=False, no_login=False) is None
    assert check_bind("0.0.0.0", login=True, no_login=False) is None
    with pytest.raises(typer.BadParameter, match="ladder users add"):
        check_bind("0.0.0.0", login=False, no_login=False)
    with pytest.raises(typer.BadParameter, match="without a login"):
        check_bind("my-host.example", login=False, no_login=False)
    assert "WITHOUT a login" in (check_bind("0.0.0.0", login=False, no_login=True) or "")
