"""BM25's statistics kept at write time: exact through ingest, replace, delete and concurrent writers;
and the pruned keyword search returns exactly what scoring every matching chunk returns."""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections import Counter

import numpy as np
import pytest

from knowledge import term_stats
from knowledge.bm25 import BM25Params, bm25_search
from knowledge.chunking import Chunk
from knowledge.db import Database
from knowledge.store import (
    Collection,
    DocumentWrite,
    delete_documents,
    drop_collection,
    ensure_collection,
    write_documents,
)

WORDS = [f"w{i:03d}" for i in range(400)]  # lexemes that no stemmer changes and no stop list drops
DIM = 4


def _text(rng: random.Random, n: int) -> str:
    # Zipf-like: a few words in most chunks, most words rare, as in real text.
    return " ".join(WORDS[min(int(rng.paretovariate(1.0)) - 1, len(WORDS) - 1)] for _ in range(n))


def _heading(i: int) -> str:
    return f"w00{i % 3} setup" if i % 2 else ""


def _doc(doc_id: str, texts: list[str], title: str = "") -> DocumentWrite:
    chunks = [Chunk(ordinal=i, text=t, heading=_heading(i), n_tokens=len(t.split()) + 2) for i, t in enumerate(texts)]
    vectors = np.ones((len(texts), DIM), dtype=np.float32)
    return DocumentWrite(
        doc_id=doc_id,
        source=f"/src/{doc_id}",
        title=title,
        metadata={},
        content_hash=uuid.uuid4().hex,
        chunking="test",
        chunks=chunks,
        embeddings=vectors,
    )


@pytest.fixture
def target(embedded_db: Database):
    name = f"stats-{uuid.uuid4().hex[:8]}"
    with embedded_db.connection() as conn:
        collection = ensure_collection(conn, name, "test-model", DIM)
        conn.commit()
    yield embedded_db, collection
    with embedded_db.connection() as conn:
        drop_collection(conn, name)


def _exact(db: Database, collection: Collection) -> dict[str, tuple[int, int]]:
    with db.connection() as conn:
        return term_stats.check(conn, collection.id).differences


def test_statistics_stay_exact_through_ingest_replace_and_delete(target) -> None:
    db, collection = target
    rng = random.Random(3)
    with db.connection() as conn:
        docs = [_doc(f"d{i}", [_text(rng, 30) for _ in range(3)], title=f"w00{i} guide") for i in range(12)]
        write_documents(conn, collection, docs)
        assert _exact(db, collection) == {}
        totals = term_stats.read(conn, collection.id, ["w000", "nothing-here"])
        assert totals.chunks == 36 and "nothing-here" not in totals.df
        assert (
            totals.df["w000"]
            == conn.execute(
                "SELECT count(*) FROM chunks WHERE collection_id = %s AND tsv @@ 'w000'::tsquery", (collection.id,)
            ).fetchone()[0]
        )

        write_documents(conn, collection, [_doc("d3", [_text(rng, 5)]), _doc("d20", [_text(rng, 50)])])  # replace, add
        assert delete_documents(conn, collection, ["d0", "d1"]) == 2
        conn.execute("DELETE FROM chunks WHERE document_id IN (SELECT id FROM documents WHERE doc_id = 'd5')")
        conn.commit()  # a hand-written statement is counted too
        assert _exact(db, collection) == {}
        # d3 replaced by one chunk, d20 added, d0 d1 d5 gone
        assert term_stats.read(conn, collection.id, []).chunks == 36 - 3 + 1 + 1 - 6 - 3
        pending = "SELECT count(*) FROM term_stat_deltas WHERE collection_id = %s"
        assert conn.execute(pending, (collection.id,)).fetchone()[0] > 0, "the hand-written delete is not compacted yet"
        assert term_stats.compact(conn, collection.id)
        assert conn.execute(pending, (collection.id,)).fetchone()[0] == 0
        assert _exact(db, collection) == {}


def test_a_statistic_in_doubt_is_found_and_rebuilt(target) -> None:
    db, collection = target
    rng = random.Random(4)
    with db.connection() as conn:
        write_documents(conn, collection, [_doc(f"d{i}", [_text(rng, 20)]) for i in range(5)])
        conn.execute("UPDATE term_stats SET df = df + 5 WHERE collection_id = %s AND lexeme = 'w000'", (collection.id,))
        conn.commit()
        found = term_stats.check(conn, collection.id).differences
        assert list(found) == ["w000"] and found["w000"][0] == found["w000"][1] + 5
        assert term_stats.rebuild(conn, collection.id) > 0
        assert term_stats.check(conn, collection.id).differences == {}


def test_concurrent_writers_into_one_collection_keep_them_exact(target) -> None:
    db, collection = target
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for round_ in range(6):
                with db.connection() as conn:
                    # The same doc ids from every writer: replacements of one another's documents race too.
                    ids = rng.sample(range(10), 4)
                    write_documents(conn, collection, [_doc(f"d{i}", [_text(rng, 25)] * (1 + round_ % 3)) for i in ids])
                    if round_ % 2:
                        delete_documents(conn, collection, [f"d{rng.randrange(10)}"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert _exact(db, collection) == {}


def _reference_bm25(conn, collection: Collection, query_lexemes: list[str], params: BM25Params, k: int):
    """BM25 from the chunks' tsvectors in Python, every chunk scored: what the pruned search must return."""
    rows = conn.execute(
        "SELECT c.id, c.n_tokens, u.lexeme, u.weights FROM chunks c, unnest(c.tsv) u WHERE c.collection_id = %s",
        (collection.id,),
    ).fetchall()
    lengths = {cid: n for cid, n, _, _ in rows}
    n, avgdl = len(lengths), sum(lengths.values()) / len(lengths)
    df = Counter(lexeme for _, _, lexeme, _ in rows)
    extra = {"A": 1 + params.title_weight, "B": 1 + params.heading_weight}
    qtf = Counter(query_lexemes)
    scores: Counter[int] = Counter()
    for cid, dl, lexeme, weights in rows:
        if lexeme in qtf:
            tf = sum(extra.get(w, 1.0) for w in weights)
            idf = math.log(1 + (n - df[lexeme] + 0.5) / (df[lexeme] + 0.5))
            norm = params.k1 * (1 - params.b + params.b * dl / avgdl)
            scores[cid] += idf * qtf[lexeme] * tf * (params.k1 + 1) / (tf + norm)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def test_pruned_bm25_returns_exactly_what_scoring_every_chunk_returns(target) -> None:
    db, collection = target
    rng = random.Random(5)
    docs = [_doc(f"d{i}", [_text(rng, rng.randint(5, 60)) for _ in range(4)], title=_text(rng, 2)) for i in range(60)]
    params = BM25Params()
    pruned = 0
    with db.connection() as conn:
        write_documents(conn, collection, docs)
        for size in (1, 2, 3, 5, 8, 13, 30):
            for _ in range(4):
                words = [_text(rng, 1) for _ in range(size)]
                got = bm25_search(conn, collection.id, " ".join(words), 10, params)
                want = _reference_bm25(conn, collection, words, params, 10)
                assert [cid for cid, _ in got.hits] == [cid for cid, _ in want]
                assert np.allclose([s for _, s in got.hits], [s for _, s in want], rtol=1e-9)
                pruned += got.candidate_terms < got.terms
        assert bm25_search(conn, collection.id, "zzz-not-there", 10, params).hits == []
    assert pruned > 0, "no query was pruned: the bound never engaged"


def test_a_budget_bounds_the_chunks_scored_and_says_the_result_is_not_proven(target) -> None:
    db, collection = target
    rng = random.Random(6)
    docs = [_doc(f"d{i}", [_text(rng, 40) for _ in range(5)]) for i in range(80)]
    params = BM25Params()
    query = " ".join(WORDS[:12])  # the commonest words: proving the top 10 exact needs most chunks
    with db.connection() as conn:
        write_documents(conn, collection, docs)
        exact = bm25_search(conn, collection.id, query, 10, params)
        cheap = bm25_search(conn, collection.id, query, 10, params, budget=60)
        roomy = bm25_search(conn, collection.id, query, 10, params, budget=10**6)
        everything = _reference_bm25(conn, collection, query.split(), params, 400)
    assert exact.exact and roomy.exact and roomy.hits == exact.hits
    assert not cheap.exact and len(cheap.hits) == 10
    true_score = dict(everything)
    # What the budget returns is scored exactly (with every term), best first, just not proven the best.
    assert all(math.isclose(score, true_score[cid], rel_tol=1e-9) for cid, score in cheap.hits)
    assert [s for _, s in cheap.hits] == sorted((s for _, s in cheap.hits), reverse=True)
