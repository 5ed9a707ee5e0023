"""Token-aware chunking."""

from __future__ import annotations

import itertools

import pytest

from knowledge.chunking import ChunkingConfig, chunk_document, chunk_text
from knowledge.loaders import LoadedDocument, Section
from knowledge.tokens import count_tokens

PARAGRAPHS = "\n\n".join(
    f"Paragraph {i} talks about topic {i} in several plain words so that it has some length to it." for i in range(40)
)


def test_chunks_fit_the_budget_and_cover_the_text() -> None:
    config = ChunkingConfig(chunk_tokens=60, overlap=0)
    pieces = chunk_text(PARAGRAPHS, config)
    assert len(pieces) > 5
    assert all(count_tokens(p) <= 60 for p in pieces)
    joined = " ".join(pieces)
    for i in range(40):
        assert f"Paragraph {i} talks" in joined


def test_chunks_prefer_paragraph_boundaries() -> None:
    config = ChunkingConfig(chunk_tokens=60, overlap=0)
    pieces = chunk_text(PARAGRAPHS, config)
    # Each paragraph is ~22 tokens: a boundary inside a paragraph would leave a piece not ending in '.'.
    assert all(p.endswith(".") for p in pieces)


def test_overlap_repeats_text_between_neighbours() -> None:
    without = chunk_text(PARAGRAPHS, ChunkingConfig(chunk_tokens=60, overlap=0))
    with_overlap = chunk_text(PARAGRAPHS, ChunkingConfig(chunk_tokens=60, overlap=20))
    assert len(with_overlap) > len(without)
    shared = sum(1 for a, b in itertools.pairwise(with_overlap) if set(a.split()) & set(b.split()))
    assert shared == len(with_overlap) - 1


def test_sections_never_share_a_chunk() -> None:
    doc = LoadedDocument(
        doc_id="d",
        source="d",
        title="T",
        sections=[Section("Short one.", heading="A"), Section("Short two.", heading="B", metadata={"page": 2})],
        content_hash="h",
    )
    chunks = chunk_document(doc, ChunkingConfig(chunk_tokens=200, overlap=0))
    assert [(c.heading, c.text) for c in chunks] == [("A", "Short one."), ("B", "Short two.")]
    assert chunks[1].metadata == {"page": 2}
    assert [c.ordinal for c in chunks] == [0, 1]
    assert all(c.n_tokens == count_tokens(c.text) for c in chunks)


def test_signature_tracks_every_parameter() -> None:
    base = ChunkingConfig(chunk_tokens=100, overlap=10)
    assert base.signature() != ChunkingConfig(chunk_tokens=120, overlap=10).signature()
    assert base.signature() != ChunkingConfig(chunk_tokens=100, overlap=0).signature()


@pytest.mark.parametrize(("tokens", "overlap"), [(8, 0), (100, 100), (100, -1)])
def test_bad_chunking_settings_are_refused(tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        ChunkingConfig(chunk_tokens=tokens, overlap=overlap)
