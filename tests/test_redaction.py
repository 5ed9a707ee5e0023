"""Redaction: every kind of secret a user may paste is masked (detect-secrets' detectors plus Ladder's
own few), ordinary text is left alone, and a question's secrets never reach the turn log, the
checkpoints, the model, `ladder logs` or an export; LADDER_REDACT_QUESTIONS=off keeps questions verbatim."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from agent.core.config import Settings
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.records.checkpoints import TABLES
from agent.records.redact import redact, redact_secrets
from agent.records.turns import add_feedback
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase

PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
# kind: (text as a user would paste it, the secret that must go)
SECRETS = {
    "json api_key": ('config {"api_key": "a8f3kd93jf0sd9f8sdfq"} here', "a8f3kd93jf0sd9f8sdfq"),
    "stripe": ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc today", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    "slack": (
        "bot token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx here",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    "google": ("maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY works", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    "hugging face": ("login with hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 fails", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    "gitlab": ("clone with glpat-AbCdEfGhIjKlMnOpQrSt12 please", "glpat-AbCdEfGhIjKlMnOpQrSt12"),
    "jwt": (
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c ok",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",  # the signature too, not only the header
    ),
    "pem private key": (
        f"my key:\n-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n{PEM_BODY[::-1]}\n"
        "-----END RSA PRIVATE KEY-----\nthanks",
        PEM_BODY[::-1],
    ),
    "authorization basic": ("send Authorization: Basic dXNlcjpwYXNzd29yZA== to it", "dXNlcjpwYXNzd29yZA=="),
    "authorization bearer": ("header Authorization: Bearer abcDEF0123456789xyzXYZ ok", "abcDEF0123456789xyzXYZ"),
    "password in prose": ("my password is Hunter2-Tango, how do I change it?", "Hunter2-Tango"),
    "quoted password in prose": ("the passphrase was 'correct horse staple' before", "correct horse staple"),
    "password assignment": ("try password=Zebra-Crossing-9 again", "Zebra-Crossing-9"),
    "ladder token": ("my token ldr_Q2hhbmdlTWVQbGVhc2VOb3dPa2F5 broke", "ldr_Q2hhbmdlTWVQbGVhc2VOb3dPa2F5"),
    "openai": (
        "key sk-proj-abcdefghijklmnopqrstuvwxyzABCDEFGH012345 set",
        "sk-proj-abcdefghijklmnopqrstuvwxyzABCDEFGH012345",
    ),
    "aws": ("AWS_ACCESS_KEY_ID AKIAIOSFODNN7EXAMPLE is set", "AKIAIOSFODNN7EXAMPLE"),
    "github": ("push with ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ now", "ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"),
    "url password": ("connect to postgresql://ann:S3cret-Pw@db.internal/x now", "S3cret-Pw"),
}
ORDINARY = [
    "How long do refunds take and where do parcels ship from?",
    "Refunds are paid within 14 days [1]. Fact number 2 is stated [2].",
    "SELECT name, count(*) FROM artists WHERE id = 3 GROUP BY name",
    "On 2024-05-01 we sold 1234 units of v1.2.3 (order 12345) for EUR 99.50.",
    "The password policy needs 8 characters; reset it from the login page.",
    "My password is not working, how do I reset it? Password: where is the form?",
    "The password is set by IT every 90 days. How do I set up Basic authentication?",
    "Commit 3f786850e387550fdab836ed7e6dc881de23001b, document 123e4567-e89b-12d3-a456-426614174000.",
]


@pytest.mark.parametrize("kind", list(SECRETS))
def test_each_kind_of_secret_is_masked(kind: str) -> None:
    text, secret = SECRETS[kind]
    masked = redact_secrets(text)
    assert secret not in masked and ("[SECRET]" in masked or "***" in masked), masked
    first, last = text.split()[0], text.split()[-1]
    assert masked.startswith(first) and masked.endswith(last)  # the words around it stay


def test_a_pem_block_goes_whole() -> None:
    masked = redact_secrets(SECRETS["pem private key"][0])
    assert PEM_BODY not in masked and "PRIVATE KEY" not in masked and masked == "my key:\n[SECRET]\nthanks"
    cut = redact_secrets(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}")  # pasted without its footer
    assert cut == "[SECRET]"


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_secrets(text) == text


def test_personal_data_is_masked_in_exports_only_when_asked() -> None:
    text = "Mail ann.lee@example.com or call +44 20 7946 0958"
    assert redact(text) == "Mail [EMAIL] or call [PHONE]"
    assert redact(text, personal=False) == text


def test_a_long_hostile_line_is_bounded() -> None:
    """npm's pattern is quadratic in a line's length: it only ever sees windows of 2 KB."""
    text = "//" * 50_000 + " npm token //registry.example/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789"
    masked = redact_secrets(text)
    assert "npm_abcdefghijklmnopqrstuvwxyz0123456789" not in masked and masked.startswith("////")


@pytest.fixture
def setup(kb: KnowledgeBase, collection: str, tmp_path: Path) -> Iterator[tuple[ScriptedOpenAI, KnowledgeBase, str]]:
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, [{"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days."}])
    kb.ingest([docs], collection, progress=False)
    with ScriptedOpenAI(chat=ScriptedModel()) as server:
        yield server, kb, collection


def agent_for(server: ScriptedOpenAI, kb: KnowledgeBase, checkpointer: object, **settings: object) -> Agent:
    config = Settings(openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0, **settings)
    client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
    return Agent(config, kb, ChatEndpoint(client, "scripted"), checkpointer)


def stored_text(kb: KnowledgeBase, turn_id: str, thread_id: str) -> str:
    """The turn's row and every checkpoint row of its thread, as text."""
    with kb.db.connection() as conn:
        parts = [conn.execute("SELECT row_to_json(t)::text FROM turns t WHERE turn_id = %s", (turn_id,)).fetchone()[0]]
        for table in TABLES:
            column = "checkpoint::text || metadata::text" if table == "checkpoints" else "encode(blob, 'escape')"
            parts += [
                r[0] or "" for r in conn.execute(f"SELECT {column} FROM {table} WHERE thread_id = %s", (thread_id,))
            ]
    return "\n".join(parts)


def test_a_questions_secrets_reach_no_log_no_state_no_model_and_no_export(
    setup: tuple[ScriptedOpenAI, KnowledgeBase, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, kb, collection = setup
    pasted = "\n".join(text for text, _ in SECRETS.values())
    question = f"Case {uuid.uuid4().hex}: how long do refunds take? Context:\n{pasted}"
    caplog.set_level(logging.DEBUG)
    with open_checkpointer(kb.db) as checkpointer:
        result = agent_for(server, kb, checkpointer).ask(TurnRequest(question, collection, face="cli")).to_dict()
    assert "error" not in result, result
    with kb.db.connection() as conn:
        add_feedback(conn, result["turn_id"], "up")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env = {**base, "LADDER_DATA_DIR": str(kb.db.embedded.root)}

    def cli(*args: str) -> str:
        ran = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout + ran.stderr

    logs = cli("logs", "--json", "--limit", "20")
    assert result["turn_id"] in logs
    cli("export", "evalset", "--out", str(tmp_path / "eval.jsonl"))
    cli("export", "finetune", "--out", str(tmp_path / "ft.jsonl"), "--val-fraction", "0", "--min-feedback", "any")
    places = {
        "turns row and checkpoints": stored_text(kb, result["turn_id"], result["thread_id"]),
        "model requests": json.dumps(server.requests),
        "log records": caplog.text,
        "ladder logs": logs,
        "eval-set export": (tmp_path / "eval.jsonl").read_text(),
        "fine-tuning export": (tmp_path / "ft.jsonl").read_text(),
    }
    assert "[SECRET]" in places["turns row and checkpoints"] and "how long do refunds take?" in places["ladder logs"]
    for kind, (_, secret) in SECRETS.items():
        for where, text in places.items():
            assert secret not in text, f"the {kind} secret reached the {where}"


def test_questions_are_kept_verbatim_when_redaction_is_off(
    setup: tuple[ScriptedOpenAI, KnowledgeBase, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, kb, collection = setup
    monkeypatch.setenv("LADDER_REDACT_QUESTIONS", "off")
    assert Settings().redact_questions is False
    text, secret = SECRETS["stripe"]
    with open_checkpointer(kb.db) as checkpointer:
        result = (
            agent_for(server, kb, checkpointer, redact_questions=False).ask(TurnRequest(text, collection)).to_dict()
        )
    with kb.db.connection() as conn:
        stored = conn.execute("SELECT question FROM turns WHERE turn_id = %s", (result["turn_id"],)).fetchone()[0]
    assert stored == text and secret in text  # verbatim in the log; `ladder logs` and exports still mask it
