"""DOCX, PPTX, XLSX, CSV, EPUB and ODT files (built by the libraries that write them), scanned PDFs, and
tables that chunk by rows: what each keeps, and the reason each bad file is skipped with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase
from knowledge.bounds import ParseLimits, SkipFile
from knowledge.chunking import ChunkingConfig, chunk_document
from knowledge.loaders import load_file, pdf_sections
from tests.office_files import (
    make_docx,
    make_encrypted_docx,
    make_epub,
    make_odt,
    make_picture_pptx,
    make_pptx,
    make_scanned_pdf,
    make_truncated_xlsx,
    make_xlsx,
)

MB = 10_000_000


def sections(path: Path) -> list[tuple[str, str, dict]]:
    return [(s.heading, s.text, s.metadata) for s in load_file(path, MB).sections]


def test_docx_headings_become_sections_and_its_table_stays_a_table(tmp_path: Path) -> None:
    document = load_file(make_docx(tmp_path / "policy.docx"), MB)
    assert document.title == "Travel policy"
    headings = [s.heading for s in document.sections]
    assert headings == ["Travel policy", "Travel policy > Hotels"]
    hotels = document.sections[1].text
    assert "| City | Nightly cap |\n| --- | --- |\n| City0 | 100 EUR |\n| City1 | 101 EUR |" in hotels


def test_a_docx_title_style_is_the_document_title_not_a_passage(tmp_path: Path) -> None:
    from docx import Document

    doc = Document()
    doc.add_heading("Expenses 2026", 0)  # Word's Title style, as most documents begin
    doc.add_heading("Claims", 1)
    doc.add_paragraph("Claims are filed within 30 days of return.")
    doc.add_heading("Allowances", 1)
    doc.add_paragraph("The daily allowance in Japan is 60 EUR.")
    doc.save(tmp_path / "expenses.docx")
    document = load_file(tmp_path / "expenses.docx", MB)
    assert document.title == "Expenses 2026"
    assert [(s.heading, s.text) for s in document.sections] == [  # the title is no section of its own
        ("Claims", "Claims are filed within 30 days of return."),
        ("Allowances", "The daily allowance in Japan is 60 EUR."),
    ]


def test_pptx_slides_keep_their_titles_and_speaker_notes(tmp_path: Path) -> None:
    found = sections(make_pptx(tmp_path / "deck.pptx"))
    assert found[0] == (
        "Slide 1: Quarterly results",
        "Revenue grew twelve percent.\n\nSpeaker notes: Mention the new Lisbon office.",
        {"slide": 1},
    )
    assert found[1] == ("Slide 2", "Hiring plan for the autumn.", {"slide": 2})


def test_xlsx_sheets_become_sections_with_their_tables(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "sales.xlsx",
        {"Sales": [["Region", "Units", "Price"], ["North", 3, 2.5], ["South", 4, 1.0]], "Blank": []},
    )
    found = sections(path)
    assert found == [
        (
            "Sales",
            "| Region | Units | Price |\n| --- | --- | --- |\n| North | 3 | 2.5 |\n| South | 4 | 1 |",
            {"sheet": "Sales"},
        )
    ]  # the empty sheet holds nothing to read


def test_csv_is_one_table_and_its_delimiter_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name;city\nAnn;Oslo\nBo|b;Rome\n", encoding="utf-8")
    [(heading, text, _)] = sections(path)
    assert heading == ""
    assert text == "| name | city |\n| --- | --- |\n| Ann | Oslo |\n| Bo\\|b | Rome |"


def test_epub_chapters_keep_their_headings_and_the_book_its_title(tmp_path: Path) -> None:
    document = load_file(make_epub(tmp_path / "guide.epub"), MB)
    assert document.title == "Field guide"
    by_heading = {s.heading: s.text for s in document.sections}
    assert by_heading["Herons"] == "Herons wade in shallow water."
    assert by_heading["Herons > Nesting"] == "They nest in colonies."


def test_odt_headings_and_table(tmp_path: Path) -> None:
    document = load_file(make_odt(tmp_path / "handbook.odt"), MB)
    assert document.title == "Handbook"
    leave = {s.heading: s.text for s in document.sections}["Handbook > Leave"]
    assert leave == "Everyone has twenty-five days of leave.\n\n| Kind | Days |\n| --- | --- |\n| Annual | 25 |"


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda d: make_encrypted_docx(d / "locked.docx"), "password-protected Word document (DOCX)"),
        (lambda d: make_truncated_xlsx(d / "cut.xlsx"), "not a valid XLSX workbook (truncated or corrupt"),
        (lambda d: make_picture_pptx(d / "photos.pptx"), "presentation has no text: its 1 slides hold only pictures"),
        (lambda d: _write(d / "fake.docx", b"just some text"), "not a valid Word document (DOCX)"),
        (lambda d: _write(d / "latin1.csv", "név;kor\n".encode("latin-1")), "CSV is not valid UTF-8"),
    ],
)
def test_bad_office_files_are_skipped_with_a_clear_reason(tmp_path: Path, build, reason: str) -> None:
    with pytest.raises(SkipFile) as caught:
        load_file(build(tmp_path), MB)
    assert reason in caught.value.reason


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_package_over_the_size_bounds_is_refused_before_a_library_reads_it(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "big.docx")
    with pytest.raises(SkipFile, match="markup, over the"):
        load_file(path, MB, ParseLimits(package_markup_bytes=1000))
    sheet = make_xlsx(tmp_path / "wide.xlsx", {"S": [[f"c{i}" for i in range(50)] for _ in range(30)]})
    with pytest.raises(SkipFile, match="over 1,000 cells"):
        load_file(sheet, MB, ParseLimits(table_cells=1000))


def test_a_long_table_is_cut_between_rows_and_each_chunk_repeats_its_header(tmp_path: Path) -> None:
    rows = [["Region", "Units", "Comment"], *[[f"R{i}", i, f"note number {i} on this row"] for i in range(120)]]
    document = load_file(make_xlsx(tmp_path / "long.xlsx", {"Data": rows}), MB)
    chunks = chunk_document(document, ChunkingConfig(chunk_tokens=64, overlap=8))
    assert len(chunks) > 5
    seen = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[:2] == ["| Region | Units | Comment |", "| --- | --- | --- |"]
        assert all(line.startswith("| R") and line.endswith(" |") for line in lines[2:])
        assert chunk.metadata == {"sheet": "Data"}
        seen += lines[2:]
    assert seen == [f"| R{i} | {i} | note number {i} on this row |" for i in range(120)]  # each row once, whole


def test_text_around_a_markdown_table_is_chunked_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.md"
    path.write_text("# T\n\nIntro line.\n\n| a | b |\n| - | - |\n| 1 | 2 |\n\nAfter the table.\n")
    chunks = chunk_document(load_file(path, MB), ChunkingConfig(chunk_tokens=64, overlap=0))
    assert [c.text for c in chunks] == ["Intro line.", "| a | b |\n| - | - |\n| 1 | 2 |", "After the table."]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="Tesseract (tesseract-ocr) is not installed")
def test_a_scanned_pdf_page_is_read_with_tesseract_and_keeps_its_page_number() -> None:
    _, found = pdf_sections(make_scanned_pdf(["Typed first page"], "Invoice total 4711 euros"))
    assert [s.metadata for s in found] == [{"page": 1}, {"page": 2, "ocr": True}]
    assert found[0].text == "Typed first page"
    assert "4711" in found[1].text and "Invoice" in found[1].text


def test_without_tesseract_scanned_pages_are_skipped_with_that_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("knowledge.ocr.shutil.which", lambda name: None)
    _, found = pdf_sections(make_scanned_pdf(["Typed first page"], "Invoice"))
    assert [(s.text, s.metadata) for s in found] == [("Typed first page", {"page": 1})]
    with pytest.raises(SkipFile, match="Tesseract is not installed"):
        pdf_sections(make_scanned_pdf([], "Invoice"))


def test_one_ingest_run_reads_every_format_and_reports_each_bad_file(
    kb: KnowledgeBase, collection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    make_docx(folder / "policy.docx")
    make_pptx(folder / "deck.pptx")
    make_xlsx(folder / "sales.xlsx", {"Sales": [["Region", "Units"], ["North", 3]]})
    (folder / "people.csv").write_text("name,city\nAnn,Oslo\n")
    make_epub(folder / "guide.epub")
    make_odt(folder / "handbook.odt")
    make_encrypted_docx(folder / "locked.docx")
    make_truncated_xlsx(folder / "cut.xlsx")
    make_picture_pptx(folder / "photos.pptx")
    report = kb.ingest([folder], collection, progress=False)
    assert report.documents_added == 6
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"locked.docx", "cut.xlsx", "photos.pptx"}
    assert "password-protected" in reasons["locked.docx"]
    hits = kb.search("Lisbon office speaker notes", collection, k=3, mode="keyword")
    assert hits and hits[0].metadata.get("slide") == 1
