"""The knowledge base as one object: the API that the CLI, the agent's tools and the evals call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knowledge.bounds import DEFAULT_LIMITS, ParseLimits
from knowledge.chunking import ChunkingConfig
from knowledge.db import Database
from knowledge.embeddings import Embedder
from knowledge.ingest import Ingestor, IngestReport
from knowledge.search import QueryTransform, Reranker, SearchConfig, Searcher, SearchHit, SearchRequest
from knowledge.store import get_chunks, get_collection, list_collections


class KnowledgeBase:
    """Ingest into and search the collections of one database with one embedding model."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        *,
        chunking: ChunkingConfig | None = None,
        search_config: SearchConfig | None = None,
        max_file_bytes: int = 50_000_000,
        query_transforms: Sequence[QueryTransform] = (),
        rerankers: Sequence[Reranker] = (),
        parse_limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.chunking = chunking or ChunkingConfig()
        self.max_file_bytes = max_file_bytes
        self.parse_limits = parse_limits
        self.searcher = Searcher(db, embedder, search_config, query_transforms=query_transforms, rerankers=rerankers)

    def ingest(
        self,
        paths: Sequence[Path | str],
        collection: str,
        *,
        chunking: ChunkingConfig | None = None,
        prune: bool = False,
        progress: bool | None = None,
    ) -> IngestReport:
        """Ingest files and folders into ``collection`` (created on first use)."""
        ingestor = Ingestor(
            self.db,
            self.embedder,
            chunking or self.chunking,
            max_file_bytes=self.max_file_bytes,
            progress=progress,
            parse_limits=self.parse_limits,
        )
        return ingestor.ingest(paths, collection, prune=prune)

    def search(self, query: str, collection: str, **options: Any) -> list[SearchHit]:
        """Search ``collection``; options are the fields of SearchRequest (k, mode, filters, recency)."""
        return self.searcher.search(SearchRequest(query=query, collection=collection, **options))

    def collections(self) -> list[dict[str, Any]]:
        with self.db.connection() as conn:
            return list_collections(conn)

    def description(self, collection: str) -> str:
        """What the collection is about ('' when unset or when there is no such collection)."""
        with self.db.connection() as conn:
            found = get_collection(conn, collection)
        return found.description if found else ""

    def passages(self, chunk_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Chunks by id with their source, for showing what an answer cites."""
        with self.db.connection() as conn:
            return get_chunks(conn, chunk_ids)
