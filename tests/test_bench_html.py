"""The HTML manual benchmark's parts: its questions, the pages it picks, its BM25 baseline, its "before" reading."""

from __future__ import annotations

import pytest

from evals.bench.html_manual import (
    MANUAL,
    before_html_sections,
    bm25_rankings,
    load_questions,
    manual_pages,
    pick_pages,
)


def test_the_questions_are_at_least_30_each_with_pages_that_the_manual_has() -> None:
    questions = load_questions()
    assert len(questions) >= 30 and len({q["id"] for q in questions}) == len(questions)
    assert all(q["question"].strip() and q["pages"] for q in questions)
    if not MANUAL.is_dir():
        pytest.skip("python3-doc is not installed")
    pages = set(manual_pages(MANUAL))
    assert len(pages) > 500 and not any(p.startswith("_") for p in pages)
    assert {p for q in questions for p in q["pages"]} <= pages


def test_a_subset_keeps_every_answering_page() -> None:
    questions = [{"id": "a", "question": "q", "pages": ["x.html"]}]
    pages = [f"p{i}.html" for i in range(50)] + ["x.html"]
    picked = pick_pages(pages, questions, 10)
    assert len(picked) == 10 and "x.html" in picked and picked == pick_pages(pages, questions, 10)
    assert pick_pages(pages, questions, None) == pages


def test_the_bm25_baseline_ranks_the_matching_page_first() -> None:
    texts = {"a.html": "sorting lists with a key function", "b.html": "zip archives and compression"}
    ranked = bm25_rankings(texts, [{"id": "q", "question": "compress files into a zip archive"}])
    assert ranked["q"][0] == "b.html"


def test_before_reads_html_as_main_did_every_string_on_its_own_line() -> None:
    title, sections = before_html_sections(b"<title>T</title><body><nav>Prev Next</nav><h1>H</h1><p>a <b>b</b> c</p>")
    assert title == "T" and sections[-1].heading == "H" and sections[-1].text == "a \nb\n c"  # as the issue saw it
    assert sections[0].text == "Prev Next"  # menus were kept
