"""``ladder bench html``: Ladder's hybrid search over a real HTML manual against page-level BM25 (bm25s).

The manual is the Python 3.11 documentation that Debian's ``python3-doc`` installs; the questions
(evals/bench/data/pydoc_questions.jsonl) are written as a user asks them, each with the pages that
answer it. Everything runs in its own data folder (an embedded PostgreSQL of its own), and every figure
is printed beside its baseline from the same run:

- document level: MRR@10 and recall@5 of the pages Ladder's passages come from (best passage first)
  against bm25s over whole pages (the same cleaned text), the ratio printed;
- "before": the same, with the HTML read as main read it before (every string on its own line, menus
  kept), so the gain of knowledge/html_text.py shows;
- passage level (what the draft step is given): how many of the top 5 passages' pages answer, and how
  many pages they come from, with and without the per-document cap.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

from rich.console import Console
from rich.table import Table

from agent.core.assemble import open_knowledge_base
from agent.core.config import Settings
from evals.metrics import retrieval_scores
from knowledge.base import KnowledgeBase
from knowledge.loaders import LoadedDocument, Section, load_file
from knowledge.search import Searcher, SearchRequest

console = Console()
MANUAL = Path("/usr/share/doc/python3.11/html")
QUESTIONS = Path(__file__).parent / "data" / "pydoc_questions.jsonl"
DEPTH = 50  # passages fetched per question before collapsing to pages
METRICS = ("mrr@10", "recall@5")
GOAL = 1.10  # MRR@10 against BM25's


def manual_pages(root: Path) -> list[str]:
    """The manual's pages, relative to ``root`` (Sphinx's _static, _sources ... folders hold no pages)."""
    found = [p.relative_to(root).as_posix() for p in root.rglob("*.html") if p.is_file()]
    return sorted(page for page in found if not page.startswith("_"))


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    """The questions, each ``{"id", "question", "pages"}``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick_pages(pages: list[str], questions: list[dict[str, Any]], limit: int | None, seed: int = 7) -> list[str]:
    """All pages, or the pages that answer a question plus others drawn at random up to ``limit``."""
    if limit is None or limit >= len(pages):
        return pages
    wanted = {page for q in questions for page in q["pages"]}
    others = [page for page in pages if page not in wanted]
    random.Random(seed).shuffle(others)
    return sorted(wanted | set(others[: max(0, limit - len(wanted))]))


def before_html_sections(data: bytes, *_: Any, **__: Any) -> tuple[str, list[Section]]:
    """How main read HTML before this change, for the "before" figures: every visible string on its own
    line, the whole body (menus and footers too), split at h1-h6. Not for product use."""
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(data, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    dropped = {"script", "style", "noscript", "template", "svg"}
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []

    def add() -> None:
        text = re.sub(r"\n\s*\n\s*", "\n\n", re.sub(r"[ \t\r\f\v]+", " ", "\n".join(lines))).strip()
        if text:
            sections.append(Section(text=text, heading=" > ".join(t for _, t in path)))
        lines.clear()

    stack = [iter((soup.body or soup).contents)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif isinstance(child, Tag) and child.name not in dropped and child is not title_tag:
            if re.fullmatch(r"h[1-6]", child.name):
                add()
                level = int(child.name[1])
                path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, child.get_text(" ", strip=True))]
            else:
                stack.append(iter(child.contents))
        elif type(child) is NavigableString:
            lines.append(str(child))
    add()
    return title, sections


@contextmanager
def _reading(before: bool) -> Iterator[None]:
    if not before:
        yield
        return
    with mock.patch("knowledge.loaders.html_sections", before_html_sections):
        yield


def _page_text(document: LoadedDocument) -> str:
    return "\n".join([document.title] + [f"{s.heading}\n{s.text}" for s in document.sections])


def bm25_rankings(texts: dict[str, str], questions: list[dict[str, Any]], depth: int = 10) -> dict[str, list[str]]:
    """Page-level BM25 (bm25s, English stopwords, Snowball stemmer) over ``texts`` (page -> its text)."""
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    stemmer = Stemmer.Stemmer("english")
    ids = list(texts)

    def tokens(items: list[str]) -> Any:
        return bm25s.tokenize(items, stopwords="en", stemmer=stemmer, show_progress=False)

    retriever = bm25s.BM25()
    retriever.index(tokens([texts[i] for i in ids]), show_progress=False)
    asked = tokens([q["question"] for q in questions])
    results, _ = retriever.retrieve(asked, k=min(depth, len(ids)), show_progress=False)
    return {q["id"]: [ids[i] for i in row] for q, row in zip(questions, results, strict=True)}


def _ingest(kb: KnowledgeBase, folder: Path, collection: str, before: bool) -> dict[str, Any]:
    with _reading(before):
        report = kb.ingest([folder], collection, progress=False)
    return {"chunks": report.chunks_written, "seconds": round(report.seconds, 1), "skipped": len(report.skipped)}


def _ladder_runs(
    kb: KnowledgeBase, collection: str, folder: Path, questions: list[dict[str, Any]], per_document: int
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(page ranking from the top DEPTH passages, pages of the top 5 passages) for each question."""
    searcher = Searcher(kb.db, kb.embedder, replace(kb.searcher.config, per_document=per_document))
    pages, top5 = {}, {}
    for q in questions:
        hits = searcher.search(SearchRequest(query=q["question"], collection=collection, k=DEPTH, mode="hybrid"))
        names = [Path(hit.doc_id).relative_to(folder).as_posix() for hit in hits]
        pages[q["id"]] = list(dict.fromkeys(names))[:10]
        top5[q["id"]] = names[:5]
    return pages, top5


def _passage_figures(top5: dict[str, list[str]], questions: list[dict[str, Any]]) -> dict[str, float]:
    hit = [any(name in q["pages"] for name in top5[q["id"]]) for q in questions]
    distinct = [len(set(top5[q["id"]])) for q in questions]
    return {"answer_in_top5_passages": sum(hit) / len(hit), "pages_in_top5_passages": sum(distinct) / len(distinct)}


def run_html_benchmark(
    settings: Settings, *, limit: int | None = None, before: bool = True, out_file: Path | None = None,
    manual: Path = MANUAL, data_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Ingest the manual (``limit`` pages, all by default) into its own data folder and print the figures."""
    if not manual.is_dir():
        raise FileNotFoundError(f"{manual} is missing: install Debian's python3-doc (scripts/install --test does)")
    questions = load_questions()
    pages = pick_pages(manual_pages(manual), questions, limit)
    qrels = {q["id"]: dict.fromkeys(q["pages"], 1) for q in questions}
    figures: dict[str, Any] = {"pages": len(pages), "questions": len(questions)}
    with tempfile.TemporaryDirectory(prefix="ladder-bench-html-") as tmp:
        Path(tmp).chmod(0o711)  # run as root, the database runs as its own system user, who must enter it
        folder = Path(tmp, "manual")
        for page in pages:
            (folder / page).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(manual / page, folder / page)
        own = settings.model_copy(update={"data_dir": data_dir or Path(tmp, "data"), "database_url": None})
        texts = {page: _page_text(load_file(folder / page, 50_000_000)) for page in pages}
        start = time.perf_counter()
        figures["bm25 (bm25s, pages)"] = retrieval_scores(qrels, bm25_rankings(texts, questions), METRICS)
        figures["bm25_seconds"] = round(time.perf_counter() - start, 2)
        with open_knowledge_base(own) as kb:
            runs = [("after", False)] + ([("before", True)] if before else [])
            for name, old in runs:
                figures[f"ingest {name}"] = _ingest(kb, folder, f"manual-{name}", old)
                for cap in (own.search_per_document, 0) if name == "after" else (own.search_per_document,):
                    ranked, top5 = _ladder_runs(kb, f"manual-{name}", folder, questions, cap)
                    label = f"ladder hybrid ({name}{', no per-document cap' if cap == 0 else ''})"
                    figures[label] = {**retrieval_scores(qrels, ranked, METRICS), **_passage_figures(top5, questions)}
    _print(figures, own.search_per_document)
    if out_file is not None:
        out_file.write_text(json.dumps(figures, indent=2))
    return figures


def _print(figures: dict[str, Any], cap: int) -> None:
    baseline = figures["bm25 (bm25s, pages)"]
    table = Table(title=f"Python 3.11 manual: {figures['pages']} pages, {figures['questions']} questions")
    for column in ("retriever", *METRICS, "MRR@10 vs BM25", "answer in top-5 passages", "pages in top 5"):
        table.add_column(column)
    for name, scores in figures.items():
        if not isinstance(scores, dict) or "mrr@10" not in scores:
            continue
        ratio = scores["mrr@10"] / baseline["mrr@10"] if baseline["mrr@10"] else float("nan")
        table.add_row(
            name, *(f"{scores[m]:.3f}" for m in METRICS), f"{ratio:.2f}x",
            f"{scores['answer_in_top5_passages']:.3f}" if "answer_in_top5_passages" in scores else "-",
            f"{scores['pages_in_top5_passages']:.2f}" if "pages_in_top5_passages" in scores else "-",
        )  # fmt: skip
    console.print(table)
    after = figures.get("ladder hybrid (after)")
    if after:
        ratio = after["mrr@10"] / baseline["mrr@10"] if baseline["mrr@10"] else 0.0
        verdict = "met" if ratio >= GOAL else "NOT met"
        console.print(f"goal MRR@10 >= {GOAL:.2f}x BM25: {ratio:.2f}x, {verdict} (per-document cap {cap})")
    for key in ("ingest after", "ingest before"):
        if key in figures:
            console.print(f"{key}: {figures[key]}")
