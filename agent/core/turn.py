"""Run one turn of a conversation through the graph and return what every face needs.

The thread's state is checkpointed in Postgres (langgraph-checkpoint-postgres), so a conversation
survives a restart. Failures (model endpoint down, budget exhausted, a loop bound, Ladder's database
gone) end the turn with a clear message and whatever partial answer exists, never a traceback or a
hang; a turn's completion that cannot be logged while the database is away is logged when it is back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.errors import GraphRecursionError
from psycopg.rows import dict_row

from agent.core.config import Settings
from agent.core.context import Limits, Switches, TurnContext
from agent.core.graph import build_graph
from agent.models.calls import BudgetExceeded, ModelCaller, StreamInterrupted
from agent.records.access import check_read, check_thread
from agent.records.outbox import TurnOutbox
from agent.records.redact import redact_secrets
from agent.records.turns import finish_turn, start_turn
from agent.records.users import User
from knowledge.base import KnowledgeBase
from knowledge.db import POOL_TIMEOUT_S, Database, DatabaseUnavailable, ResilientPool, as_unavailable
from knowledge.tokens import count_tokens
from tools.sql.database import DataSource, DataSourceError
from tools.sql.sources import get_source

log = logging.getLogger(__name__)
# What the turn log keeps of the settings in force: the knobs that change answers, never URLs or keys.
LOGGED_SETTINGS = (
    "chat_model",
    "local_model",
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
)
RECURSION_LIMIT = 40  # supersteps per turn; the graph needs 7 plus one per sub-question
Event = dict[str, Any]


class QuestionError(ValueError):
    """The question cannot be asked as it is (empty, or over the token budget)."""


@dataclass
class TurnRequest:
    question: str
    collection: str
    thread_id: str | None = None
    switches: dict[str, bool] | None = None
    database: str | None = None  # a registered data source; questions about data are answered with SQL
    face: str = "api"  # who asked: cli, ui, mcp, api (recorded in the turn log)
    user: User | None = None  # the logged-in user; None is the local operator


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


class Agent:
    """The compiled graph with its checkpointer, the knowledge base and a model endpoint."""

    def __init__(
        self,
        settings: Settings,
        kb: KnowledgeBase | None,
        client: openai.OpenAI,
        model: str,
        checkpointer: Any,
        *,
        json_mode: str = "json_schema",
        embedded: bool = False,
    ) -> None:
        self.settings = settings
        self.kb = kb
        self.client = client
        self.model = model
        self.json_mode = json_mode
        self.embedded = embedded
        self.graph = build_graph(checkpointer)
        self.outbox = TurnOutbox(self._write_completion)  # completions waiting for the database to come back

    @classmethod
    def on_endpoint(cls, settings: Settings, kb: KnowledgeBase | None, endpoint: Any, checkpointer: Any) -> Agent:
        """An agent on an open chat endpoint (agent.models.endpoint.ChatEndpoint)."""
        return cls(
            settings,
            kb,
            endpoint.client,
            endpoint.model,
            checkpointer,
            json_mode=endpoint.json_mode,
            embedded=endpoint.embedded,
        )

    def ask(self, request: TurnRequest, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
        """Run a turn; stream events to ``on_event``; return the answer with citations and checks."""
        settings = self.settings
        question = check_question(request.question, settings)
        if settings.redact_questions:  # before the turn log, the checkpoints and the model see it
            question = redact_secrets(question)
        switches = Switches.from_settings(settings, request.switches)
        caller = ModelCaller(
            self.client,
            self.model,
            max_calls=settings.max_model_calls,
            json_mode=self.json_mode,  # type: ignore[arg-type]
            max_tokens=settings.answer_max_tokens,
        )
        context = TurnContext(
            caller=caller,
            kb=self.kb,
            collection=request.collection,
            switches=switches,
            limits=Limits.from_settings(settings, embedded=self.embedded),
            search_mode=settings.search_mode,
            research_mode=settings.research_mode,
            rerank_method=settings.rerank_method,
            mmr_lambda=settings.mmr_lambda,
            cross_encoder_path=str(settings.cross_encoder_path) if settings.cross_encoder_path else None,
            data_source=self._data_source(request.database),
        )
        thread_id = request.thread_id or uuid.uuid4().hex
        turn_id = uuid.uuid4().hex
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
        # turn_id lands in each checkpoint's metadata: retention finds the checkpoints of a pruned turn by it
        config = {"configurable": {"thread_id": thread_id, "turn_id": turn_id}, "recursion_limit": RECURSION_LIMIT}
        fresh = {
            "question": question,
            "route": "",
            "domain": "",
            "sub_questions": [],
            "research": None,
            "draft": "",
            "fact_check": [],
            "revised": False,
            "answer": "",
            "citations": [],
            "data": {},
            "errors": None,
        }
        final: dict[str, Any] = {}
        error: str | None = None
        steps: list[Event] = []  # every event but the tokens, for the turn log
        try:
            for mode, chunk in self.graph.stream(fresh, config, context=context, stream_mode=["custom", "values"]):
                if mode == "custom":
                    if chunk.get("type") != "token":
                        steps.append(chunk)
                    if on_event is not None:
                        on_event(chunk)
                elif mode == "values":
                    final = chunk
        except BudgetExceeded as exc:
            error = f"{exc}; the answer may be incomplete"
        except StreamInterrupted as exc:
            error = str(exc)
        except DataSourceError as exc:
            error = f"the database could not be read: {exc}"
        except GraphRecursionError:
            error = f"the turn took more than {RECURSION_LIMIT} steps and was stopped"
        except openai.APITimeoutError:
            error = (
                f"the model endpoint did not answer within {self.client.timeout} s (LADDER_LLM_TIMEOUT_S)"
                f" after {self.client.max_retries} retries"
            )
        except openai.APIStatusError as exc:
            error = f"the model endpoint answered {exc.status_code}: {_short(exc)}"
        except openai.APIConnectionError as exc:
            error = f"the model endpoint could not be reached ({_short(exc)}); check OPENAI_BASE_URL or the local model"
        except openai.OpenAIError as exc:
            error = f"the model call failed: {_short(exc)}"
        except (DatabaseUnavailable, psycopg.OperationalError) as exc:
            unavailable = as_unavailable(exc)  # the database went away mid-turn: fail the turn, say so
            if unavailable is None:
                raise
            error = str(unavailable)
        if error is not None:
            final = {**final, **self._partial(thread_id)}
        answer = final.get("answer") or final.get("draft") or ""
        if error is not None and not answer:
            answer = f"I could not answer: {error}."
        result = {
            "answer": answer,
            "citations": [
                {"number": c.get("number"), "doc_id": c["doc_id"], "chunk_id": c["chunk_id"]}
                for c in final.get("citations") or []
            ],
            "sub_questions": final.get("sub_questions") or [],
            "fact_check": final.get("fact_check") or [],
            "revised": bool(final.get("revised")),
            "usage": caller.usage(settings.prompt_cost_per_1m, settings.completion_cost_per_1m),
            "switches": switches.as_dict(),
            "turn_id": turn_id,
            "thread_id": thread_id,
            "errors": list(final.get("errors") or []),
        }
        if final.get("data"):
            result["data"] = final["data"]
        if error is not None:
            result["error"] = error
        details = {
            "model": self.model,
            "settings": {name: getattr(settings, name) for name in LOGGED_SETTINGS},
            "sub_questions": final.get("sub_questions") or [],
            "draft": final.get("draft") or None,
            "fact_check": final.get("fact_check") or [],
            "passages": _ranked_passages(final.get("research") or []),
            "events": steps,
            "model_calls": caller.stats.log,
        }
        self._complete(turn_id, result, details)
        return result

    def _complete(self, turn_id: str, result: dict[str, Any], details: dict[str, Any]) -> None:
        """Write the turn's completion; while the database is away, the outbox keeps it to write later."""
        try:
            self._log(finish_turn, turn_id, result, details)
        except (DatabaseUnavailable, psycopg.Error) as exc:  # the answer still reaches the user
            if as_unavailable(exc) is None:
                log.warning("could not complete turn %s in the log: %s", turn_id, exc)
                return
            log.warning("turn %s waits to be completed in the log: %s", turn_id, exc)
            self.outbox.add(turn_id, result, details)

    def _write_completion(self, turn_id: str, result: dict[str, Any], details: dict[str, Any]) -> None:
        if self.kb is not None:
            with self.kb.db.connection() as conn:
                finish_turn(conn, turn_id, result, details)

    def _log(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if self.kb is not None:
            if len(self.outbox):  # the database may be back: earlier turns' completions go first
                self.outbox.flush()
            with self.kb.db.connection() as conn:
                write(conn, *args, **kwargs)

    def _data_source(self, name: str | None) -> DataSource | None:
        """The picked database, opened read-only (a clear DataSourceError when it is unknown)."""
        if not name:
            return None
        if self.kb is None:
            raise DataSourceError("answering from a database needs Ladder's own database for the registry")
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


def _ranked_passages(research: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every retrieved passage with its sub-question, rank and score (text kept: chunks can change later)."""
    return [
        {"sub_question": item["index"], "rank": rank, **passage}
        for item in sorted(research, key=lambda r: r["index"])
        for rank, passage in enumerate(item["passages"], start=1)
    ]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
