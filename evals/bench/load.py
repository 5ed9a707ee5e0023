"""`ladder bench load` and `ladder bench ingest-search`: the chat server's API under load, on loopback.

`bench load`: N concurrent chat sessions through the real chat server's API, against a scripted
OpenAI-compatible model with a set latency. Each session is a `gradio_client` client on its own
thread id asking a fixed number of questions, each carrying a unique token that the scripted
model echoes into its answer. Then the turn log is checked: every turn logged exactly once,
finished, with its own answer, in its own thread (no answer crossed into another session), and the
connection pool's statistics show whether any request waited for a connection or failed to get one.

`bench ingest-search`: M concurrent searchers call the server's `search_knowledge` endpoint at a
set total rate, first a fixed number of searches each on a quiet server, then for as long as a
`ladder ingest` of a large folder (a subprocess, into a separate collection) runs; the searches'
p95 during ingestion as a ratio to p95 without it, the search errors (there must be none), and the
ingestion throughput.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr

from agent.core.config import Settings
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import last_user
from evals.finetune.data import write_jsonl

# Starts the chat server for a knowledge base on a scripted model and yields where it serves
# (agent.chat.scripted.scripted_chat): settings, kb, model, then login/delay_s/max_retries keywords.
ServeChat = Callable[..., AbstractContextManager[Any]]


POOL_FIGURES = ("pool_max", "requests_num", "requests_queued", "requests_wait_ms", "requests_errors")
MAX_SESSIONS = 200
MAX_TURNS = 50
FLOOD_ROUNDS = 2  # quiet, flooded, quiet, flooded
MAX_SEARCHES = 1000  # per searcher without ingestion
MAX_RATE = 1000.0  # searches a second
MAX_SEARCHES_DURING = 100_000  # per searcher during ingestion (the ingestion's timeout bounds it first)
SEARCH_K = 5
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
        # The draft's question is its conversation's last user message; a revision continues that
        # conversation, so its token is the first one in the messages.
        text = "\n".join(str(m.get("content") or "") for m in body["messages"] if m["role"] == "user")
        found = _TOKEN.search(last_user(body)) or _TOKEN.search(text)
        return f"Refunds take 14 days [1]. ({found.group(1) if found else 'no token'})"

    model.steps["draft"] = draft
    model.steps["revise"] = draft  # the fact-check finds no passage for the token and asks for a revision
    return model


def _latency_figures(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50 and p95 in seconds (None without any latency)."""
    if not latencies:
        return {"p50_s": None, "p95_s": None}
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else list(latencies) * 19
    return {"p50_s": round(statistics.median(latencies), 4), "p95_s": round(quantiles[18], 4)}


@dataclass
class _Sessions:
    """The load's chat sessions: one API client and one thread each, asking numbered turns."""

    url: str
    collection: str
    run_key: str
    tokens: dict[int, str]  # session -> bearer token (empty without users)
    count: int
    failures: list[str]

    def __post_init__(self) -> None:
        self.threads = {i: f"load-{self.run_key}-{i}" for i in range(self.count)}
        self._apis: dict[int, Any] = {}

    def _api(self, i: int) -> Any:
        from gradio_client import Client

        if i not in self._apis:
            headers = {"Authorization": f"Bearer {self.tokens[i]}"} if self.tokens else None
            self._apis[i] = Client(self.url, verbose=False, analytics_enabled=False, headers=headers)
        return self._apis[i]

    def run(self, first: int, turns: int) -> tuple[list[float], float]:
        """Every session asks its turns ``first`` to ``first + turns - 1``, all sessions at once; the
        turns' latencies and the seconds it took."""
        latencies: list[float] = []

        def session(i: int) -> None:
            api = self._api(i)
            for j in range(first, first + turns):
                token = f"tok-{self.run_key}-{i}-{j}"
                started = time.perf_counter()
                try:
                    question = f"How long do refunds take? [{token}]"
                    reply = json.loads(api.predict(question, self.collection, self.threads[i], api_name="/ask"))
                except Exception as exc:  # counted, never hidden
                    self.failures.append(f"session {i} turn {j}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if token not in reply.get("answer", ""):
                    self.failures.append(f"session {i} turn {j}: answer without its own token: {reply.get('answer')!r}")

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.count) as pool:
            list(pool.map(session, range(self.count)))
        return latencies, time.perf_counter() - started

    def trespass(self) -> None:
        """Each session asks in the next session's thread: it must read as no thread at all."""

        def one(i: int) -> None:
            other = self.threads[(i + 1) % self.count]
            try:
                probe = json.loads(self._api(i).predict("What did they ask?", self.collection, other, api_name="/ask"))
            except Exception as exc:
                probe = {"exception": f"{type(exc).__name__}: {exc}"}
            if probe != {"error": f"no thread {other!r}"}:
                self.failures.append(f"session {i} asked in thread {other}: {probe!r}")

        with ThreadPoolExecutor(max_workers=self.count) as pool:
            list(pool.map(one, range(self.count)))


def _phase_figures(latencies: list[float], seconds: float) -> dict[str, Any]:
    figures = _latency_figures(latencies)
    return {
        "turns_answered": len(latencies),
        "seconds": round(seconds, 2),
        "turns_per_second": round(len(latencies) / seconds, 2) if seconds else 0.0,
        "p50_s": round(figures["p50_s"], 3) if figures["p50_s"] is not None else None,
        "p95_s": round(figures["p95_s"], 3) if figures["p95_s"] is not None else None,
    }


def _flooded(run: _Sessions, turns: int, flood: float, addresses: list[str], timeout_s: float) -> dict[str, Any]:
    """A warm-up turn each, then FLOOD_ROUNDS rounds of ``turns`` each on a quiet server and ``turns``
    each while wrong logins arrive at ``flood`` a second: both conditions' figures (their rounds
    pooled, so a neighbour's load that comes and goes falls on both alike), the flood's, and the p95 ratio."""
    from evals.bench.flood import LoginFlood

    run.run(0, 1)  # connections, the first embedding: in neither condition
    names = [*run.threads.values(), *(f"flood-{run.run_key}-{i}" for i in range(run.count))]
    quiet: tuple[list[float], float] = ([], 0.0)
    flooded: tuple[list[float], float] = ([], 0.0)
    floods = []
    for r in range(FLOOD_ROUNDS):
        first = 1 + 2 * r * turns
        latencies, seconds = run.run(first, turns)
        quiet = (quiet[0] + latencies, quiet[1] + seconds)
        with LoginFlood(run.url, rate=flood, addresses=addresses, names=names, max_seconds=timeout_s) as attack:
            latencies, seconds = run.run(first + turns, turns)
        flooded = (flooded[0] + latencies, flooded[1] + seconds)
        floods.append(attack.figures)
    calm, busy = _phase_figures(*quiet), _phase_figures(*flooded)
    ratio = round(busy["p95_s"] / calm["p95_s"], 2) if busy["p95_s"] and calm["p95_s"] else None
    return {"quiet": calm, "flood": busy, "login_flood": floods, "p95_ratio": ratio}


def run_load(
    settings: Settings,
    serve: ServeChat,
    *,
    sessions: int = 20,
    turns: int = 3,
    latency_s: float = 0.2,
    timeout_s: float = 600.0,
    users: bool = False,
    flood: float = 0.0,
    flood_addresses: int = 1,
) -> dict[str, Any]:
    """Run the load and check the log; returns the figures and the problems found (none, hopefully).

    With ``users``, logins are on and every session is its own user with a bearer token; each
    session also tries once to continue the next session's thread, which must be refused. With
    ``flood`` (which turns users on), the sessions ask a warm-up turn, then in each of FLOOD_ROUNDS
    rounds ``turns`` on a quiet server and ``turns`` more while ``flood`` wrong logins a second arrive
    from ``flood_addresses`` addresses (each flood for at most ``timeout_s``); the report adds both
    conditions and ``p95_ratio``, flooded over quiet. ``serve`` starts the chat server on a scripted
    model (agent.chat.scripted.scripted_chat: the face is handed in, so this layer does not import it)."""
    from agent.core.assemble import open_knowledge_base
    from evals.bench.flood import flood_sources

    if not 1 <= sessions <= MAX_SESSIONS or not 1 <= turns <= MAX_TURNS or flood < 0:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS}, turns 1..{MAX_TURNS} and the flood rate >= 0")
    users = users or flood > 0
    sources = flood_sources(flood_addresses) if flood else []
    run_key = uuid.uuid4().hex[:8]
    collection = f"load-{run_key}"
    settings = settings.model_copy(update={"collection": collection, "ui_concurrency": sessions})
    with open_knowledge_base(settings) as kb, tempfile.TemporaryDirectory() as folder:
        docs = Path(folder) / "docs.jsonl"
        write_jsonl(docs, DOCS)
        kb.ingest([docs], collection, progress=False)
        tokens = _load_users(kb, run_key, sessions) if users else {}
        failures: list[str] = []
        with serve(settings, kb, _echoing_model(), login=users, delay_s=latency_s, max_retries=2) as served:
            run = _Sessions(served.url, collection, run_key, tokens, sessions, failures)
            if flood:
                figures, turns_logged = _flooded(run, turns, flood, sources, timeout_s), 1 + 2 * FLOOD_ROUNDS * turns
            else:
                figures, turns_logged = _phase_figures(*run.run(0, turns)), turns
            if users and sessions > 1:  # after every thread has its owner's turns
                run.trespass()
        pool_stats = kb.db.pool.get_stats()
        problems = failures + _check_log(kb, run.threads, turns_logged, run_key, users)
        if users:
            _drop_load_users(kb, run_key, sessions, sources)
        if pool_stats.get("requests_errors", 0):
            problems.append(f"the connection pool failed {pool_stats['requests_errors']} requests (ran dry)")
    return {
        "sessions": sessions,
        "users": sessions if users else 0,
        "turns_per_session": turns,
        "model_latency_s": latency_s,
        **figures,
        "pool": {k: pool_stats.get(k, 0) for k in POOL_FIGURES},
        "problems": problems,
    }


# -- searches under ingestion ------------------------------------------------------------------------


@dataclass
class _Search:
    started: float
    ended: float
    problem: str | None  # None: passages came back; else "error: ..." or "empty"


def write_cisi_folder(folder: Path) -> Path:
    """CISI's 1460 abstracts as a folder of Markdown files, one a document: the default large folder."""
    from evals.datasets import load_cisi

    folder.mkdir(parents=True, exist_ok=True)
    for doc in load_cisi().documents:
        (folder / f"cisi-{int(doc['id']):04d}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return folder


def _search_corpus() -> tuple[list[dict[str, str]], list[str]]:
    """The searched collection's documents and the searches' queries: PubMedQA's 500 abstracts and questions."""
    from evals.datasets import load_pubmedqa

    data = load_pubmedqa()
    return data.documents, list(data.queries.values())


def _child_env(settings: Settings) -> dict[str, str]:
    """The environment for a `ladder` subprocess that sees the same settings as ``settings``."""
    env = dict(os.environ)
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict | list | tuple):
            value = json.dumps(value)
        alias = type(settings).model_fields[name].validation_alias
        names = [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [f"LADDER_{name.upper()}"]
        env.update(dict.fromkeys(names, str(value)))
    return env


def _search_once(api: Any, query: str, collection: str) -> _Search:
    """One `search_knowledge` call through the API; a failure or an empty answer is recorded, not raised."""
    started = time.perf_counter()
    problem: str | None = None
    try:
        reply = json.loads(api.predict(query, SEARCH_K, collection, api_name="/search_knowledge"))
        if isinstance(reply, dict):
            problem = f"error: {reply.get('error')}"
        elif not reply:
            problem = "empty"
    except Exception as exc:  # counted, never hidden
        problem = f"error: {type(exc).__name__}: {exc}"
    return _Search(started, time.perf_counter(), problem)


def _phase(searches: list[_Search], seconds: float) -> dict[str, Any]:
    """Latency figures, throughput and failures of the searches of one phase."""
    latencies = [s.ended - s.started for s in searches]
    errors = [s.problem for s in searches if s.problem and s.problem != "empty"]
    return {
        "searches": len(searches),
        "answered": sum(s.problem is None for s in searches),
        "errors": len(errors),
        "empty": sum(s.problem == "empty" for s in searches),
        "seconds": round(seconds, 2),
        "searches_per_second": round(len(searches) / seconds, 2) if seconds else 0.0,
        **_latency_figures(latencies),
        "error_examples": sorted(set(errors))[:3],
    }


def run_search_under_ingestion(
    settings: Settings,
    serve: ServeChat,
    *,
    folder: Path | None = None,
    searchers: int = 8,
    searches: int = 15,
    rate: float = 4.0,
    documents: list[dict[str, str]] | None = None,
    queries: list[str] | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Search latency through the chat server's API without and during a `ladder ingest` of ``folder``.

    ``searchers`` clients each run ``searches`` searches on a quiet server, then go on searching
    until the ingestion subprocess exits (at most ``timeout_s``; it is killed after that). Together
    they start ``rate`` searches a second, each searcher on its own staggered schedule (a searcher
    still waiting for an answer starts its next search when the answer comes, without catching up);
    ``rate`` 0: each searches again as soon as it has its answer (the server saturated). The searched
    collection holds ``documents`` (default: PubMedQA's abstracts, asked its ``queries``); ``folder``
    (default: CISI's abstracts, one file each) goes into another collection. Both collections are
    dropped at the end. Returns the figures and the problems found.
    """
    from agent.core.assemble import open_knowledge_base
    from knowledge.store import drop_collection

    documents, queries = _searched_corpus(searchers, searches, rate, documents, queries)
    run_key = uuid.uuid4().hex[:8]
    searched, ingested = f"load-search-{run_key}", f"load-ingest-{run_key}"
    settings = settings.model_copy(update={"collection": searched, "ui_concurrency": searchers})
    with open_knowledge_base(settings) as kb, tempfile.TemporaryDirectory() as scratch:
        try:
            corpus = Path(scratch) / "searched.jsonl"
            corpus.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in documents), encoding="utf-8")
            kb.ingest([corpus], searched, progress=False)
            folder = (folder or write_cisi_folder(Path(scratch) / "cisi")).expanduser().absolute()
            with serve(settings, kb, ScriptedModel()) as served:
                url = served.url
                plan = _Plan(searched, queries, searchers, searches, rate)
                quiet, busy, ingestion = _measure(url, settings, plan, folder, ingested, timeout_s)
        finally:
            with kb.db.connection() as conn:
                for name in (searched, ingested):
                    drop_collection(conn, name)
                conn.commit()
    problems = ingestion.pop("problems") + _search_problems(quiet, busy)
    return {
        "searchers": searchers,
        "searches_per_searcher": searches,
        "rate_per_s": rate,
        "k": SEARCH_K,
        "search_mode": settings.search_mode,
        "searched_documents": len(documents),
        "without_ingestion": quiet,
        "during_ingestion": busy,
        "p95_ratio": _ratio(busy, quiet, "p95_s"),
        "p50_ratio": _ratio(busy, quiet, "p50_s"),
        "ingestion": ingestion,
        "problems": problems,
    }


def _searched_corpus(
    searchers: int, searches: int, rate: float, documents: list[dict[str, str]] | None, queries: list[str] | None
) -> tuple[list[dict[str, str]], list[str]]:
    """The searched documents and their queries (PubMedQA's by default), once the bounds are checked."""
    if not 1 <= searchers <= MAX_SESSIONS or not 1 <= searches <= MAX_SEARCHES or not 0 <= rate <= MAX_RATE:
        raise ValueError(f"searchers must be 1..{MAX_SESSIONS}, searches 1..{MAX_SEARCHES}, rate 0..{MAX_RATE}")
    if documents is None or queries is None:
        documents, queries = _search_corpus()
    if not documents or not queries:
        raise ValueError("the searched collection needs documents and queries")
    return documents, queries


def _search_problems(quiet: dict[str, Any], busy: dict[str, Any]) -> list[str]:
    """Failed or empty searches in either phase, or none at all during the ingestion."""
    problems = []
    for label, phase in (("without ingestion", quiet), ("during ingestion", busy)):
        if phase["errors"] or phase["empty"]:
            problems.append(f"{label}: {phase['errors']} searches failed, {phase['empty']} came back empty")
    if not busy["searches"]:
        problems.append("no search finished while the ingestion ran")
    return problems


def _ratio(busy: dict[str, Any], quiet: dict[str, Any], key: str) -> float | None:
    return round(busy[key] / quiet[key], 2) if busy[key] and quiet[key] else None


@dataclass
class _Plan:
    """Who searches what, how often."""

    collection: str
    queries: list[str]
    searchers: int
    searches: int  # each, without ingestion
    rate: float  # searches a second from all searchers together; 0: no pause

    def query(self, searcher: int, number: int) -> str:
        return self.queries[(searcher * self.searches + number) % len(self.queries)]


def _measure(
    url: str, settings: Settings, plan: _Plan, folder: Path, ingested: str, timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The two phases: a fixed count of searches each, then searches for as long as the ingestion runs."""
    from gradio_client import Client

    stop = threading.Event()
    interval = plan.searchers / plan.rate if plan.rate else 0.0  # between one searcher's searches
    with ThreadPoolExecutor(max_workers=plan.searchers) as pool:
        apis = list(pool.map(lambda _: Client(url, verbose=False, analytics_enabled=False), range(plan.searchers)))

        def search(i: int, count: int, paced: bool = True) -> list[_Search]:
            found: list[_Search] = []
            due = time.perf_counter() + i * interval / plan.searchers  # staggered starts
            for j in range(count):
                if paced and interval:
                    stop.wait(max(0.0, due - time.perf_counter()))
                    due = max(due, time.perf_counter()) + interval
                if stop.is_set():
                    break
                found.append(_search_once(apis[i], plan.query(i, j), plan.collection))
            return found

        # warm-up, unpaced: connections, the first embedding
        list(pool.map(lambda i: search(i, 1, paced=False), range(plan.searchers)))
        started = time.perf_counter()
        quiet = [s for found in pool.map(lambda i: search(i, plan.searches), range(plan.searchers)) for s in found]
        quiet_seconds = time.perf_counter() - started

        command = [sys.executable, "-m", "agent.cli", "ingest", str(folder), "-c", ingested, "--json", "--no-progress"]
        started = time.perf_counter()
        child = subprocess.Popen(
            command, env=_child_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        problems: list[str] = []
        try:
            running = [pool.submit(search, i, MAX_SEARCHES_DURING) for i in range(plan.searchers)]
            try:
                stdout, stderr = child.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                stdout, stderr = child.communicate()
                problems.append(f"the ingestion ran past {timeout_s:.0f} s and was killed")
            ended = time.perf_counter()
        finally:  # also on an interrupt: the searchers stop, the ingestion does not outlive the run
            stop.set()
            if child.poll() is None:
                child.kill()
                child.wait()
        # only the searches that finished while the ingestion process ran count as during it
        busy = [s for future in running for s in future.result() if s.ended <= ended]
    report = _ingest_report(child.returncode, stdout, stderr, problems)
    ingestion = _ingestion_figures(command, child.returncode, report, ended - started, problems)
    return _phase(quiet, quiet_seconds), _phase(busy, ended - started), ingestion


def _ingestion_figures(
    command: list[str], returncode: int | None, report: dict[str, Any], seconds: float, problems: list[str]
) -> dict[str, Any]:
    """What the ingestion did, from its JSON report: counts, seconds and throughput."""
    chunks, documents, work_s = (
        report.get("chunks_written", 0),
        report.get("documents_added", 0),
        report.get("seconds", 0.0),
    )
    return {
        "command": " ".join(["ladder", *command[3:-2]]),
        "exit_code": returncode,
        "files_seen": report.get("files_seen", 0),
        "documents_added": documents,
        "chunks_written": chunks,
        "seconds": work_s,
        "process_seconds": round(seconds, 2),
        "chunks_per_second": round(chunks / work_s, 1) if work_s else 0.0,
        "documents_per_second": round(documents / work_s, 1) if work_s else 0.0,
        "problems": problems,
    }


def _ingest_report(returncode: int | None, stdout: str, stderr: str, problems: list[str]) -> dict[str, Any]:
    """The subprocess's JSON report; a failure is added to ``problems`` with the end of its stderr."""
    if returncode != 0:
        problems.append(f"the ingestion exited with {returncode}: {stderr.strip()[-500:]}")
    try:
        found = json.loads(stdout)
    except json.JSONDecodeError:
        if returncode == 0:
            problems.append(f"the ingestion printed no JSON report: {stdout.strip()[-200:]!r}")
        return {}
    if found.get("skipped"):
        problems.append(f"the ingestion skipped {len(found['skipped'])} files, e.g. {found['skipped'][0]}")
    return found


def _load_users(kb: Any, run_key: str, sessions: int) -> dict[int, str]:
    """One user and bearer token per session (random passwords: nobody logs in with them)."""
    import secrets

    from agent.records.users import add_user, create_token

    tokens = {}
    with kb.db.connection() as conn:
        for i in range(sessions):
            add_user(conn, f"load-{run_key}-{i}", secrets.token_urlsafe(16))
            tokens[i] = create_token(conn, f"load-{run_key}-{i}", "bench load")[1]
    return tokens


def _drop_load_users(kb: Any, run_key: str, sessions: int, sources: list[str]) -> None:
    """The run's users, and what the limits noted about its logins (its names, its flood's addresses)."""
    from agent.records.users import remove_user

    with kb.db.connection() as conn:
        for i in range(sessions):
            remove_user(conn, f"load-{run_key}-{i}")
        conn.execute(
            "DELETE FROM login_attempts WHERE (kind = 'name' AND (key LIKE %s OR key LIKE %s))"
            " OR (kind = 'address' AND key = ANY(%s))",
            (f"load-{run_key}-%", f"flood-{run_key}-%", sources),
        )


def _check_log(kb: Any, threads: dict[int, str], turns: int, run_key: str, users: bool = False) -> list[str]:
    """Every turn exactly once, done, answered with its own token, in its own session's thread (and, with
    users, asked by that session's user)."""
    problems = []
    with kb.db.connection() as conn:
        rows = conn.execute(
            "SELECT t.thread_id, t.question, t.status, t.answer, u.name FROM turns t"
            " LEFT JOIN users u ON u.id = t.user_id WHERE t.thread_id LIKE %s",
            (f"load-{run_key}-%",),
        ).fetchall()
    by_token: dict[str, list[tuple[str, str, str]]] = {}
    for thread_id, question, status, answer, user in rows:
        found = _TOKEN.search(question)
        if users and user != thread_id:  # a session's user and thread share the name load-<run>-<i>
            problems.append(f"{thread_id}: a turn asked by {user!r}")
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
