"""Assemble the runtime from the settings: the knowledge base, and the agent on a chat endpoint.

``open_agent`` is the one place an agent is put together for real use (the CLI, the chat, the eval
runner, the benchmarks); tests and the scripted servers build ``Agent`` directly on a scripted endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from agent.core.config import Settings
from knowledge.base import KnowledgeBase
from knowledge.db import Database
from knowledge.embeddings import load_embedder

if TYPE_CHECKING:  # the agent (LangGraph, the model client) is loaded by open_agent: a search needs none of it
    from agent.core.turn import Agent


@contextmanager
def open_knowledge_base(settings: Settings) -> Iterator[KnowledgeBase]:
    """A knowledge base on the configured database and embedding model; closed on exit."""
    # The embedding model loads while the database starts: both wait mostly on other things (the disk,
    # the server process), so a one-search command starts in the longer of the two times, not their sum.
    with ThreadPoolExecutor(1, thread_name_prefix="ladder-embedder") as loader:
        embedder = loader.submit(load_embedder, settings.embedding_config())
        db = Database(settings.database_config())
    try:
        yield KnowledgeBase(
            db,
            embedder.result(),
            chunking=settings.chunking_config(),
            search_config=settings.search_config(),
            max_file_bytes=int(settings.max_file_mb * 1_000_000),
        )
    finally:
        db.close()


@contextmanager
def open_agent(settings: Settings, *, kb: KnowledgeBase | None = None, model: str | None = None) -> Iterator[Agent]:
    """The agent on the configured chat model (or ``model``), on ``kb`` or the configured knowledge base.

    Everything it opens (the embedded model server, the database pool, the checkpointer) closes on exit.
    """
    from agent.core.turn import Agent, open_checkpointer
    from agent.models.endpoint import open_chat_endpoint

    with ExitStack() as stack:
        if kb is None:
            kb = stack.enter_context(open_knowledge_base(settings))
        endpoint = stack.enter_context(open_chat_endpoint(settings, model))
        checkpointer = stack.enter_context(open_checkpointer(kb.db))
        yield Agent(settings, kb, endpoint, checkpointer)
