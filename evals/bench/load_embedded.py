"""`ladder bench load --embedded`: several chat sessions at once on the real embedded model.

Ladder's own docs/ go into a collection (by default in a temporary data folder with its own
embedded PostgreSQL, so nothing lands in the user's knowledge base or turn log); the real chat
server serves the agent on the embedded llama.cpp model, and each session, a `gradio_client` client
on its own thread and its own chat thread, asks fixed questions about ITS OWN document through the
server's `ask` API. First a baseline: the sessions one after another, each alone on the model; then
all of them at once. The model serves one turn at a time (agent/models/queue.py), so the run starts
with every session's first turn in line (the bench holds the queue until they all are), and each
of those turns must have heard its place (QueueEvents, the last one 0).

A real model cannot echo a token, so a crossed answer is found another way: the reply a session
received must be the logged turn it names, logged once in that session's thread with the question
that session sent, done and unbroken, with the same answer and citations; the turn's passages must
include the session's own document, and every citation must be one of the turn's own passages.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.config import Settings
from evals.bench.load import _latency_figures

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase

# Serves the chat for an agent on loopback and yields where (agent.chat.scripted.loopback_chat).
ServeAgent = Callable[..., AbstractContextManager[Any]]

DOCS_FOLDER = Path(__file__).resolve().parents[2] / "docs"
# Each session asks about one document; none of these questions names two things, so none is split.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "database.md": (
        "Which system user runs the embedded PostgreSQL server when Ladder runs as root?",
        "How does Ladder stop two processes from applying the same migration?",
        "When is the HNSW index of a collection built?",
    ),
    "ingesting.md": (
        "What happens if an ingest is killed halfway through?",
        "Which Markdown file extensions does Ladder ingest?",
        "How many tokens does a chunk hold by default?",
    ),
    "searching.md": (
        "How does the recency option change the search scores?",
        "What does keyword search compute inside PostgreSQL?",
        "How does hybrid search fuse its rankings?",
    ),
    "agent.md": (
        "How does the classify step recognise small talk?",
        "How many model calls may one turn make?",
        "How do I continue an earlier conversation thread?",
    ),
    "overview.md": (
        "Whose talk is the playbook that Ladder follows?",
        "Where do the tokenizer encodings come from?",
        "Why is nothing downloaded at run time?",
    ),
    "architecture.md": (
        "Where do the test doubles live in the code?",
        "Which test checks that imports point down only?",
        "Where do I add a new retrieval stage?",
    ),
}
MAX_SESSIONS = 16
MAX_QUESTIONS = min(len(q) for q in QUESTIONS.values())
LINE_UP_S = 120.0  # the longest the bench waits for every session's first turn to be in line


def session_document(session: int) -> str:
    """The document a session asks about (the documents in turn, when sessions outnumber them)."""
    return list(QUESTIONS)[session % len(QUESTIONS)]


@dataclass
class _Turn:
    """One question a session asked, and what it got back."""

    phase: str
    session: int
    number: int
    thread_id: str
    question: str
    seconds: float = 0.0
    reply: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None  # the call raised (nothing came back)

    @property
    def label(self) -> str:
        return f"{self.phase} session {self.session} turn {self.number}"


@dataclass
class _Run:
    """The sessions' API clients and every turn asked."""

    url: str
    collection: str
    run_key: str
    sessions: int
    questions: int
    turns: list[_Turn] = field(default_factory=list)
    apis: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def connect(self) -> _Run:
        """One API client per session, connected before anything is timed."""
        from gradio_client import Client

        with ThreadPoolExecutor(max_workers=self.sessions) as pool:
            self.apis = list(
                pool.map(lambda _: Client(self.url, verbose=False, analytics_enabled=False), range(self.sessions))
            )
        return self

    def ask(self, phase: str, session: int, number: int, question: str) -> _Turn:
        turn = _Turn(phase, session, number, f"{phase}-{self.run_key}-{session}", question)
        started = time.perf_counter()
        try:
            raw = self.apis[session].predict(question, self.collection, turn.thread_id, api_name="/ask")
            turn.reply = json.loads(raw)
        except Exception as exc:  # counted, never hidden
            turn.failure = f"{type(exc).__name__}: {exc}"
        turn.seconds = time.perf_counter() - started
        with self._lock:
            self.turns.append(turn)
        return turn

    def session(self, phase: str, i: int) -> None:
        """Session ``i`` asks its questions, one after another, in its own thread."""
        for j, question in enumerate(QUESTIONS[session_document(i)][: self.questions]):
            self.ask(phase, i, j, question)

    def alone(self) -> float:
        """The baseline: each session in turn, alone on the model; the seconds it took."""
        started = time.perf_counter()
        for i in range(self.sessions):
            self.session("alone", i)
        return time.perf_counter() - started

    def together(self, queue: Any) -> tuple[float, list[str]]:
        """Every session at once, their first turns all in line before the first one runs; the
        seconds it took and what went wrong lining them up."""
        problems: list[str] = []
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.sessions) as pool:
            with queue.turn() if queue is not None else nullcontext():
                futures = [pool.submit(self.session, "together", i) for i in range(self.sessions)]
                if queue is not None and not _lined_up(queue, self.sessions, futures):
                    problems.append(f"the sessions' first turns were not all in line after {LINE_UP_S:.0f} s")
            for future in futures:
                future.result()
        return time.perf_counter() - started, problems


def _lined_up(queue: Any, count: int, futures: list[Future[None]]) -> bool:
    """Wait (bounded) until ``count`` turns wait in ``queue``; False when they never did."""
    deadline = time.monotonic() + LINE_UP_S
    while queue.waiting < count:
        if time.monotonic() > deadline or all(f.done() for f in futures):
            return False
        time.sleep(0.02)
    return True


@contextmanager
def _scratch_knowledge_base(settings: Settings) -> Iterator[KnowledgeBase]:
    """A knowledge base in a temporary data folder with its own embedded PostgreSQL, removed afterwards."""
    from agent.core.assemble import open_knowledge_base

    with tempfile.TemporaryDirectory(prefix="ladder-load-") as folder:
        # run as root, the database runs as its own system user, who must enter (not list) the folder
        Path(folder).chmod(0o711)
        scratch = settings.model_copy(update={"data_dir": Path(folder), "database_url": None})
        with open_knowledge_base(scratch) as kb:
            yield kb


def run_embedded_load(
    settings: Settings,
    serve: ServeAgent,
    *,
    sessions: int = 4,
    questions: int = 2,
    baseline: bool = True,
    kb: KnowledgeBase | None = None,
) -> dict[str, Any]:
    """Run the sessions alone (``baseline``) and at once on the embedded model; check the log.

    Returns both phases' figures, their ratios and the problems found (none, hopefully). The docs go
    into ``kb`` (default: a temporary data folder with its own PostgreSQL), in a collection dropped
    afterwards. ``serve(agent)`` starts the chat server (agent.chat.scripted.loopback_chat: the face
    is handed in, so this layer does not import it)."""
    from agent.core.assemble import open_agent
    from knowledge.store import drop_collection

    if not 1 <= sessions <= MAX_SESSIONS or not 1 <= questions <= MAX_QUESTIONS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS} and questions 1..{MAX_QUESTIONS}")
    if not DOCS_FOLDER.is_dir():
        raise FileNotFoundError(f"Ladder's docs folder {DOCS_FOLDER} is missing: run the bench from a checkout")
    run_key = uuid.uuid4().hex[:8]
    collection = f"load-embedded-{run_key}"
    # the embedded model, whatever endpoint is configured
    settings = settings.model_copy(update={"openai_base_url": None, "openai_api_key": None, "collection": collection})
    with _scratch_knowledge_base(settings) if kb is None else nullcontext(kb) as base:
        try:
            base.ingest([DOCS_FOLDER], collection, progress=False)
            with open_agent(settings, kb=base) as agent, serve(agent) as served:
                queued = agent.endpoint.queue is not None
                run = _Run(served.url, collection, run_key, sessions, questions).connect()
                seconds, problems = _drive(run, agent.endpoint.queue, baseline)
            rows = _logged_turns(base, run_key)
        finally:
            with base.db.connection() as conn:
                drop_collection(conn, collection)
                conn.commit()
    phases = {p: _phase_figures(run.turns, rows, p, s) for p, s in seconds.items()}
    return {
        "model": settings.local_model,
        "sessions": sessions,
        "questions_per_session": questions,
        "fact_check": settings.use_fact_check,
        "answer_max_tokens": settings.answer_max_tokens,
        **phases,
        "ratios": _ratios(phases),
        "answers_as_alone": _answers_as_alone(run.turns) if baseline else None,
        "problems": problems + _check_turns(run, rows, baseline, queued),
    }


def _drive(run: _Run, queue: Any, baseline: bool) -> tuple[dict[str, float], list[str]]:
    """With a baseline, a warm-up turn (the first embedding, the model's first prompt: in neither phase)
    and the baseline; then the sessions at once. Each phase's seconds."""
    seconds: dict[str, float] = {}
    if baseline:
        run.ask("warmup", 0, 0, QUESTIONS[session_document(0)][0])
        seconds["alone"] = run.alone()
    seconds["together"], problems = run.together(queue)
    return seconds, problems


def _logged_turns(kb: Any, run_key: str) -> dict[str, dict[str, Any]]:
    """The run's turns in the turn log, by turn id."""
    from psycopg.rows import dict_row

    with kb.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT turn_id, thread_id, question, status, answer, error, citations, passages, events"
            " FROM turns WHERE thread_id LIKE %s",
            (f"%-{run_key}-%",),
        )
        return {row["turn_id"]: row for row in cur.fetchall()}


def _queue_events(row: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (row or {}).get("events") or [] if e.get("type") == "queue"]


def _queue_wait_s(row: dict[str, Any] | None) -> float:
    """Seconds the turn waited for the model (its last QueueEvent's), 0 when it never waited."""
    events = _queue_events(row)
    return float(events[-1].get("seconds", 0.0)) if events else 0.0


def _phase_figures(turns: list[_Turn], rows: dict[str, dict[str, Any]], phase: str, seconds: float) -> dict[str, Any]:
    """Throughput, p50/p95 of the turns' seconds (as the client saw them), and the queue's figures."""
    mine = [t for t in turns if t.phase == phase]
    answered = [t for t in mine if t.failure is None and "error" not in t.reply]
    logged = [rows.get(t.reply.get("turn_id", "")) for t in mine]
    waits = [_queue_wait_s(row) for row in logged]
    steps = [e for row in logged for e in (row or {}).get("events") or [] if e.get("type") == "step"]
    return {
        "turns": len(mine),
        "answered": len(answered),
        "seconds": round(seconds, 2),
        "turns_per_second": round(len(answered) / seconds, 4) if seconds else 0.0,
        **_latency_figures([t.seconds for t in answered]),
        "turns_that_waited": sum(bool(_queue_events(row)) for row in logged),
        "most_ahead": max((e.get("ahead", 0) for row in logged for e in _queue_events(row)), default=0),
        "queue_wait_p95_s": _latency_figures(waits)["p95_s"],
        "step_errors": sum(1 for e in steps if e.get("status") == "end" and e.get("error")),
    }


def _ratios(phases: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The sessions at once over the baseline: throughput, p50 and p95."""
    alone, together = phases.get("alone"), phases["together"]

    def ratio(key: str) -> float | None:
        return round(together[key] / alone[key], 2) if alone and alone[key] and together[key] else None

    return {key: ratio(key) for key in ("turns_per_second", "p50_s", "p95_s")}


def _answers_as_alone(turns: list[_Turn]) -> int:
    """How many answers given at once read exactly as the same session's answer given alone."""
    alone = {(t.session, t.number): t.reply.get("answer") for t in turns if t.phase == "alone"}
    return sum(1 for t in turns if t.phase == "together" and t.reply.get("answer") == alone.get((t.session, t.number)))


# -- the checks -------------------------------------------------------------------------------------


def _check_turns(run: _Run, rows: dict[str, dict[str, Any]], baseline: bool, queued: bool) -> list[str]:
    """Every turn answered, logged exactly once where it was asked, its own; the queue's promises kept."""
    problems: list[str] = []
    phases = ["alone", "together"] if baseline else ["together"]
    expected = {
        (f"{phase}-{run.run_key}-{i}", question)
        for phase in phases
        for i in range(run.sessions)
        for question in QUESTIONS[session_document(i)][: run.questions]
    }
    logged: dict[tuple[str, str], int] = {}
    for row in rows.values():
        logged[(row["thread_id"], row["question"])] = logged.get((row["thread_id"], row["question"]), 0) + 1
    for key in sorted(expected | {k for k in logged if not k[0].startswith("warmup-")}):
        if key not in expected:
            problems.append(f"{key[0]}: a turn nobody asked there: {key[1]!r}")
        elif logged.get(key, 0) != 1:
            problems.append(f"{key[0]}: {key[1]!r} logged {logged.get(key, 0)} times, not once")
    for turn in run.turns:
        if turn.phase == "warmup":
            continue
        problems += _check_turn(turn, rows.get(turn.reply.get("turn_id", "")))
        if queued and turn.phase == "together" and turn.number == 0:
            problems += _check_waited(turn, rows.get(turn.reply.get("turn_id", "")))
    return problems


def _check_turn(turn: _Turn, row: dict[str, Any] | None) -> list[str]:
    """One turn: a reply, no failure, the logged turn it names is this session's, done, the same answer,
    drawn from the session's own document's passages."""
    if turn.failure is not None:
        return [f"{turn.label}: no reply ({turn.failure})"]
    if "error" in turn.reply:  # a broken stream ("cut off mid-stream"), a queue timeout, a failed call
        return [f"{turn.label}: failed: {turn.reply['error']}"]
    if row is None:
        return [f"{turn.label}: the reply names turn {turn.reply.get('turn_id')!r}, which is not in the log"]
    if (row["thread_id"], row["question"]) != (turn.thread_id, turn.question):
        return [f"{turn.label}: crossed: the reply is the turn asked in {row['thread_id']}: {row['question']!r}"]
    problems = []
    if row["status"] != "done" or row["error"]:
        problems.append(f"{turn.label}: logged as {row['status']}: {row['error']}")
    if row["answer"] != turn.reply.get("answer"):
        problems.append(f"{turn.label}: the answer received is not the answer logged")
    cited = [(c["doc_id"], c["chunk_id"]) for c in turn.reply.get("citations") or []]
    if cited != [(c["doc_id"], c["chunk_id"]) for c in row["citations"] or []]:
        problems.append(f"{turn.label}: the citations received are not the citations logged")
    passages = row["passages"] or []
    own = session_document(turn.session)
    # Each question's best passage is from its own document (retrieval is deterministic, so a question
    # set that drifted from docs/ fails alone as well as together; only a crossed turn fails together only).
    best = [Path(p["doc_id"]).name for p in passages if p.get("rank") == 1]
    if own not in best:
        problems.append(f"{turn.label}: its best passages come from {best or 'nowhere'}, not from {own}")
    strays = {chunk for _, chunk in cited} - {p["chunk_id"] for p in passages}
    if strays:
        problems.append(f"{turn.label}: cites chunks {sorted(strays)}, which it never retrieved")
    return problems + _check_queue_events(turn, row)


def _check_queue_events(turn: _Turn, row: dict[str, Any]) -> list[str]:
    """A turn that waited heard a place in line that only moved forward, and 0 when it started."""
    aheads = [e.get("ahead") for e in _queue_events(row)]
    if not aheads:
        return []
    if (
        aheads[-1] != 0
        or any(not isinstance(a, int) or a < 1 for a in aheads[:-1])
        or aheads[:-1] != sorted(aheads[:-1], reverse=True)
    ):
        return [f"{turn.label}: its places in line read {aheads}"]
    return []


def _check_waited(turn: _Turn, row: dict[str, Any] | None) -> list[str]:
    """A first turn of the sessions at once was in line behind the bench's hold: it must have heard so."""
    if row is None or turn.failure is not None or "error" in turn.reply:
        return []  # already a problem
    if not any(e.get("ahead", 0) >= 1 for e in _queue_events(row)):
        return [f"{turn.label}: waited in line but heard no place in it (no QueueEvent)"]
    return []
