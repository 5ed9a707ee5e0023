"""A planted API key, configured the only ways Ladder takes one (environment or .env), is used for
the model calls but reaches no log line, no turn in the log, no export and no page of the chat."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.chat.app import ChatServices, build_app, launch
from agent.core.assemble import open_agent
from agent.core.config import Settings
from agent.core.turn import TurnRequest
from agent.models.local_server import free_port
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.db import Database

PLANTED = "sk-planted0123456789abcdefghijklmnopqrstu"
DOCS = [{"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days."}]


def test_a_planted_key_is_used_but_never_shown(
    embedded_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    collection = f"secrets-{os.getpid()}"
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, DOCS)
    with ScriptedOpenAI(chat=ScriptedModel()) as server:
        # .env is one of the two places a key may come from
        (tmp_path / ".env").write_text(f"OPENAI_API_KEY={PLANTED}\n")
        monkeypatch.chdir(tmp_path)
        for name in ("OPENAI_API_KEY", "LADDER_OPENAI_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DATABASE_URL", embedded_db.url)
        settings = Settings(chat_model="scripted", collection=collection, data_dir=embedded_db.embedded.root)
        assert settings.openai_api_key is not None and PLANTED not in repr(settings)
        caplog.set_level(logging.DEBUG)
        with open_agent(settings) as agent:
            agent.kb.ingest([docs], collection, progress=False)
            result = agent.ask(TurnRequest("How long do refunds take?", collection, face="cli")).to_dict()
            assert result.get("error") is None, result
            services = ChatServices(agent, agent.model)
            app = build_app(services)
            port = free_port()
            launch(app, host="127.0.0.1", port=port, services=services, block=False)
            try:
                url = f"http://127.0.0.1:{port}/"
                pages = [httpx.get(url).text, httpx.get(url + "config").text, httpx.get(url + "gradio_api/info").text]
            finally:
                app.close()
        assert any(r["auth"] == f"Bearer {PLANTED}" for r in server.requests)  # the key was really in use

    with embedded_db.connection() as conn:
        stored = conn.execute("SELECT row_to_json(t)::text FROM turns t WHERE turn_id = %s", (result["turn_id"],))
        turn_row = stored.fetchone()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_")}
    logs = subprocess.run(
        [sys.executable, "-m", "agent.cli", "logs", "--json", "--limit", "5"],
        capture_output=True,
        text=True,
        env={**env, "DATABASE_URL": embedded_db.url},
        cwd=tmp_path,
        timeout=120,
    )
    assert logs.returncode == 0, logs.stderr
    assert result["turn_id"] in logs.stdout
    for where, text in {
        "log records": caplog.text,
        "turn row": turn_row,
        "ladder logs": logs.stdout + logs.stderr,
        "chat page": pages[0],
        "chat config": pages[1],
        "api info": pages[2],
    }.items():
        assert PLANTED not in text, f"the key leaked into the {where}"
    assert "How long do refunds take?" in turn_row and len(caplog.records) > 0
