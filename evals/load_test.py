"""`ladder bench load`: N concurrent chat sessions through the real chat server's API, against a
scripted OpenAI-compatible model with a set latency, on loopback only.

Each session is a `gradio_client` client on its own thread id asking a fixed number of
questions, each carrying a unique token that the scripted model echoes into its answer. Then
the turn log is checked: every turn logged exactly once, finished, with its own answer, in its
own thread (no answer crossed into another session), and the connection pool's statistics show
whether any request waited for a connection or failed to get one.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.config import Settings
from evals.scripted_agent import ScriptedModel
from evals.scripted_server import ScriptedOpenAI, last_user

POOL_FIGURES = ("pool_max", "requests_num", "requests_queued", "requests_wait_ms", "requests_errors")
MAX_SESSIONS = 200
MAX_TURNS = 50
DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
_TOKEN = re.compile(r"\[(tok-[0-9a-f]+-\d+-\d+)\]")  # in a question
_ANY_TOKEN = re.compile(r"tok-[0-9a-f]+-\d+-\d+")  # anywhere in an answer


def _echoing_model() -> ScriptedModel:
    """The scripted model, answering with the question's token so a crossed answer is visible."""
    model = ScriptedModel()

    def draft(body: dict[str, Any]) -> str:
        found = _TOKEN.search(last_user(body))
        return f"Refunds take 14 days [1]. ({found.group(1) if found else 'no token'})"

    model.steps["draft"] = draft
    return model


def run_load(
    settings: Settings,
    *,
    sessions: int = 20,
    turns: int = 3,
    latency_s: float = 0.2,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run the load and check the log; returns the figures and the problems found (none, hopefully)."""
    from gradio_client import Client

    from agent.chat_app import ChatServices, build_app, launch
    from agent.runtime import open_knowledge_base
    from agent.turn import Agent, open_checkpointer
    from knowledge.pgembed import free_port

    if not 1 <= sessions <= MAX_SESSIONS or not 1 <= turns <= MAX_TURNS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS} and turns 1..{MAX_TURNS}")
    run_key = uuid.uuid4().hex[:8]
    collection = f"load-{run_key}"
    settings = settings.model_copy(update={"collection": collection, "ui_concurrency": sessions})
    with (
        ScriptedOpenAI(chat=_echoing_model(), delay_s=latency_s) as server,
        open_knowledge_base(settings) as kb,
        tempfile.TemporaryDirectory() as folder,
    ):
        docs = Path(folder) / "docs.jsonl"
        docs.write_text("\n".join(json.dumps(d) for d in DOCS))
        kb.ingest([docs], collection, progress=False)
        import openai

        client = openai.OpenAI(api_key="load", base_url=server.base_url, max_retries=2, timeout=120)
        with open_checkpointer(kb.db.url) as checkpointer:
            agent = Agent(settings, kb, client, "scripted", checkpointer)
            app = build_app(ChatServices(agent, "scripted"))
            port = free_port()
            launch(app, host="127.0.0.1", port=port, block=False)
            url = f"http://127.0.0.1:{port}/"
            threads = {i: f"load-{run_key}-{i}" for i in range(sessions)}
            latencies: list[float] = []
            failures: list[str] = []

            def session(i: int) -> None:
                api = Client(url, verbose=False, analytics_enabled=False)
                for j in range(turns):
                    token = f"tok-{run_key}-{i}-{j}"
                    started = time.perf_counter()
                    try:
                        question = f"How long do refunds take? [{token}]"
                        reply = json.loads(api.predict(question, collection, threads[i], api_name="/ask"))
                    except Exception as exc:  # counted, never hidden
                        failures.append(f"session {i} turn {j}: {type(exc).__name__}: {exc}")
                        continue
                    latencies.append(time.perf_counter() - started)
                    if token not in reply.get("answer", ""):
                        failures.append(f"session {i} turn {j}: answer without its own token: {reply.get('answer')!r}")

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=sessions) as pool:
                list(pool.map(session, range(sessions)))
            elapsed = time.perf_counter() - started
            app.close()
        pool_stats = kb.db.pool.get_stats()
        problems = failures + _check_log(kb, threads, turns, run_key)
        if pool_stats.get("requests_errors", 0):
            problems.append(f"the connection pool failed {pool_stats['requests_errors']} requests (ran dry)")
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "model_latency_s": latency_s,
        "turns_answered": len(latencies),
        "seconds": round(elapsed, 2),
        "turns_per_second": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(quantiles[18], 3) if latencies else None,
        "pool": {k: pool_stats.get(k, 0) for k in POOL_FIGURES},
        "problems": problems,
    }


def _check_log(kb: Any, threads: dict[int, str], turns: int, run_key: str) -> list[str]:
    """Every turn exactly once, done, answered with its own token, in its own session's thread."""
    problems = []
    with kb.db.connection() as conn:
        rows = conn.execute(
            "SELECT thread_id, question, status, answer FROM turns WHERE thread_id LIKE %s", (f"load-{run_key}-%",)
        ).fetchall()
    by_token: dict[str, list[tuple[str, str, str]]] = {}
    for thread_id, question, status, answer in rows:
        found = _TOKEN.search(question)
        by_token.setdefault(found.group(1) if found else "?", []).append((thread_id, status, answer or ""))
    for i, thread_id in threads.items():
        for j in range(turns):
            token = f"tok-{run_key}-{i}-{j}"
            logged = by_token.get(token, [])
            if len(logged) != 1:
                problems.append(f"{token}: logged {len(logged)} times")
                continue
            where, status, answer = logged[0]
            if where != thread_id:
                problems.append(f"{token}: logged in thread {where}, not {thread_id}")
            if status != "done":
                problems.append(f"{token}: status {status}")
            others = set(_ANY_TOKEN.findall(answer)) - {token}
            if token not in answer or others:
                problems.append(f"{token}: the logged answer carries {sorted(others) or 'no token'}")
    return problems
