"""Real DOCX, PPTX, XLSX, CSV, EPUB, ODT and scanned-PDF files, built by the libraries that write them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def make_docx(path: Path, *, rows: int = 2) -> Path:
    """A Word document: a title, a subheading, a paragraph and a table with a header row."""
    from docx import Document

    doc = Document()
    doc.add_heading("Travel policy", 1)
    doc.add_paragraph("Staff book trains for trips under four hours.")
    doc.add_heading("Hotels", 2)
    doc.add_paragraph("Hotels are booked through the travel desk.")
    table = doc.add_table(rows=rows + 1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "City", "Nightly cap"
    for i in range(rows):
        table.cell(i + 1, 0).text, table.cell(i + 1, 1).text = f"City{i}", f"{100 + i} EUR"
    doc.save(path)
    return path


def make_encrypted_docx(path: Path, password: str = "s3cret") -> Path:
    """A password-protected Word document (Agile encryption, as Word writes it)."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_docx(path.with_suffix(".plain.docx"))
    with plain.open("rb") as source, path.open("wb") as target:
        OOXMLFile(source).encrypt(password, target)
    plain.unlink()
    return path


def make_pptx(path: Path) -> Path:
    """Two slides: one with a title, a body and speaker notes; one untitled text box."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly results"
    slide.placeholders[1].text = "Revenue grew twelve percent."
    slide.notes_slide.notes_text_frame.text = "Mention the new Lisbon office."
    other = deck.slides.add_slide(deck.slide_layouts[6])
    box = other.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1))
    box.text_frame.text = "Hiring plan for the autumn."
    deck.save(path)
    return path


def make_picture_pptx(path: Path) -> Path:
    """A deck whose only slide holds a picture and no text."""
    from PIL import Image
    from pptx import Presentation
    from pptx.util import Inches

    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, format="PNG")
    picture.seek(0)
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    slide.shapes.add_picture(picture, Inches(1), Inches(1))
    deck.save(path)
    return path


def make_xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """A workbook with one sheet per entry (rows as given, the first is the header)."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def make_truncated_xlsx(path: Path) -> Path:
    """The first half of a real workbook, as an interrupted download leaves it."""
    full = make_xlsx(path.with_suffix(".full.xlsx"), {"Sales": [["Region", "Units"], ["North", 3]]})
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_epub(path: Path) -> Path:
    """An e-book with one chapter holding a heading, a subheading and text."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("ladder-test-book")
    book.set_title("Field guide")
    book.set_language("en")
    chapter = epub.EpubHtml(title="Herons", file_name="herons.xhtml", lang="en")
    chapter.content = "<h1>Herons</h1><p>Herons wade in shallow water.</p><h2>Nesting</h2><p>They nest in colonies.</p>"
    book.add_item(chapter)
    book.toc = (chapter,)
    book.spine = [chapter]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)
    return path


def make_odt(path: Path) -> Path:
    """An OpenDocument text: a heading, a subheading, text and a two-row table."""
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Handbook"))
    doc.text.addElement(P(text="Welcome to the team."))
    doc.text.addElement(H(outlinelevel=2, text="Leave"))
    doc.text.addElement(P(text="Everyone has twenty-five days of leave."))
    table = Table(name="Leave")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for values in (("Kind", "Days"), ("Annual", "25")):
        row = TableRow()
        for value in values:
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    doc.text.addElement(table)
    doc.save(str(path))
    return path


def make_scanned_pdf(text_pages: list[str], scanned_line: str) -> bytes:
    """A PDF of text pages followed by one page that is only a picture of ``scanned_line`` (no text layer)."""
    from PIL import Image, ImageDraw, ImageFont
    from pypdf import PdfReader, PdfWriter

    from tests.helpers import make_pdf

    picture = Image.new("L", (1400, 300), 255)
    ImageDraw.Draw(picture).text((40, 100), scanned_line, fill=0, font=ImageFont.load_default(size=48))
    scan = io.BytesIO()
    picture.save(scan, format="PDF", resolution=150)
    writer = PdfWriter()
    if text_pages:
        writer.append(PdfReader(io.BytesIO(make_pdf(*text_pages))))
    writer.append(PdfReader(io.BytesIO(scan.getvalue())))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
