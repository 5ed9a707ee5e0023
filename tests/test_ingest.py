"""Ingestion against the real database: edge cases, idempotence, replacement, pruning, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase
from knowledge.embeddings import EmbeddingConfig, LocalEmbedder
from knowledge.store import CollectionError, ensure_collection
from tests.conftest import reachable_tmpdir
from tests.helpers import make_pdf


def chunk_rows(kb: KnowledgeBase, collection: str) -> list[tuple]:
    with kb.db.connection() as conn:
        return conn.execute(
            "SELECT d.doc_id, c.ordinal, c.id, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
            " JOIN collections k ON k.id = d.collection_id WHERE k.name = %s ORDER BY 1, 2",
            (collection,),
        ).fetchall()


def make_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(
        "# Guide\n\nLadder answers questions.\n\n## Setup\n\nSet DATABASE_URL to your server."
    )
    (folder / "notes.txt").write_text("Plain notes about the zebra migration in the savanna.")
    (folder / "page.html").write_text("<html><title>Page</title><body><h1>Refunds</h1><p>Refunds take 14 days.</p>")
    (folder / "report.pdf").write_bytes(make_pdf("Quarterly revenue grew by forty percent."))
    (folder / "records.jsonl").write_text(
        "\n".join(json.dumps({"id": f"rec-{i}", "text": f"Record number {i} about topic {i}."}) for i in range(3))
        + "\n{broken json\n"
    )
    (folder / "empty.md").write_text("")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02")
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / ".hidden.md").write_text("# hidden")
    sub = folder / "sub"
    sub.mkdir(exist_ok=True)
    (sub / "deep.md").write_text("Deeply nested document about octopus cognition.")
    return folder


def test_mixed_folder_is_ingested_and_bad_files_reported(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    report = kb.ingest([corpus], collection, progress=False)
    assert report.documents_added == 8  # guide, notes, page, pdf, 3 records, deep
    assert report.chunks_written >= 8
    reasons = {Path(s.path).name.split(":")[0]: s.reason for s in report.skipped}
    assert set(reasons) == {"empty.md", "binary.txt", "image.png", "records.jsonl"}
    assert "invalid JSON" in reasons["records.jsonl"]
    docs = {row[0] for row in chunk_rows(kb, collection)}
    assert {"rec-0", "rec-1", "rec-2"} <= docs
    assert not any(".hidden" in d for d in docs)
    with kb.db.connection() as conn:
        run = conn.execute(
            "SELECT status, documents_added, chunks_written, jsonb_array_length(skipped)"
            " FROM ingest_runs WHERE id = %s",
            (report.run_id,),
        ).fetchone()
    assert run == ("done", 8, report.chunks_written, 4)


def test_reingesting_unchanged_files_does_no_work(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    kb.ingest([corpus], collection, progress=False)
    before = chunk_rows(kb, collection)
    again = kb.ingest([corpus], collection, progress=False)
    assert again.documents_written == 0 and again.chunks_written == 0
    assert again.documents_unchanged == 8
    assert chunk_rows(kb, collection) == before  # same chunk ids: nothing rewritten


def test_changed_file_replaces_its_chunks(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    kb.ingest([corpus], collection, progress=False)
    (corpus / "notes.txt").write_text("Updated notes: the giraffe herd moved north.")
    report = kb.ingest([corpus], collection, progress=False)
    assert report.documents_updated == 1 and report.documents_unchanged == 7
    texts = [row[3] for row in chunk_rows(kb, collection) if row[0].endswith("notes.txt")]
    assert texts == ["Updated notes: the giraffe herd moved north."]


def test_new_chunk_settings_rechunk_everything(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    from knowledge.chunking import ChunkingConfig

    corpus = make_corpus(tmp_path / "corpus")
    kb.ingest([corpus], collection, progress=False)
    report = kb.ingest([corpus], collection, chunking=ChunkingConfig(chunk_tokens=32, overlap=0), progress=False)
    assert report.documents_updated == 8


def test_prune_removes_documents_whose_files_are_gone(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    kb.ingest([corpus], collection, progress=False)
    (corpus / "notes.txt").unlink()
    (corpus / "records.jsonl").write_text(json.dumps({"id": "rec-0", "text": "Record number 0 about topic 0."}))
    kept = kb.ingest([corpus], collection, progress=False)  # without --prune nothing is removed
    assert kept.documents_pruned == 0
    report = kb.ingest([corpus], collection, prune=True, progress=False)
    assert report.documents_pruned == 3  # notes.txt, rec-1, rec-2
    docs = {row[0] for row in chunk_rows(kb, collection)}
    assert "rec-0" in docs and "rec-1" not in docs and not any(d.endswith("notes.txt") for d in docs)


def test_a_skipped_file_is_not_pruned(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    kb.ingest([corpus], collection, progress=False)
    (corpus / "notes.txt").write_bytes(b"\xff\xfe broken now")
    report = kb.ingest([corpus], collection, prune=True, progress=False)
    assert report.documents_pruned == 0
    assert any(row[0].endswith("notes.txt") for row in chunk_rows(kb, collection))


def test_missing_paths_are_reported(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    report = kb.ingest([tmp_path / "nope"], collection, progress=False)
    assert report.documents_added == 0
    assert report.skipped[0].reason == "path does not exist"


def test_duplicate_ids_in_one_file_keep_the_last(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps({"id": "x", "text": "first"}) + "\n" + json.dumps({"id": "x", "text": "second"}))
    kb.ingest([path], collection, progress=False)
    assert [row[3] for row in chunk_rows(kb, collection)] == ["second"]


def test_another_embedding_model_is_refused(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    kb.ingest([make_corpus(tmp_path / "c")], collection, progress=False)
    with kb.db.connection() as conn, pytest.raises(CollectionError, match="was built with all-MiniLM-L6-v2"):
        ensure_collection(conn, collection, "text-embedding-3-small", 1536)
    with pytest.raises(CollectionError, match="embedding model in use"):
        kb.searcher.embedder = _FakeDimension(kb.embedder)
        kb.search("anything", collection)


class _FakeDimension:
    """Same vectors, another name: what a misconfigured second model looks like to the store."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner, self.model_name, self.dimension = inner, "other-model", inner.dimension

    def embed(self, texts: list[str]):
        return self.inner.embed(texts)


def test_bf16_embeddings_match_fp32(embedder) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by forty percent.", "Refunds take 14 days."]
    fp32 = LocalEmbedder(EmbeddingConfig(bf16="off", runtime="torch")).embed(texts)
    bf16 = LocalEmbedder(EmbeddingConfig(bf16="on", runtime="torch")).embed(texts)
    cosines = (fp32 * bf16).sum(axis=1)
    assert cosines.min() > 0.999


@pytest.mark.slow
def test_killed_ingest_leaves_exactly_one_copy_after_rerun(embedded_db, tmp_path: Path) -> None:
    """kill -9 in the middle of an ingest, run it again: every chunk exactly once."""
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(300):
        (corpus / f"doc{i:03d}.md").write_text(
            f"# Document {i}\n\n" + " ".join(f"Sentence {j} of document {i} about item {i * j}." for j in range(60))
        )
    data_dir = embedded_db.embedded.root
    env = {**os.environ, "LADDER_DATA_DIR": str(data_dir), "LADDER_CHUNK_TOKENS": "64", "LADDER_CHUNK_OVERLAP": "0"}
    command = [sys.executable, "-m", "agent.cli", "ingest", str(corpus), "-c", "crash", "--no-progress"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            with embedded_db.connection() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id"
                    " WHERE c.name = 'crash'"
                ).fetchone()
            if row[0] >= 20 or proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    with embedded_db.connection() as conn:
        partial = conn.execute(
            "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id WHERE c.name = 'crash'"
        ).fetchone()[0]
    assert 0 < partial < 300
    rerun = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["documents_unchanged"] >= partial  # committed work is kept, not redone
    with embedded_db.connection() as conn:
        docs, mismatched, dupes = conn.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE d.n_chunks <> (SELECT count(*) FROM chunks c WHERE c.document_id = d.id)),
                   (SELECT count(*) FROM (SELECT 1 FROM chunks c2 JOIN documents d2 ON d2.id = c2.document_id
                      WHERE d2.collection_id = k.id GROUP BY d2.doc_id, c2.ordinal HAVING count(*) > 1) x)
            FROM documents d JOIN collections k ON k.id = d.collection_id WHERE k.name = 'crash' GROUP BY k.id
            """
        ).fetchone()
    assert (docs, mismatched, dupes) == (300, 0, 0)


def test_concurrent_ingests_of_the_same_files_leave_one_copy(embedded_db, embedder, tmp_path: Path) -> None:
    import threading

    from knowledge.chunking import ChunkingConfig

    corpus = make_corpus(tmp_path / "corpus")
    kbs = [KnowledgeBase(embedded_db, embedder, chunking=ChunkingConfig(chunk_tokens=64, overlap=8)) for _ in range(2)]
    errors: list[BaseException] = []

    def run(kb: KnowledgeBase) -> None:
        try:
            kb.ingest([corpus], "concurrent", progress=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(kb,)) for kb in kbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    rows = chunk_rows(kbs[0], "concurrent")
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys)) and len({r[0] for r in rows}) == 8
    assert vector_index_valid(kbs[0], "concurrent")


def vector_index_valid(kb: KnowledgeBase, collection: str) -> bool | None:
    with kb.db.connection() as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM collections k JOIN pg_class c ON c.relname = 'chunks_hnsw_c' || k.id"
            " JOIN pg_index i ON i.indexrelid = c.oid WHERE k.name = %s",
            (collection,),
        ).fetchone()
    return row[0] if row else None


def test_the_vector_index_is_built_after_loading_and_used(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    kb.ingest([make_corpus(tmp_path / "corpus")], collection, progress=False)
    assert vector_index_valid(kb, collection) is True
    with kb.db.connection() as conn:
        # A tiny table is cheaper to sort; with sorting off only a usable HNSW index can give the order.
        conn.execute("SET LOCAL enable_sort = off")
        cid = conn.execute("SELECT id FROM collections WHERE name = %s", (collection,)).fetchone()[0]
        plan = " ".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT id FROM chunks WHERE collection_id = {cid}"
                f" ORDER BY embedding::vector(384) <=> %s::vector(384) LIMIT 5",
                (kb.embedder.embed(["x"])[0],),
            )
        )
    assert f"chunks_hnsw_c{cid}" in plan


def test_data_dir_helper_is_reachable() -> None:
    assert reachable_tmpdir("ladder-x-").stat().st_mode & 0o001
