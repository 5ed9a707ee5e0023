"""Build the runtime objects (database, embedder, knowledge base) from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent.core.config import Settings
from agent.core.turn import Agent, open_checkpointer
from agent.models.endpoint import open_chat_endpoint
from knowledge.base import KnowledgeBase
from knowledge.db import Database
from knowledge.embeddings import load_embedder


@contextmanager
def open_knowledge_base(settings: Settings) -> Iterator[KnowledgeBase]:
    """A knowledge base on the configured database and embedding model; closed on exit."""
    db = Database(settings.database_config())
    try:
        yield KnowledgeBase(
            db,
            load_embedder(settings.embedding_config()),
            chunking=settings.chunking_config(),
            search_config=settings.search_config(),
            max_file_bytes=int(settings.max_file_mb * 1_000_000),
        )
    finally:
        db.close()


@contextmanager
def open_agent(settings: Settings) -> Iterator[Agent]:
    """The agent on the configured database, knowledge base and chat model; all closed on exit."""
    with (
        open_knowledge_base(settings) as kb,
        open_chat_endpoint(settings) as endpoint,
        open_checkpointer(kb.db) as checkpointer,
    ):
        yield Agent.on_endpoint(settings, kb, endpoint, checkpointer)
