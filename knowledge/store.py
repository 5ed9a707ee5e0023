"""Rows of the knowledge base: collections, documents and their chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from knowledge import term_stats
from knowledge.chunking import Chunk
from knowledge.errors import LadderError

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
_INDEX_LOCK = 0x1ADD3  # advisory lock class for vector index builds (second key: collection id)


class CollectionError(LadderError, ValueError):
    """A collection is missing or does not match the embedding model in use."""


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    embedding_model: str
    dimension: int
    description: str = ""

    @property
    def hnsw_index(self) -> str:
        return f"chunks_hnsw_c{self.id}"

    def vector_type(self) -> sql.Composable:
        """``vector(n)``: the cast that the collection's partial HNSW index is built on."""
        return sql.SQL("vector({})").format(sql.Literal(self.dimension))


def get_collection(conn: psycopg.Connection, name: str) -> Collection | None:
    row = conn.execute(
        "SELECT id, name, embedding_model, dimension, description FROM collections WHERE name = %s", (name,)
    ).fetchone()
    return Collection(*row) if row else None


def list_collections(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every collection with its document and chunk counts."""
    rows = conn.execute(
        """
        SELECT c.name, c.embedding_model, c.dimension, c.description,
               (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),
               (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id), c.created_at
        FROM collections c ORDER BY c.name
        """
    ).fetchall()
    keys = ("name", "embedding_model", "dimension", "description", "documents", "chunks", "created_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def check_model(collection: Collection, model: str, dimension: int) -> None:
    """Refuse to mix vectors from different embedding models in one collection."""
    if collection.embedding_model != model or collection.dimension != dimension:
        raise CollectionError(
            f"collection {collection.name!r} was built with {collection.embedding_model} "
            f"({collection.dimension} dimensions) but the embedding model in use is {model} "
            f"({dimension} dimensions); set LADDER_EMBEDDING_MODEL={collection.embedding_model} "
            "or use another collection"
        )


def require_collection(conn: psycopg.Connection, name: str, model: str, dimension: int) -> Collection:
    """The named collection, checked against the model; a clear error if it is missing."""
    collection = get_collection(conn, name)
    if collection is None:
        names = [c["name"] for c in list_collections(conn)]
        known = ", ".join(names) if names else "none yet"
        raise CollectionError(
            f"no collection named {name!r} (collections: {known}); run `ladder ingest PATH --collection {name}`"
        )
    check_model(collection, model, dimension)
    return collection


def check_collection_name(name: str) -> None:
    """The table's check on a new collection's name, as a clear error."""
    if not 1 <= len(name) <= 100:
        raise CollectionError(f"a collection name must be 1-100 characters, not {len(name)}")


def ensure_collection(conn: psycopg.Connection, name: str, model: str, dimension: int) -> Collection:
    """Get or create a collection (without its vector index: see ensure_vector_index); commit the creation."""
    collection = get_collection(conn, name)
    if collection is None:
        check_collection_name(name)
        with conn.transaction():
            conn.execute(
                "INSERT INTO collections (name, embedding_model, dimension) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, model, dimension),
            )
        collection = get_collection(conn, name)
        assert collection is not None
    check_model(collection, model, dimension)
    return collection


def ensure_vector_index(conn: psycopg.Connection, collection: Collection) -> bool:
    """Build the collection's partial HNSW index if it is missing or invalid; True if built now.

    Ingest calls this after loading, because building over loaded rows is much faster than
    growing the graph row by row. CONCURRENTLY keeps other collections writable meanwhile.
    Until the index exists, dense search on the collection is an exact scan: slower, never wrong.
    """
    state = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
        (collection.hnsw_index,),
    ).fetchone()
    conn.commit()
    if state is not None and state[0]:
        return False
    previous = conn.autocommit
    timeout = conn.execute("SHOW statement_timeout").fetchone()[0]  # type: ignore[index]
    conn.commit()
    conn.autocommit = True  # CREATE INDEX CONCURRENTLY cannot run inside a transaction
    # One builder per collection: two concurrent builds of one index deadlock on each other, and
    # a blocking lock would too (CONCURRENTLY waits for every open snapshot, the waiter's included).
    locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_INDEX_LOCK, collection.id)).fetchone()[0]  # type: ignore[index]
    if not locked:
        conn.autocommit = previous
        return False  # another process is building it
    try:
        conn.execute("SET statement_timeout = 0")  # a large build may take minutes
        if state is not None:  # a build that was interrupted leaves an invalid index behind
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(collection.hnsw_index)))
        conn.execute(
            sql.SQL(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON chunks USING hnsw (({}) vector_cosine_ops)"
                " WITH (m = {}, ef_construction = {}) WHERE collection_id = {}"
            ).format(
                sql.Identifier(collection.hnsw_index),
                sql.SQL("(embedding::{})").format(collection.vector_type()),
                sql.Literal(HNSW_M),
                sql.Literal(HNSW_EF_CONSTRUCTION),
                sql.Literal(collection.id),
            )
        )
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.ObjectInUse):
        return False  # another process is building the same index
    finally:
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout)))
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_INDEX_LOCK, collection.id))
        conn.autocommit = previous
    return True


def existing_documents(conn: psycopg.Connection, collection: Collection) -> dict[str, tuple[str, str]]:
    """doc_id -> (content hash, chunking signature) for every document in the collection."""
    rows = conn.execute(
        "SELECT doc_id, content_hash, chunking FROM documents WHERE collection_id = %s", (collection.id,)
    )
    return {doc_id: (content_hash, chunking) for doc_id, content_hash, chunking in rows}


@dataclass
class DocumentWrite:
    """A document and its embedded chunks, to be stored in place of any older version."""

    doc_id: str
    source: str
    title: str
    metadata: dict[str, Any]
    content_hash: str
    chunking: str
    chunks: list[Chunk]
    embeddings: np.ndarray


@dataclass
class WriteResult:
    """What ``write_documents`` stored: chunks written, and each document refused with the reason."""

    chunks: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # doc_id -> reason


# What is said about one document's content: by the database (class 22 data exceptions such as a NUL
# byte or text that is not valid JSON, class 54 limits such as a tsvector too long), or by psycopg
# before sending (a string with no UTF-8 form). Anything else, a lost connection for one, is about
# the run and ends it.
DOCUMENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.DataError,
    psycopg.errors.ProgramLimitExceeded,
    UnicodeEncodeError,
)


def write_documents(
    conn: psycopg.Connection,
    collection: Collection,
    docs: Sequence[DocumentWrite],
    *,
    async_commit: bool = False,
) -> WriteResult:
    """Replace these documents and their chunks in one transaction; a document the database refuses
    is left out (its older version, if any, stays) and reported, and the others are stored.

    The batch is written in one savepoint, with one COPY for all its chunks. Only when the database
    refuses something is that savepoint rolled back and the batch written again one document per
    savepoint, so the one at fault is found and left out: nothing is paid for isolation when nothing
    fails (a savepoint and a COPY per document made every batch 2-3 times slower). Savepoints rather
    than a transaction per document: the batch still commits once (one WAL flush, or none to wait for
    with ``async_commit``), and a batch interrupted halfway leaves none of its documents, so the
    content hashes stay true. Upserting the document row locks it, so two ingests of the same document
    serialise and the last one's chunks are the only ones left. ``async_commit`` skips the wait for the
    WAL flush: a crash may then lose the last few commits, which a re-run redoes from the content hashes.
    """
    # A doc_id twice in one batch: the last wins. Sorted, so that concurrent batches lock the document
    # rows they share in one order and never deadlock.
    latest = sorted({doc.doc_id: doc for doc in docs}.values(), key=lambda doc: doc.doc_id)
    with conn.transaction():
        if async_commit:
            conn.execute("SET LOCAL synchronous_commit = off")
        result = _write_isolating_failures(conn, collection, latest)
    term_stats.compact(conn, collection.id)
    return result


def _write_isolating_failures(
    conn: psycopg.Connection, collection: Collection, docs: list[DocumentWrite]
) -> WriteResult:
    result = WriteResult()
    try:
        with conn.transaction():  # SAVEPOINT
            result.chunks = _write_batch(conn, collection, docs)
        return result
    except DOCUMENT_ERRORS:
        pass  # rolled back to the savepoint: find the documents at fault
    for doc in docs:
        try:
            with conn.transaction():
                result.chunks += _write_batch(conn, collection, [doc])
        except DOCUMENT_ERRORS as exc:
            result.refused[doc.doc_id] = refusal(exc)
    return result


def refusal(exc: Exception) -> str:
    """Why the database refused a document, in one line: the error's name and its primary message
    (not its detail or context, which quote the document)."""
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or str(exc).splitlines()[0]
    return f"could not be stored: {type(exc).__name__}: {' '.join(message.split())[:200]}"


def _write_batch(conn: psycopg.Connection, collection: Collection, docs: Sequence[DocumentWrite]) -> int:
    """Upsert the documents' rows and replace their chunks, with one COPY; the chunks written."""
    rows: list[tuple[Any, ...]] = []
    for doc in docs:
        document_id = conn.execute(
            """
            INSERT INTO documents (collection_id, doc_id, source, title, metadata, content_hash, chunking, n_chunks)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (collection_id, doc_id) DO UPDATE
            SET source = EXCLUDED.source, title = EXCLUDED.title, metadata = EXCLUDED.metadata,
                content_hash = EXCLUDED.content_hash, chunking = EXCLUDED.chunking,
                n_chunks = EXCLUDED.n_chunks, ingested_at = now()
            RETURNING id
            """,
            (
                collection.id,
                doc.doc_id,
                doc.source,
                doc.title,
                Jsonb(doc.metadata),
                doc.content_hash,
                doc.chunking,
                len(doc.chunks),
            ),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (document_id,))
        rows.extend(
            (
                document_id,
                collection.id,
                chunk.ordinal,
                doc.title,
                chunk.heading,
                chunk.text,
                chunk.n_tokens,
                Jsonb({**doc.metadata, **chunk.metadata}),
                vector,
            )
            for chunk, vector in zip(doc.chunks, doc.embeddings, strict=True)
        )
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY chunks (document_id, collection_id, ordinal, title, heading, text, n_tokens, metadata,"
            " embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int8", "int4", "int4", "text", "text", "text", "int4", "jsonb", "vector"])
        for row in rows:
            copy.write_row(row)
    return len(rows)


def delete_documents(conn: psycopg.Connection, collection: Collection, doc_ids: Sequence[str]) -> int:
    """Remove documents (and, by cascade, their chunks); return how many went."""
    if not doc_ids:
        return 0
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM documents WHERE collection_id = %s AND doc_id = ANY(%s)",
            (collection.id, list(doc_ids)),
        )
    term_stats.compact(conn, collection.id)
    return cur.rowcount


def documents_under(conn: psycopg.Connection, collection: Collection, roots: Sequence[str]) -> list[tuple[str, str]]:
    """(doc_id, source) of documents whose source is one of ``roots`` or lies inside one."""
    rows = conn.execute(
        """
        SELECT doc_id, source FROM documents
        WHERE collection_id = %s
          AND EXISTS (SELECT 1 FROM unnest(%s::text[]) r
                      WHERE source = r OR starts_with(source, rtrim(r, '/') || '/'))
        """,
        (collection.id, list(roots)),
    )
    return [(doc_id, source) for doc_id, source in rows]


def drop_collection(conn: psycopg.Connection, name: str) -> bool:
    """Delete a collection with its documents, chunks and HNSW index; False if there was none."""
    collection = get_collection(conn, name)
    if collection is None:
        return False
    with conn.transaction():
        conn.execute("SET LOCAL ladder.term_stats = 'off'")  # its statistics go with it: not worth counting down
        conn.execute("DELETE FROM chunks WHERE collection_id = %s", (collection.id,))
        conn.execute("DELETE FROM collections WHERE id = %s", (collection.id,))
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(collection.hnsw_index)))
    return True


def delete_documents_outside(conn: psycopg.Connection, name: str, root: str) -> int:
    """Delete the collection's documents whose source is not inside the folder ``root``."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM documents d USING collections c WHERE c.id = d.collection_id AND c.name = %s"
            " AND NOT starts_with(d.source, %s)",
            (name, root.rstrip("/") + "/"),
        )
    collection = get_collection(conn, name)
    if collection is not None:
        term_stats.compact(conn, collection.id)
    return cur.rowcount


def describe_collection(conn: psycopg.Connection, name: str, description: str) -> bool:
    """Set what a collection is about; False if there is no such collection."""
    with conn.transaction():
        cur = conn.execute("UPDATE collections SET description = %s WHERE name = %s", (description.strip()[:500], name))
    return cur.rowcount == 1


def get_chunks(conn: psycopg.Connection, chunk_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Chunks by id with their document's id, source and title, in the order asked (unknown ids left out)."""
    rows = conn.execute(
        "SELECT c.id, d.doc_id, d.source, coalesce(nullif(c.title, ''), d.title), c.heading, c.text,"
        " c.metadata->'page' FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(%s)",
        (list(chunk_ids),),
    ).fetchall()
    found = {
        r[0]: {"chunk_id": r[0], "doc_id": r[1], "source": r[2], "title": r[3], "heading": r[4], "text": r[5]}
        | ({"page": r[6]} if isinstance(r[6], int) else {})
        for r in rows
    }
    return [found[i] for i in chunk_ids if i in found]
