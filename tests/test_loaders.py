"""Loading files into documents, and refusing bad ones with a reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from knowledge.loaders import LoadedDocument, RecordProblem, SkipFile, load_file, load_jsonl, markdown_sections
from tests.helpers import make_pdf

LIMIT = 1_000_000


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_markdown_splits_at_headings_not_inside_code(tmp_path: Path) -> None:
    text = (
        "# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n```sh\n# not a heading\necho hi\n```\n\n"
        "### Deep\n\nDetail.\n\n## Use\n\nAsk."
    )
    doc = load_file(write(tmp_path, "guide.md", text), LIMIT)
    assert doc.title == "Guide"
    headings = [s.heading for s in doc.sections]
    assert headings == ["Guide", "Guide > Install", "Guide > Install > Deep", "Guide > Use"]
    install = doc.sections[1].text
    assert "# not a heading" in install and "echo hi" in install
    assert doc.doc_id == str((tmp_path / "guide.md").absolute())


def test_markdown_without_headings_is_one_section() -> None:
    title, sections = markdown_sections("just text\n\nmore text")
    assert title == "" and len(sections) == 1


def test_html_keeps_headings_and_drops_scripts(tmp_path: Path) -> None:
    page = (
        "<html><head><title>Pricing</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Plans</h1><p>Free and paid.</p>"
        "<h2>Paid</h2><p>Costs <b>ten</b> euros.</p></body></html>"
    )
    doc = load_file(write(tmp_path, "p.html", page), LIMIT)
    assert doc.title == "Pricing"
    assert [s.heading for s in doc.sections] == ["Plans", "Plans > Paid"]
    joined = " ".join(s.text for s in doc.sections)
    assert "ten" in joined and "secret" not in joined and "color" not in joined


def test_pdf_pages_become_sections(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path, "r.pdf", make_pdf("First page text", "Second page text", title="Report")), LIMIT)
    assert doc.title == "Report"
    assert [s.metadata["page"] for s in doc.sections] == [1, 2]
    assert "Second page" in doc.sections[1].text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.md", b"", "empty"),
        ("blank.txt", b"   \n\n  ", "empty"),
        ("bin.txt", b"abc\x00\x01\x02def", "binary"),
        ("latin.txt", "café au lait".encode("latin-1"), "UTF-8"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", "PDF"),
        ("fake.pdf", b"hello, not a pdf", "not a PDF"),
        ("data.xyz", b"something", "unsupported"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    with pytest.raises(SkipFile) as info:
        load_file(write(tmp_path, name, data), LIMIT)
    assert reason.lower() in info.value.reason.lower()


def test_oversized_file_is_skipped(tmp_path: Path) -> None:
    with pytest.raises(SkipFile, match="too large"):
        load_file(write(tmp_path, "big.txt", "x" * 2000), max_bytes=1000)


def test_unreadable_and_special_files_are_skipped(tmp_path: Path) -> None:
    dangling = tmp_path / "gone.md"
    dangling.symlink_to(tmp_path / "missing.md")
    with pytest.raises(SkipFile, match="cannot read"):
        load_file(dangling, LIMIT)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    with pytest.raises(SkipFile, match="regular file"):
        load_file(fifo, LIMIT)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path, "bom.txt", "\ufeffhello there".encode()), LIMIT)
    assert doc.sections[0].text == "hello there"


def test_jsonl_keeps_good_records_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "text": "Alpha text", "title": "A", "metadata": {"date": "2024-01-01"}}),
        "{not json",
        json.dumps({"id": "", "text": "no id"}),
        json.dumps({"id": "c", "text": "   "}),
        json.dumps({"id": "d", "text": "x", "extra": 1}),
        json.dumps(["a list"]),
        "",
        json.dumps({"id": "e", "text": "Echo text", "metadata": None}),
    ]
    items = list(load_jsonl(write(tmp_path, "r.jsonl", "\n".join(lines)), LIMIT))
    docs = [i for i in items if isinstance(i, LoadedDocument)]
    problems = [i for i in items if isinstance(i, RecordProblem)]
    assert [d.doc_id for d in docs] == ["a", "e"]
    assert docs[0].title == "A" and docs[0].metadata["date"] == "2024-01-01"
    assert len(problems) == 5
    assert problems[0].where.endswith(":2") and "invalid JSON" in problems[0].reason
    assert any("unknown keys" in p.reason for p in problems)


def test_jsonl_record_hash_changes_with_content(tmp_path: Path) -> None:
    first = next(iter(load_jsonl(write(tmp_path, "a.jsonl", json.dumps({"id": "x", "text": "one"})), LIMIT)))
    second = next(iter(load_jsonl(write(tmp_path, "b.jsonl", json.dumps({"id": "x", "text": "two"})), LIMIT)))
    assert isinstance(first, LoadedDocument) and isinstance(second, LoadedDocument)
    assert first.content_hash != second.content_hash
