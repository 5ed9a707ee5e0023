"""Ingest files and folders into a collection: load, chunk, embed, store; idempotent and restartable.

Each batch of documents is written in one transaction together with its content hashes, so a run
killed at any point leaves whole documents or none, and the next run redoes only what is missing.
A document that cannot be loaded or that the database refuses is skipped with its reason (in the
report and in ``ingest_runs.skipped``); the other documents of the run are stored.
Embedding (the slow part) runs in the caller's thread while a writer thread stores the previous
batch, so the database work hides behind the model.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from tqdm import tqdm

from knowledge.bounds import DEFAULT_LIMITS, ParseLimits, clean_text
from knowledge.chunking import ChunkingConfig, chunk_document
from knowledge.db import Database
from knowledge.embeddings import Embedder
from knowledge.loaders import (
    ARCHIVE_SUFFIXES,
    JSONL_SUFFIXES,
    SUPPORTED_SUFFIXES,
    LoadedDocument,
    RecordProblem,
    SkipFile,
    load_file,
    load_jsonl,
    load_zip,
)
from knowledge.store import (
    Collection,
    DocumentWrite,
    delete_documents,
    documents_under,
    ensure_collection,
    ensure_vector_index,
    existing_documents,
    write_documents,
)

log = logging.getLogger(__name__)
ANALYZE_AFTER_CHUNKS = 1000


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class IngestReport:
    """What an ingest run did."""

    collection: str
    run_id: int | None = None
    files_seen: int = 0
    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_pruned: int = 0
    chunks_written: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents_written(self) -> int:
        return self.documents_added + self.documents_updated

    def skipped_by_reason(self) -> Counter[str]:
        return Counter(s.reason for s in self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "run_id": self.run_id,
            "files_seen": self.files_seen,
            "documents_added": self.documents_added,
            "documents_updated": self.documents_updated,
            "documents_unchanged": self.documents_unchanged,
            "documents_pruned": self.documents_pruned,
            "chunks_written": self.chunks_written,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def embedding_text(title: str, heading: str, text: str) -> str:
    """What the embedding model sees for a chunk: its title and heading give it context."""
    return "\n".join(part for part in (title, heading, text) if part)


def utf8_name(path: Path | str) -> bool:
    """Whether a path is text: a name that is not UTF-8 reaches Python as surrogate escapes, which
    neither PostgreSQL nor a terminal takes."""
    return not any("\udc80" <= c <= "\udcff" for c in str(path))


def shown_name(path: Path | str) -> str:
    """The path with the bytes that are not UTF-8 shown as U+FFFD, the replacement character."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def discover_files(paths: Sequence[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files under ``paths`` in a stable order; hidden entries and symlinked folders are not entered."""
    found: list[Path] = []
    problems: list[Skipped] = []
    for root in paths:
        root = root.expanduser()
        if not root.exists():
            problems.append(Skipped(str(root), "path does not exist"))
        elif root.is_file():
            found.append(root.absolute())
        elif root.is_dir():
            for folder, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = Path(folder, name)
                    if not utf8_name(path):
                        problems.append(Skipped(shown_name(path), "the name is not UTF-8"))
                    elif path.suffix.lower() in SUPPORTED_SUFFIXES:
                        found.append(path.absolute())
                    else:
                        problems.append(Skipped(str(path), f"unsupported file type {path.suffix or '(none)'}"))
        else:
            problems.append(Skipped(str(root), "not a regular file or folder"))
    unique = list(dict.fromkeys(found))
    return unique, problems


class Ingestor:
    """Turns files into stored, embedded chunks of one collection."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        chunking: ChunkingConfig,
        *,
        max_file_bytes: int = 50_000_000,
        batch_chunks: int = 256,
        progress: bool | None = None,
        parse_limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.chunking = chunking
        self.max_file_bytes = max_file_bytes
        self.parse_limits = parse_limits
        self.batch_chunks = batch_chunks
        self.progress = sys.stderr.isatty() if progress is None else progress

    def ingest(self, paths: Sequence[Path | str], collection: str, *, prune: bool = False) -> IngestReport:
        """Ingest files and folders; with ``prune``, drop documents under ``paths`` whose source is gone."""
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        report.skipped.extend(Skipped(shown_name(p), "the name is not UTF-8") for p in paths if not utf8_name(p))
        paths = [p for p in paths if utf8_name(p)]
        files, problems = discover_files([Path(p) for p in paths])
        report.skipped.extend(problems)
        with self.db.connection() as conn:
            target = ensure_collection(conn, collection, self.embedder.model_name, self.embedder.dimension)
            known = existing_documents(conn, target)
            report.run_id = conn.execute(
                "INSERT INTO ingest_runs (collection_id, paths) VALUES (%s, %s) RETURNING id",
                (target.id, [str(Path(p).expanduser().absolute()) for p in paths]),
            ).fetchone()[0]  # type: ignore[index]
            conn.commit()
        try:
            seen_by_source = self._run(files, target, known, report)
            if prune:
                report.documents_pruned = self._prune(target, paths, seen_by_source)
            with self.db.connection() as conn:
                built = ensure_vector_index(conn, target)
                if built or report.chunks_written >= ANALYZE_AFTER_CHUNKS:
                    # Fresh statistics now, not when autovacuum gets to it: right after a bulk load
                    # the planner's guesses made BM25 queries take seconds instead of milliseconds.
                    conn.execute("ANALYZE chunks, documents")
        except BaseException as exc:
            report.seconds = time.perf_counter() - started
            self._finish_run(report, "failed", f"{type(exc).__name__}: {exc}")
            raise
        report.seconds = time.perf_counter() - started
        self._finish_run(report, "done", None)
        return report

    # -- the pipeline ------------------------------------------------------------------------------

    def _documents(self, files: list[Path], report: IngestReport) -> Iterator[tuple[Path, LoadedDocument | None]]:
        """Loaded documents; ``(path, None)`` marks a file fully read (so its records may be pruned)."""
        bar = tqdm(files, desc="ingest", unit="file", disable=not self.progress, file=sys.stderr)
        for path in bar:
            report.files_seen += 1
            try:
                suffix = path.suffix.lower()
                if suffix in JSONL_SUFFIXES or suffix in ARCHIVE_SUFFIXES:
                    # Records and archive members: a bad one is reported, the others still ingested
                    items = (
                        load_jsonl(path, self.max_file_bytes, self.parse_limits)
                        if suffix in JSONL_SUFFIXES
                        else load_zip(path, self.max_file_bytes, parse=self.parse_limits)
                    )
                    for item in items:
                        if isinstance(item, RecordProblem):
                            report.skipped.append(Skipped(item.where, item.reason))
                        else:
                            yield path, item
                else:
                    yield path, load_file(path, self.max_file_bytes, self.parse_limits)
            except SkipFile as skip:
                report.skipped.append(Skipped(str(path), skip.reason))
                continue
            except Exception as exc:  # a loader bug must not end the run; say what happened
                log.exception("unexpected error loading %s", path)
                report.skipped.append(Skipped(str(path), f"could not load: {type(exc).__name__}: {exc}"))
                continue
            yield path, None
        bar.close()

    def _run(
        self,
        files: list[Path],
        target: Collection,
        known: dict[str, tuple[str, str]],
        report: IngestReport,
    ) -> dict[str, set[str]]:
        signature = self.chunking.signature()
        seen_by_source: dict[str, set[str]] = {}
        pending_for_source: dict[str, set[str]] = {}
        writer = _BatchWriter(self.db, target, report, known)
        batch: list[tuple[LoadedDocument, list, bool]] = []  # (document, chunks, new in the collection)
        batch_size = 0
        try:
            for path, document in self._documents(files, report):
                source = str(path)
                if document is None:
                    seen_by_source[source] = pending_for_source.pop(source, set())
                    continue
                pending_for_source.setdefault(source, set()).add(document.doc_id)
                previous = known.get(document.doc_id)
                if previous == (document.content_hash, signature):
                    report.documents_unchanged += 1
                    continue
                chunks = chunk_document(document, self.chunking)
                if not chunks:
                    report.skipped.append(Skipped(document.where, "no text after chunking"))
                    continue
                if previous is None:
                    report.documents_added += 1
                else:
                    report.documents_updated += 1
                known[document.doc_id] = (document.content_hash, signature)
                batch.append((document, chunks, previous is None))
                batch_size += len(chunks)
                if batch_size >= self.batch_chunks:
                    writer.put(self._embed(batch, signature))
                    batch, batch_size = [], 0
            if batch:
                writer.put(self._embed(batch, signature))
        finally:
            writer.close()
        return seen_by_source

    def _embed(self, batch: list[tuple[LoadedDocument, list, bool]], signature: str) -> _Batch:
        texts = [embedding_text(doc.title, chunk.heading, chunk.text) for doc, chunks, _ in batch for chunk in chunks]
        vectors = self.embedder.embed(texts)
        writes = _Batch()
        offset = 0
        for document, chunks, new in batch:
            writes.origin[document.doc_id] = (document.where, new)
            writes.append(
                DocumentWrite(
                    doc_id=document.doc_id,
                    source=document.source,
                    title=document.title,
                    metadata=document.metadata,
                    content_hash=document.content_hash,
                    chunking=signature,
                    chunks=chunks,
                    embeddings=vectors[offset : offset + len(chunks)],
                )
            )
            offset += len(chunks)
        return writes

    def _prune(self, target: Collection, paths: Sequence[Path | str], seen_by_source: dict[str, set[str]]) -> int:
        roots = [str(Path(p).expanduser().absolute()) for p in paths]
        with self.db.connection() as conn:
            gone = [
                doc_id
                for doc_id, source in documents_under(conn, target, roots)
                if not Path(source).exists() or (source in seen_by_source and doc_id not in seen_by_source[source])
            ]
            return delete_documents(conn, target, gone)

    def _finish_run(self, report: IngestReport, status: str, error: str | None) -> None:
        shown = report.skipped[:1000]
        try:
            with self.db.connection() as conn:
                conn.execute(
                    """
                    UPDATE ingest_runs SET status = %s, error = %s, finished_at = now(),
                        files_seen = %s, documents_added = %s, documents_updated = %s,
                        documents_unchanged = %s, documents_pruned = %s, chunks_written = %s, skipped = %s
                    WHERE id = %s
                    """,
                    (
                        status,
                        clean_text(error) if error else None,
                        report.files_seen,
                        report.documents_added,
                        report.documents_updated,
                        report.documents_unchanged,
                        report.documents_pruned,
                        report.chunks_written,
                        # clean_text: a path or a reason may quote input back, and jsonb holds no NUL
                        Jsonb([{"path": clean_text(s.path), "reason": clean_text(s.reason)} for s in shown]),
                        report.run_id,
                    ),
                )
        except Exception:  # recording the run must never hide the run's own outcome
            log.exception("could not record ingest run %s", report.run_id)


class _Batch(list[DocumentWrite]):
    """Embedded documents to store, with where each came from and whether it is new to the collection
    (what the report needs if the database refuses one)."""

    def __init__(self) -> None:
        super().__init__()
        self.origin: dict[str, tuple[str, bool]] = {}


class _BatchWriter:
    """Stores batches on a background thread; at most two batches wait, bounding memory.

    Documents the database refuses come back through ``_refused``; the caller's thread moves them into
    the report (at the next batch and at the end), so only one thread changes the report's counts.
    """

    def __init__(
        self, db: Database, target: Collection, report: IngestReport, known: dict[str, tuple[str, str]]
    ) -> None:
        self._db = db
        self._target = target
        self._report = report
        self._known = known
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._refused: queue.SimpleQueue[tuple[str, str, bool, str]] = queue.SimpleQueue()  # id, where, new, why
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="ladder-ingest-writer", daemon=True)
        self._thread.start()

    def put(self, batch: _Batch) -> None:
        self._raise_if_failed()
        self._take_refused()
        self._queue.put(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._take_refused()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _take_refused(self) -> None:
        while not self._refused.empty():
            doc_id, where, new, reason = self._refused.get()
            self._report.skipped.append(Skipped(where, reason))
            if new:
                self._report.documents_added -= 1
            else:
                self._report.documents_updated -= 1
            self._known.pop(doc_id, None)  # not stored: a later copy of it in this run is not "unchanged"

    def _loop(self) -> None:
        with self._db.connection() as conn:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                if self._error is not None:
                    continue  # drain, so the producer never blocks on a dead writer
                try:
                    result = write_documents(conn, self._target, batch, async_commit=True)
                except BaseException as exc:
                    self._error = exc
                    continue
                self._report.chunks_written += result.chunks
                for doc_id, reason in result.refused.items():
                    where, new = batch.origin.get(doc_id, (doc_id, False))
                    self._refused.put((doc_id, where, new, reason))
