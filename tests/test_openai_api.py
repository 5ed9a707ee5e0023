"""Ladder as an OpenAI-compatible model: the real ``openai`` client (streaming and not) against the real
chat server, its agent on a scripted model. Each collection is a model ``ladder/<collection>``; the
reply carries its references and a ``ladder`` field; the history a client sends makes follow-ups work;
every call is a turn with face ``openai``; bad input gets OpenAI's error shape and starts no turn."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from agent.chat.openai_api import MAX_MESSAGE_CHARS, REFERENCES, REVISED, answer_of
from agent.chat.scripted import ScriptedChat, scripted_chat
from agent.core.config import Settings
from agent.records.access import set_visibility
from agent.records.users import add_user, create_token, remove_user
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import last_user
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyzABCDEFGH012345"
WAIT_S = 60.0  # how long a test waits for a turn to reach the log (a bound, not a timing assertion)


@pytest.fixture(scope="module")
def collection(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"oai-{uuid.uuid4().hex[:8]}"
    docs = tmp_path_factory.mktemp("openai") / "docs.jsonl"
    write_jsonl(docs, DOCS)
    KnowledgeBase(embedded_db, embedder).ingest([docs], name, progress=False)
    return name


@pytest.fixture(scope="module")
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture(scope="module")
def served(embedded_db: Database, embedder, collection: str, model: ScriptedModel) -> Iterator[ScriptedChat]:
    """The chat server without users: the local operator asks, no token needed."""
    kb = KnowledgeBase(embedded_db, embedder)
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root)
    with scripted_chat(settings, kb, model) as chat:
        yield chat


def client_for(chat: ScriptedChat, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=chat.url + "v1", api_key=key, max_retries=0, timeout=120)


def logged(db: Database, turn_id: str) -> dict[str, Any]:
    """The turn's row once it has finished (waits for the log, up to WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT t.face, t.status, t.question, t.answer, t.citations, t.events, u.name, t.thread_id"
                " FROM turns t LEFT JOIN users u ON u.id = t.user_id WHERE t.turn_id = %s",
                (turn_id,),
            ).fetchone()
        if row is not None and row[1] != "running":
            keys = ("face", "status", "question", "answer", "citations", "events", "user", "thread_id")
            return dict(zip(keys, row, strict=True))
        assert time.monotonic() < deadline, f"turn {turn_id} was not completed in the log"
        time.sleep(0.2)


def openai_turns(db: Database) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) FROM turns WHERE face = 'openai'").fetchone()[0]


def test_each_collection_is_a_model(served: ScriptedChat, collection: str) -> None:
    client = client_for(served)
    ids = [m.id for m in client.models.list()]
    assert f"ladder/{collection}" in ids and all(i.startswith("ladder/") for i in ids)
    assert client.models.retrieve(f"ladder/{collection}").owned_by == "ladder"
    with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access"):
        client.models.retrieve("ladder/no-such-collection")


def test_a_completion_is_the_answer_with_its_references_and_is_logged(
    served: ScriptedChat, collection: str, model: ScriptedModel, embedded_db: Database
) -> None:
    reply = client_for(served).chat.completions.create(
        model=f"ladder/{collection}",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "How long do refunds take?"},
        ],
        temperature=0.2,  # accepted, and left to Ladder's own settings
    )
    content = reply.choices[0].message.content
    extra = reply.model_extra["ladder"]
    answer, refs = content.split(REFERENCES)
    assert "[1]" in answer and reply.choices[0].finish_reason == "stop"
    cited = {c["number"]: c for c in extra["citations"]}
    assert cited and all(f"- [{n}] {c['title']} — {c['source']}" in refs for n, c in cited.items())
    assert {c["doc_id"] for c in extra["citations"]} <= {"refunds", "shipping"} and all(
        c["text"] for c in extra["citations"]
    )
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    row = logged(embedded_db, extra["turn_id"])
    assert row["face"] == "openai" and row["status"] == "done" and row["user"] is None
    assert row["question"] == "How long do refunds take?" and row["answer"] == answer
    assert [c["chunk_id"] for c in row["citations"]] == [c["chunk_id"] for c in extra["citations"]]
    assert row["thread_id"] == extra["thread_id"]
    sent = json.dumps([body for bodies in model.bodies.values() for body in bodies])
    assert "You are terse." not in sent  # a client's system prompt never reaches Ladder's model


def test_a_stream_comes_in_chunks_and_ends_with_references_the_turn_and_usage(
    served: ScriptedChat, collection: str, embedded_db: Database
) -> None:
    stream = client_for(served).chat.completions.create(
        model=f"ladder/{collection}",
        messages=[{"role": "user", "content": "Where do parcels ship from?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2  # the draft arrives token by token, not as one block
    text = "".join(pieces)
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finished) == 1
    extra = finished[0].model_extra["ladder"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    row = logged(embedded_db, extra["turn_id"])
    assert row["face"] == "openai" and row["status"] == "done"
    assert REFERENCES in text and text.split(REFERENCES)[0] == row["answer"]  # the draft, not revised


def test_the_history_makes_a_follow_up_work(
    served: ScriptedChat, collection: str, model: ScriptedModel, embedded_db: Database
) -> None:
    """A client sends the whole conversation each time: the earlier messages become the thread's history
    and the condense step rewrites the follow-up from them (Ladder's references block is left out)."""
    first = client_for(served).chat.completions.create(
        model=f"ladder/{collection}", messages=[{"role": "user", "content": "How long do refunds take?"}]
    )
    earlier = first.choices[0].message.content
    assert REFERENCES in earlier

    def condense(body: dict[str, Any]) -> str:
        prompt = last_user(body)
        # a rewrite only a model that read the history could make
        return "How long do refunds take to be paid?" if "How long do refunds take?" in prompt else "What?"

    model.steps["condense"] = condense
    calls = model.calls["condense"]
    try:
        follow_up = client_for(served).chat.completions.create(
            model=f"ladder/{collection}",
            messages=[
                {"role": "user", "content": f"How long do refunds take? My key is {SECRET}"},
                {"role": "assistant", "content": earlier},
                {"role": "user", "content": [{"type": "text", "text": "And is that in working days?"}]},
            ],
        )
    finally:
        model.steps["condense"] = ScriptedModel.condense
    assert model.calls["condense"] == calls + 1
    prompt = last_user(model.bodies["condense"][-1])
    assert "How long do refunds take?" in prompt and earlier.split(REFERENCES)[0][:60] in prompt
    assert "References:" not in prompt  # what Ladder appended is not read back as the answer
    assert SECRET not in prompt  # earlier messages are redacted as questions are, before any model sees them
    extra = follow_up.model_extra["ladder"]
    row = logged(embedded_db, extra["turn_id"])
    assert row["question"] == "And is that in working days?" and row["face"] == "openai"
    condensed = next(e for e in row["events"] if e.get("step") == "condense" and e["status"] == "end")
    assert condensed["standalone"] == "How long do refunds take to be paid?" and condensed["model_called"]
    assert any(c["doc_id"] == "refunds" for c in extra["citations"])  # searched with the rewrite
    assert extra["thread_id"] != first.model_extra["ladder"]["thread_id"]  # stateless: the client holds the thread


def _post(chat: ScriptedChat, body: Any, *, raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return httpx.post(chat.url + "v1/chat/completions", content=content, headers=headers, timeout=60)


def _bad_cases(collection: str) -> list[tuple[str, Any, int, str | None, str | None]]:
    """(what, body, status, param, code): each must be refused before any turn starts."""
    ask = [{"role": "user", "content": "How long do refunds take?"}]

    def body(messages: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
        return {"model": f"ladder/{collection}", "messages": ask if messages is None else messages, **fields}

    def user(content: Any) -> list[dict[str, Any]]:
        return [{"role": "user", "content": content}]

    image = [{"type": "image_url", "image_url": {"url": "x"}}]
    first = "messages[0].content"
    return [
        ("unknown model", body(model="ladder/nope"), 404, "model", "model_not_found"),
        ("not a ladder model", body(model="gpt-4o"), 404, "model", "model_not_found"),
        ("no model", {"messages": ask}, 400, "model", None),
        ("no messages", body([]), 400, "messages", None),
        ("empty question", body(user("  ")), 400, first, None),
        ("oversized message", body(user("x " * MAX_MESSAGE_CHARS)), 400, first, "message_too_long"),
        ("question over the token limit", body(user("refund " * 5000)), 400, "messages", "invalid_question"),
        ("tool role", body([{"role": "tool", "content": "x"}, *ask]), 400, "messages[0].role", None),
        ("a field no message has", body([{**ask[0], "tool_calls": []}]), 400, "messages[0].tool_calls", None),
        ("tools", body(tools=[]), 400, "tools", "unsupported_parameter"),
        ("an image part", body(user(image)), 400, "messages[0].content[0]", None),
        ("assistant last", body([*ask, {"role": "assistant", "content": "a"}]), 400, "messages[1]", None),
        ("n=2", body(n=2), 400, "n", "unsupported_value"),
        ("NUL", body(user("a\x00b?")), 400, first, None),
        ("stream not a bool", body(stream="yes"), 400, "stream", None),
    ]


def test_bad_requests_get_openai_errors_and_start_no_turn(
    served: ScriptedChat, collection: str, embedded_db: Database
) -> None:
    before = openai_turns(embedded_db)
    for what, body, status, param, code in _bad_cases(collection):
        response = _post(served, body)
        assert response.status_code == status, (what, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], what
        assert (error["param"], error["code"]) == (param, code), (what, error)
    for raw, status in ((b"{not json", 400), (b"[" * 3_000_000, 413)):
        response = _post(served, None, raw=raw)
        assert response.status_code == status and response.json()["error"]["message"]
    # the client maps them to its own errors, message included
    client = client_for(served)
    with pytest.raises(openai.NotFoundError, match="'ladder/nope' does not exist"):
        client.chat.completions.create(model="ladder/nope", messages=[{"role": "user", "content": "q?"}])
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        client.chat.completions.create(model=f"ladder/{collection}", messages=[{"role": "robot", "content": "q?"}])
    assert openai_turns(embedded_db) == before  # nothing was asked, nothing half-logged
    ok = client.chat.completions.create(
        model=f"ladder/{collection}", messages=[{"role": "user", "content": "Refunds?"}]
    )
    assert ok.choices[0].message.content  # and the server still answers


def test_a_client_that_leaves_mid_stream_does_not_stop_the_turn(
    served: ScriptedChat, collection: str, model: ScriptedModel, embedded_db: Database
) -> None:
    """The draft is held until the client has gone: the turn then finishes and is logged; while it is
    held, the server answers other requests (the turn never blocks the event loop)."""
    gone = threading.Event()

    def held_draft(body: dict[str, Any]) -> str:
        gone.wait(WAIT_S)
        return ScriptedModel.draft(body)

    model.steps["draft"] = held_draft
    question = f"Where do parcels ship from, case {uuid.uuid4().hex[:6]}?"
    body = {"model": f"ladder/{collection}", "messages": [{"role": "user", "content": question}], "stream": True}
    try:
        with httpx.stream("POST", served.url + "v1/chat/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            first = next(response.iter_lines())
            assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
            models = httpx.get(served.url + "v1/models", timeout=30)  # while the turn is held
            assert models.status_code == 200 and models.json()["data"]
        gone.set()  # the stream is closed: now let the draft finish
        deadline = time.monotonic() + WAIT_S
        while True:
            with embedded_db.connection() as conn:
                row = conn.execute("SELECT turn_id FROM turns WHERE question = %s", (question,)).fetchone()
            if row is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        finished = logged(embedded_db, row[0])
    finally:
        gone.set()
        model.steps["draft"] = ScriptedModel.draft
    assert finished["status"] == "done" and finished["face"] == "openai" and "[1]" in finished["answer"]


@pytest.fixture(scope="module")
def with_users(embedded_db: Database, embedder, collection: str) -> Iterator[tuple[ScriptedChat, dict[str, str]]]:
    """A server with users: ann owns a private collection, bob may not read it."""
    tag = uuid.uuid4().hex[:6]
    tokens: dict[str, str] = {}
    with embedded_db.connection() as conn:
        for name in (f"ann-{tag}", f"bob-{tag}"):
            add_user(conn, name, "correct horse battery")
            tokens[name] = create_token(conn, name, "openai test")[1]
    kb = KnowledgeBase(embedded_db, embedder)
    private = f"{collection}-ann"
    with embedded_db.connection() as conn:
        conn.execute(
            "INSERT INTO collections (name, embedding_model, dimension) VALUES (%s, %s, %s)",
            (private, embedder.model_name, embedder.dimension),
        )
        set_visibility(conn, private, "private", owner=f"ann-{tag}")
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root)
    try:
        with scripted_chat(settings, kb, ScriptedModel(), login=True) as chat:
            yield chat, tokens
    finally:
        with embedded_db.connection() as conn:
            for name in tokens:
                remove_user(conn, name)


def test_tokens_are_the_mcp_tokens(
    with_users: tuple[ScriptedChat, dict[str, str]], collection: str, embedded_db: Database
) -> None:
    chat, tokens = with_users
    ann, bob = tokens
    private = f"{collection}-ann"
    ask = [{"role": "user", "content": "How long do refunds take?"}]
    before = openai_turns(embedded_db)
    for key, message in ((None, "needs a bearer token"), ("ldr_forged", "invalid or revoked token")):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(
            chat.url + "v1/chat/completions", json={"model": f"ladder/{collection}", "messages": ask}, headers=headers
        )
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert message in response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        client_for(chat, "ldr_forged").models.list()
    assert f"ladder/{private}" in [m.id for m in client_for(chat, tokens[ann]).models.list()]
    bobs = [m.id for m in client_for(chat, tokens[bob]).models.list()]
    assert f"ladder/{collection}" in bobs and f"ladder/{private}" not in bobs
    with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access"):
        client_for(chat, tokens[bob]).chat.completions.create(model=f"ladder/{private}", messages=ask)
    assert openai_turns(embedded_db) == before
    reply = client_for(chat, tokens[bob]).chat.completions.create(model=f"ladder/{collection}", messages=ask)
    row = logged(embedded_db, reply.model_extra["ladder"]["turn_id"])
    assert row["user"] == bob and row["face"] == "openai"


def test_a_stream_whose_draft_the_fact_check_rewrote_ends_with_the_rewrite(
    served: ScriptedChat, collection: str, model: ScriptedModel, embedded_db: Database
) -> None:
    """Tokens that went out cannot be taken back: the rewrite follows the streamed draft under a marker,
    and the history a client sends back later holds only the rewrite."""

    def nothing_supported(body: dict[str, Any]) -> str:
        listed = last_user(body).split("Sentences:\n", 1)[1]
        numbers = re.findall(r"^(\d+)\. ", listed, flags=re.M)
        return json.dumps({"checks": [{"n": int(n), "supported": False, "passages": []} for n in numbers]})

    model.steps["fact_check"] = nothing_supported
    try:
        stream = client_for(served).chat.completions.create(
            model=f"ladder/{collection}",
            messages=[{"role": "user", "content": "How long do refunds take?"}],
            stream=True,
        )
        chunks = list(stream)
    finally:
        model.steps["fact_check"] = ScriptedModel.fact_check
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    extra = next(c.model_extra["ladder"] for c in chunks if c.choices and c.choices[0].finish_reason == "stop")
    row = logged(embedded_db, extra["turn_id"])
    assert extra["revised"] and row["answer"] == "Refunds take 14 days [1]."
    draft, rewrite = text.split(REVISED)
    assert "Fact number" in draft and rewrite.split(REFERENCES)[0] == row["answer"]
    assert answer_of(text) == row["answer"]


def test_calls_beyond_the_turns_allowed_get_429_and_lose_nothing(
    embedded_db: Database, embedder, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One turn at a time and none waiting: a second call while the first is held gets 429 with
    Retry-After and starts no turn; the first still finishes, and a call after it is answered."""
    from agent.chat import openai_api

    monkeypatch.setattr(openai_api, "MAX_WAITING", 0)
    held = threading.Event()
    model = ScriptedModel()

    def held_draft(body: dict[str, Any]) -> str:
        held.wait(WAIT_S)
        return ScriptedModel.draft(body)

    model.steps["draft"] = held_draft
    kb = KnowledgeBase(embedded_db, embedder)
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root, ui_concurrency=1)
    ask = {"model": f"ladder/{collection}", "messages": [{"role": "user", "content": "Where do parcels ship from?"}]}
    with scripted_chat(settings, kb, model) as chat:
        try:
            with httpx.stream(
                "POST", chat.url + "v1/chat/completions", json={**ask, "stream": True}, timeout=60
            ) as first:
                lines = first.iter_lines()
                assert next(lines).startswith("data: ")  # the first turn has started and is held
                other = {**ask, "messages": [{"role": "user", "content": f"Refused {uuid.uuid4().hex}?"}]}
                refused = _post(chat, other)
                assert refused.status_code == 429 and refused.headers["retry-after"]
                assert refused.json()["error"]["type"] == "rate_limit_error"
                with embedded_db.connection() as conn:
                    question = other["messages"][0]["content"]
                    assert (
                        conn.execute("SELECT count(*) FROM turns WHERE question = %s", (question,)).fetchone()[0] == 0
                    )
                held.set()
                rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"
            assert client_for(chat).chat.completions.create(**ask).choices[0].message.content
        finally:
            held.set()
