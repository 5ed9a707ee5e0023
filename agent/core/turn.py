"""Run one turn of a conversation through the graph and return what every face needs.

The thread's state is checkpointed in Postgres (langgraph-checkpoint-postgres), so a conversation
survives a restart. Failures (model endpoint down, budget exhausted, a loop bound, Ladder's database
gone) end the turn with a clear message and whatever partial answer exists, never a traceback or a
hang; a turn's completion that cannot be logged while the database is away is logged when it is back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import openai
import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.errors import GraphRecursionError
from psycopg.rows import dict_row

from agent.core.config import Settings
from agent.core.context import Limits, Switches, TurnContext
from agent.core.events import QueueEvent, TokenEvent, TurnEvent
from agent.core.graph import build_graph
from agent.core.results import Citation, TurnResult
from agent.core.state import Research
from agent.models.calls import BudgetExceeded, ModelCaller, StreamInterrupted
from agent.models.endpoint import ChatEndpoint
from agent.models.queue import QueueTimeout
from agent.records.access import check_read, check_thread
from agent.records.outbox import TurnOutbox
from agent.records.redact import redact_secrets
from agent.records.turns import TurnCompletion, finish_turn, start_turn
from agent.records.users import User
from knowledge.base import KnowledgeBase
from knowledge.db import POOL_TIMEOUT_S, Database, DatabaseUnavailable, ResilientPool, as_unavailable
from knowledge.errors import LadderError
from knowledge.tokens import count_tokens
from tools.sql.database import DataSource, DataSourceError
from tools.sql.sources import get_source

log = logging.getLogger(__name__)
# What the turn log keeps of the settings in force: the knobs that change answers, never URLs or keys.
LOGGED_SETTINGS = (
    "chat_model",
    "local_model",
    "chat_adapter",
    "embedding_model",
    "search_mode",
    "research_mode",
    "rerank_method",
    "passages_per_question",
    "max_sub_questions",
    "max_tool_calls",
    "max_revisions",
    "answer_max_tokens",
    "hybrid_dense_weight",
    "hybrid_keyword_weight",
    "rrf_k",
    "use_condense",  # not a switch (eval sets are single-turn), so logged here
)
RECURSION_LIMIT = 40  # supersteps per turn; the graph needs 8 plus one per sub-question
# Per-turn fields of the thread's state, reset at the start of every turn.
FRESH_STATE: dict[str, Any] = {
    "standalone": "",
    "route": "",
    "domain": "",
    "sub_questions": [],
    "research": None,
    "passages": [],
    "draft": "",
    "fact_check": [],
    "revised": False,
    "answer": "",
    "citations": [],
    "data": {},
    "errors": None,
}


class QuestionError(LadderError, ValueError):
    """The question cannot be asked as it is (empty, or over the token budget)."""


@dataclass
class TurnRequest:
    question: str
    collection: str
    thread_id: str | None = None
    switches: dict[str, bool] | None = None
    database: str | None = None  # a registered data source; questions about data are answered with SQL
    face: str = "api"  # who asked: cli, ui, mcp, api, openai (recorded in the turn log)
    user: User | None = None  # the logged-in user; None is the local operator
    # Earlier messages ({"role": "user"|"assistant", "content"}) a stateless client sends along (the
    # OpenAI-compatible API): they become the start of the thread's history, so the condense step reads them.
    history: list[dict[str, str]] | None = None


def check_question(question: str, settings: Settings) -> str:
    """The question, stripped; a clear error when it is empty or too long for the budget."""
    text = question.strip()
    if not text:
        raise QuestionError("the question is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a JSON client: not text any database can store
        raise QuestionError("the question contains characters that are not valid Unicode text") from None
    tokens = count_tokens(text)
    if tokens > settings.max_question_tokens:
        raise QuestionError(
            f"the question is {tokens} tokens long; the limit is {settings.max_question_tokens} "
            "(LADDER_MAX_QUESTION_TOKENS): shorten it or ingest the text as a document and ask about it"
        )
    return text


@contextmanager
def open_checkpointer(db: Database | str) -> Iterator[PostgresSaver]:
    """A Postgres checkpointer, its tables created on first use.

    It has a pool of its own, checked on borrow, so it reconnects after the database restarts (one
    connection: the saver serialises its calls anyway). Given the Database rather than its URL, it
    also restarts a dead embedded server, as the Database's own pool does.
    """
    options: dict[str, Any] = {
        "min_size": 1,
        "max_size": 1,
        "kwargs": {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, "connect_timeout": 10},
    }
    if isinstance(db, Database):
        pool = db.open_pool(**options)
    else:
        pool = ResilientPool(db, open=True, timeout=POOL_TIMEOUT_S, **options)
    with pool:
        saver = PostgresSaver(pool)
        saver.setup()
        yield saver


def failure_message(exc: BaseException, client: openai.OpenAI) -> str | None:
    """What to tell the user when a turn stops on ``exc``; None for an error that is a bug, not a failure."""
    match exc:
        case BudgetExceeded():
            return f"{exc}; the answer may be incomplete"
        case StreamInterrupted() | QueueTimeout():
            return str(exc)
        case DataSourceError():
            return f"the database could not be read: {exc}"
        case GraphRecursionError():
            return f"the turn took more than {RECURSION_LIMIT} steps and was stopped"
        case openai.APITimeoutError():
            return (
                f"the model endpoint did not answer within {client.timeout} s (LADDER_LLM_TIMEOUT_S)"
                f" after {client.max_retries} retries"
            )
        case openai.APIStatusError():
            return f"the model endpoint answered {exc.status_code}: {_short(exc)}"
        case openai.APIConnectionError():
            return f"the model endpoint could not be reached ({_short(exc)}); check OPENAI_BASE_URL or the local model"
        case openai.OpenAIError():
            return f"the model call failed: {_short(exc)}"
        case DatabaseUnavailable() | psycopg.OperationalError():
            unavailable = as_unavailable(exc)  # the database went away mid-turn: fail the turn, say so
            return None if unavailable is None else str(unavailable)
    return None


class Agent:
    """The compiled graph with its checkpointer, the knowledge base and a chat endpoint."""

    def __init__(self, settings: Settings, kb: KnowledgeBase, endpoint: ChatEndpoint, checkpointer: Any) -> None:
        self.settings = settings
        self.kb = kb
        self.endpoint = endpoint
        self.graph = build_graph(checkpointer)
        self.outbox = TurnOutbox(self._write_completion)  # completions waiting for the database to come back

    @property
    def model(self) -> str:
        return self.endpoint.model

    def variant(self, settings: Settings) -> Agent:
        """The same agent (knowledge base, endpoint, checkpoints) with other settings: one rung of a ladder."""
        return Agent(settings, self.kb, self.endpoint, self.graph.checkpointer)

    def ask(self, request: TurnRequest, on_event: Callable[[TurnEvent], None] | None = None) -> TurnResult:
        """Run a turn; stream events to ``on_event``; return the answer with citations, checks and passages."""
        question = check_question(request.question, self.settings)
        if self.settings.redact_questions:  # before the turn log, the checkpoints and the model see it
            question = redact_secrets(question)
        context = self._context(request)
        thread_id = request.thread_id or uuid.uuid4().hex
        turn_id = uuid.uuid4().hex
        self._start(request, question, turn_id, thread_id, context.switches)
        start: dict[str, Any] = {**FRESH_STATE, "question": question}
        if request.history:
            start["history"] = self._earlier(request.history)
        final, error, events = self._run(start, turn_id, thread_id, context, on_event)
        result = self._result(final, error, context, turn_id, thread_id)
        self._complete(turn_id, self._completion(result, final, events, context.caller))
        return result

    def _context(self, request: TurnRequest) -> TurnContext:
        settings = self.settings
        caller = ModelCaller(
            self.endpoint.client,
            self.endpoint.model,
            max_calls=settings.max_model_calls,
            json_mode=self.endpoint.json_mode,  # type: ignore[arg-type]
            max_tokens=settings.answer_max_tokens,
        )
        return TurnContext(
            caller=caller,
            kb=self.kb,
            collection=request.collection,
            switches=Switches.from_settings(settings, request.switches),
            limits=Limits.from_settings(settings, embedded=self.endpoint.embedded),
            search_mode=settings.search_mode,
            research_mode=settings.research_mode,
            condense=settings.use_condense,
            rerank_method=settings.rerank_method,
            mmr_lambda=settings.mmr_lambda,
            cross_encoder_path=str(settings.cross_encoder_path) if settings.cross_encoder_path else None,
            data_source=self._data_source(request.database),
        )

    def _start(self, request: TurnRequest, question: str, turn_id: str, thread_id: str, switches: Switches) -> None:
        """Check the user may ask here, then log the turn as running (before the graph runs)."""
        if request.user is not None:
            self._log(check_thread, thread_id, request.user)
            self._log(check_read, request.collection, request.user)
        self._log(
            start_turn,
            turn_id,
            thread_id,
            question,
            face=request.face,
            collection=request.collection,
            data_source=request.database,
            switches=switches.as_dict(),
            user_id=request.user.id if request.user is not None else None,
        )

    def _earlier(self, history: list[dict[str, str]]) -> list[dict[str, str]]:
        """A client's earlier messages as the thread keeps them (secrets masked, as in questions)."""
        mask = redact_secrets if self.settings.redact_questions else str
        return [{"role": m["role"], "content": mask(m["content"])} for m in history]

    def _run(
        self,
        start: dict[str, Any],
        turn_id: str,
        thread_id: str,
        context: TurnContext,
        on_event: Callable[[TurnEvent], None] | None,
    ) -> tuple[dict[str, Any], str | None, list[TurnEvent]]:
        """Stream the graph: (final state, the failure that stopped it or None, every event but tokens)."""
        # turn_id lands in each checkpoint's metadata: retention finds the checkpoints of a pruned turn by it
        config = {"configurable": {"thread_id": thread_id, "turn_id": turn_id}, "recursion_limit": RECURSION_LIMIT}
        final: dict[str, Any] = {}
        events: list[TurnEvent] = []

        def publish(event: TurnEvent) -> None:
            if not isinstance(event, TokenEvent):
                events.append(event)
            if on_event is not None:
                on_event(event)

        try:
            with self._queued(publish):
                for mode, chunk in self.graph.stream(start, config, context=context, stream_mode=["custom", "values"]):
                    if mode == "values":
                        final = chunk
                    else:
                        publish(chunk)
        except Exception as exc:
            error = failure_message(exc, self.endpoint.client)
            if error is None:
                raise
            return {**final, **self._partial(thread_id)}, error, events
        return final, None, events

    def _queued(self, publish: Callable[[TurnEvent], None]) -> Any:
        """The model's queue for this turn (a model that serves one request at a time), else nothing."""
        queue = self.endpoint.queue
        if queue is None:
            return nullcontext()
        since = time.perf_counter()
        return queue.turn(lambda ahead: publish(QueueEvent(ahead, round(time.perf_counter() - since, 1))))

    def _result(
        self, final: dict[str, Any], error: str | None, context: TurnContext, turn_id: str, thread_id: str
    ) -> TurnResult:
        answer = final.get("answer") or final.get("draft") or ""
        if error is not None and not answer:
            answer = f"I could not answer: {error}."
        settings = self.settings
        return TurnResult(
            answer=answer,
            turn_id=turn_id,
            thread_id=thread_id,
            citations=[Citation.from_dict(c) for c in final.get("citations") or []],
            passages=list(final.get("passages") or []),
            retrieved=ranked_passages(final.get("research") or []),
            sub_questions=list(final.get("sub_questions") or []),
            fact_check=list(final.get("fact_check") or []),
            revised=bool(final.get("revised")),
            usage=context.caller.usage(settings.prompt_cost_per_1m, settings.completion_cost_per_1m),
            switches=context.switches.as_dict(),
            errors=list(final.get("errors") or []),
            data=final.get("data") or None,
            error=error,
        )

    def _completion(
        self, result: TurnResult, final: dict[str, Any], events: list[TurnEvent], caller: ModelCaller
    ) -> TurnCompletion:
        return TurnCompletion(
            answer=result.answer,
            citations=[c.to_dict() for c in result.citations],
            usage=result.usage,
            data=result.data,
            error=result.error,
            model=self.endpoint.model,
            settings={name: getattr(self.settings, name) for name in LOGGED_SETTINGS},
            sub_questions=result.sub_questions,
            draft=final.get("draft") or None,
            fact_check=list(result.fact_check),
            passages=result.retrieved,
            events=[event.to_dict() for event in events],
            model_calls=caller.stats.log,
        )

    def _complete(self, turn_id: str, completion: TurnCompletion) -> None:
        """Write the turn's completion; while the database is away, the outbox keeps it to write later."""
        try:
            self._log(finish_turn, turn_id, completion)
        except (DatabaseUnavailable, psycopg.Error) as exc:  # the answer still reaches the user
            if as_unavailable(exc) is None:
                log.warning("could not complete turn %s in the log: %s", turn_id, exc)
                return
            log.warning("turn %s waits to be completed in the log: %s", turn_id, exc)
            self.outbox.add(turn_id, completion)

    def _write_completion(self, turn_id: str, completion: TurnCompletion) -> None:
        with self.kb.db.connection() as conn:
            finish_turn(conn, turn_id, completion)

    def _log(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if len(self.outbox):  # the database may be back: earlier turns' completions go first
            self.outbox.flush()
        with self.kb.db.connection() as conn:
            write(conn, *args, **kwargs)

    def _data_source(self, name: str | None) -> DataSource | None:
        """The picked database, opened read-only (a clear DataSourceError when it is unknown)."""
        if not name:
            return None
        settings = self.settings
        with self.kb.db.connection() as conn:
            return get_source(
                conn, name, settings.data_sources, timeout_ms=settings.sql_timeout_ms, row_cap=settings.sql_row_cap
            )

    def _partial(self, thread_id: str) -> dict[str, Any]:
        """The last checkpointed state of the thread, for a partial answer after a failure."""
        try:
            snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        except Exception:  # a failing checkpointer must not hide the original error
            return {}
        return dict(snapshot.values or {})


def ranked_passages(research: list[Research]) -> list[dict[str, Any]]:
    """Every retrieved passage with its sub-question, rank and score (text kept: chunks can change later)."""
    return [
        {"sub_question": item["index"], "rank": rank, **passage}
        for item in sorted(research, key=lambda r: r["index"])
        for rank, passage in enumerate(item["passages"], start=1)
    ]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
