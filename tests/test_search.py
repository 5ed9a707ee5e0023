"""Search modes against the real database, on both the embedded and the URL path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.search import (
    SearchConfig,
    Searcher,
    SearchError,
    SearchHit,
    SearchRequest,
    keyword_query_text,
    recency_factor,
    rrf_fuse,
    spread_documents,
)
from knowledge.store import CollectionError

FACTS = {
    "volcano": ("Volcanoes", "Magma rises through the crust and erupts as lava from a volcano."),
    "photosynthesis": ("Plants", "Leaves turn sunlight, water and carbon dioxide into sugar by photosynthesis."),
    "tides": ("Oceans", "The gravitational pull of the Moon causes the ocean tides to rise and fall."),
    "compiler": ("Programming", "A compiler translates source code into machine instructions before it runs."),
    "vaccine": ("Medicine", "A vaccine trains the immune system to recognise a pathogen without causing disease."),
    "zq-7731": ("Parts", "Part number ZQ-7731 is the replacement hinge for the cabinet door."),
}


@pytest.fixture
def facts(any_kb: KnowledgeBase, collection: str, tmp_path: Path) -> tuple[KnowledgeBase, str]:
    path = tmp_path / "facts.jsonl"
    lines = []
    for i, (doc_id, (title, text)) in enumerate(FACTS.items()):
        date = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=100 * i)).date().isoformat()
        lines.append(
            json.dumps({"id": doc_id, "title": title, "text": text, "metadata": {"topic": title, "date": date}})
        )
    path.write_text("\n".join(lines))
    any_kb.ingest([path], collection, progress=False)
    return any_kb, collection


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("How do tides work?", "tides"),
        ("what does a compiler do with source code", "compiler"),
        ("immune system training", "vaccine"),
    ],
)
def test_every_mode_finds_the_right_passage(facts, mode: str, query: str, expected: str) -> None:
    kb, collection = facts
    hits = kb.search(query, collection, k=3, mode=mode)
    assert hits, f"{mode} found nothing for {query!r}"
    assert hits[0].doc_id == expected
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_dense_finds_meaning_without_shared_words(facts) -> None:
    kb, collection = facts
    hits = kb.search("how do green plants make their food", collection, k=1, mode="dense")
    assert hits[0].doc_id == "photosynthesis"


def test_keyword_finds_exact_identifiers(facts) -> None:
    kb, collection = facts
    assert kb.search("ZQ-7731", collection, k=1, mode="keyword")[0].doc_id == "zq-7731"
    assert kb.search("ZQ-7731", collection, k=1, mode="hybrid")[0].doc_id == "zq-7731"


def test_keyword_needs_only_some_words_to_match(facts) -> None:
    kb, collection = facts
    hits = kb.search("lava xylophone quasar", collection, k=3, mode="keyword")
    assert [h.doc_id for h in hits] == ["volcano"]


@pytest.mark.parametrize(
    "query", ["it's", "a & b | !c", "'\\\\'", "foo:* <-> bar", '"unclosed', "-", "🙂", "DROP TABLE chunks;--"]
)
def test_hostile_query_text_is_just_text(facts, query: str) -> None:
    kb, collection = facts
    for mode in ("keyword", "hybrid"):
        kb.search(query, collection, k=3, mode=mode)  # no exception
    with kb.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0


def test_result_fields(facts) -> None:
    kb, collection = facts
    hit = kb.search("volcano lava", collection, k=1)[0].to_dict()
    assert set(hit) == {"doc_id", "chunk_id", "score", "text", "title", "metadata"}
    assert hit["doc_id"] == "volcano" and hit["title"] == "Volcanoes"
    assert hit["metadata"]["topic"] == "Volcanoes"


def test_metadata_filters(facts) -> None:
    kb, collection = facts
    for mode in ("dense", "keyword", "hybrid"):
        hits = kb.search("how does it work", collection, k=5, mode=mode, filters={"topic": "Medicine"})
        assert {h.doc_id for h in hits} <= {"vaccine"}
    hits = kb.search("vaccine immune", collection, k=5, filters={"topic": "Medicine"})
    assert [h.doc_id for h in hits] == ["vaccine"]


def test_recency_prefers_newer_documents(facts) -> None:
    kb, collection = facts
    plain = Searcher(kb.db, kb.embedder, SearchConfig())
    recent = Searcher(kb.db, kb.embedder, SearchConfig(recency_half_life_days=30))
    from knowledge.search import SearchRequest

    request = SearchRequest(query="science facts", collection=collection, k=6, mode="dense")
    without = plain.search(request)
    request.recency = True
    with_recency = recent.search(request)
    dates = [h.metadata["date"] for h in with_recency]
    assert dates == sorted(dates, reverse=True)
    assert [h.metadata["date"] for h in without] != dates
    with pytest.raises(SearchError, match="half-life"):
        plain.search(request)


def test_bad_requests_are_clear_errors(facts) -> None:
    kb, collection = facts
    with pytest.raises(SearchError, match="empty"):
        kb.search("   ", collection)
    with pytest.raises(SearchError, match="mode"):
        kb.search("x", collection, mode="fuzzy")
    with pytest.raises(SearchError, match="k must"):
        kb.search("x", collection, k=0)
    with pytest.raises(CollectionError, match="no collection named 'nope'"):
        kb.search("x", "nope")


def test_query_transforms_and_rerankers_plug_in(facts) -> None:
    kb, collection = facts
    seen: list[str] = []

    def hyde(question: str) -> str:
        seen.append(question)
        return "The gravitational pull of the Moon on the oceans"

    def reverse(question: str, hits):
        return list(reversed(hits))

    searcher = Searcher(kb.db, kb.embedder, query_transforms=[hyde])
    from knowledge.search import SearchRequest

    assert searcher.search(SearchRequest("unrelated words", collection, k=1, mode="dense"))[0].doc_id == "tides"
    assert seen == ["unrelated words"]
    reranked = Searcher(kb.db, kb.embedder, rerankers=[reverse]).search(
        SearchRequest("tides moon ocean", collection, k=6, mode="hybrid")
    )
    assert reranked[-1].doc_id == "tides"


def test_hybrid_uses_both_rankings(facts) -> None:
    kb, collection = facts
    hit = kb.search("ocean tides moon", collection, k=1, mode="hybrid")[0]
    assert hit.ranks == {"dense": 1, "keyword": 1}


def test_rrf_fuse() -> None:
    fused = rrf_fuse({"a": [1, 2, 3], "b": [3, 1]}, {"a": 1.0, "b": 1.0}, k=10)
    assert [cid for cid, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 11 + 1 / 12)
    weighted = rrf_fuse({"a": [1], "b": [2]}, {"a": 1.0, "b": 2.0}, k=10)
    assert [cid for cid, _ in weighted] == [2, 1]


def test_keyword_query_text_only_passes_words() -> None:
    assert keyword_query_text('"exact phrase" -not OR this') == "exact or phrase or not or this"
    assert keyword_query_text("!!!") == ""


def test_recency_factor() -> None:
    now = datetime(2025, 1, 31, tzinfo=UTC)
    assert recency_factor("2025-01-01", 30, now) == pytest.approx(0.5)
    assert recency_factor("not a date", 30, now) == 1.0
    assert recency_factor(None, 30, now) == 1.0
    assert recency_factor("2030-01-01T00:00:00Z", 30, now) == 1.0


def test_bm25_prefers_rare_terms(any_kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    path = tmp_path / "idf.jsonl"
    docs = [{"id": f"common-{i}", "text": f"report report report number {i}"} for i in range(8)]
    docs.append({"id": "rare", "text": "report mentioning the aardvark once"})
    write_jsonl(path, docs)
    any_kb.ingest([path], collection, progress=False)
    hits = any_kb.search("report aardvark", collection, k=3, mode="keyword")
    assert hits[0].doc_id == "rare"


def test_mmr_prefers_diverse_passages() -> None:
    import numpy as np

    from knowledge.rerank import mmr_order

    query = np.array([1.0, 0.0, 0.0])
    near_duplicate_a = np.array([0.9, 0.1, 0.0])
    near_duplicate_b = np.array([0.89, 0.12, 0.0])
    different = np.array([0.6, 0.0, 0.8])
    vectors = np.stack([v / np.linalg.norm(v) for v in (near_duplicate_a, near_duplicate_b, different)])
    assert mmr_order(query, vectors, lambda_=1.0) == [0, 1, 2]  # pure relevance
    assert mmr_order(query, vectors, lambda_=0.5) == [0, 2, 1]  # the near-duplicate waits
    assert mmr_order(query, np.zeros((0, 3))) == []


def test_mmr_reranker_in_the_pipeline(facts) -> None:
    from knowledge.rerank import MMRReranker
    from knowledge.search import SearchRequest

    kb, collection = facts
    searcher = Searcher(kb.db, kb.embedder, rerankers=[MMRReranker(kb.db, kb.embedder, 0.7)])
    hits = searcher.search(SearchRequest("ocean tides and the moon", collection, k=4))
    assert hits[0].doc_id == "tides" and len({h.chunk_id for h in hits}) == 4


def test_cross_encoder_reranker_orders_by_its_scores(facts, cross_encoder_dir: str) -> None:
    from knowledge.rerank import load_cross_encoder
    from knowledge.search import SearchRequest

    kb, collection = facts
    reranker = load_cross_encoder(cross_encoder_dir)
    assert load_cross_encoder(cross_encoder_dir) is reranker  # loaded once
    hits = Searcher(kb.db, kb.embedder, rerankers=[reranker]).search(SearchRequest("tides", collection, k=6))
    expected = reranker.scores("tides", [h.text for h in hits])
    assert [h.score for h in hits] == sorted(expected, reverse=True)


def test_a_missing_cross_encoder_is_a_clear_error(tmp_path: Path) -> None:
    from knowledge.rerank import CrossEncoderReranker

    with pytest.raises(SearchError, match="cannot load the cross-encoder"):
        CrossEncoderReranker(str(tmp_path / "nothing-here"))


def test_one_document_cannot_crowd_the_top_results_while_others_match(
    any_kb: KnowledgeBase, collection: str, tmp_path: Path
) -> None:
    # one long page whose every section says "refund", and two pages that say it once
    long_page = tmp_path / "policy.md"
    long_page.write_text("\n\n".join(f"# Part {i}\n\nThe refund rule number {i} of the policy." for i in range(6)))
    (tmp_path / "faq.md").write_text("# FAQ\n\nA refund takes two weeks.")
    (tmp_path / "shop.md").write_text("# Shop\n\nAsk the shop for a refund.")
    any_kb.ingest([tmp_path], collection, progress=False)

    def pages(per_document: int, k: int) -> list[str]:
        searcher = Searcher(any_kb.db, any_kb.embedder, SearchConfig(per_document=per_document))
        hits = searcher.search(SearchRequest(query="refund policy rule", collection=collection, k=k, mode="keyword"))
        return [Path(hit.doc_id).name for hit in hits]

    assert pages(0, 4) == ["policy.md"] * 4  # without the cap the one page takes the top four
    capped = pages(2, 4)
    assert capped[:2] == ["policy.md"] * 2 and sorted(capped[2:]) == ["faq.md", "shop.md"]
    assert pages(2, 8) == capped + ["policy.md"] * 4  # nothing is dropped: its other passages follow


def test_spread_documents_keeps_order_within_each_part() -> None:
    hits = [SearchHit(chunk_id=i, score=1.0, doc_id=doc) for i, doc in enumerate("aaabab")]
    assert [h.chunk_id for h in spread_documents(hits, 1)] == [0, 3, 1, 2, 4, 5]
    assert [h.chunk_id for h in spread_documents(hits, 0)] == [0, 1, 2, 3, 4, 5]
