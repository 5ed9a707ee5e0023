"""Office documents, e-books and spreadsheets as sections: DOCX, PPTX, EPUB, ODT, XLSX and CSV.

DOCX, PPTX and EPUB go through Microsoft's markitdown (mammoth, python-pptx and its own EPUB reader
under it), ODT through odfpy's XHTML writer and markitdown's HTML converter: all become Markdown, so
headings become sections exactly as for a Markdown file (knowledge/loaders.markdown_sections), and
tables stay pipe tables that the chunker cuts by rows (knowledge/tables.py). A presentation becomes
one section per slide, headed by its number and title, with its speaker notes. XLSX and CSV are read
by knowledge/tables.py: one section per sheet, a Markdown table. Pictures are not read (no OCR inside
office files): a presentation of pictures only is skipped with that reason.

Every package is opened by knowledge/packages.py first (bounded sizes, overlaps, passwords), so a
library only ever inflates what the bounds allow; whatever a library raises on a broken file becomes
a SkipFile with the library's own message.
"""

from __future__ import annotations

import io
import re
from typing import Any

from knowledge.bounds import ParseLimits, SkipFile, WorkClock, brief, clean_text
from knowledge.packages import odf_encrypted, open_package
from knowledge.sections import Section, markdown_sections
from knowledge.tables import SHEET_SUFFIXES, markdown_table, normalize_tables, read_sheets

_KIND = {
    ".docx": "Word document (DOCX)",
    ".pptx": "PowerPoint presentation (PPTX)",
    ".epub": "EPUB e-book",
    ".odt": "OpenDocument text (ODT)",
}
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")  # a picture: its file is not text, its alt text is a shape name
_SLIDE = re.compile(r"^<!-- Slide number: (\d+) -->$", re.MULTILINE)
_NOTES = "\n### Notes:\n"
_EPUB_META = re.compile(r"^\*\*(Title|Authors|Language|Publisher|Date|Description|Identifier):\*\* .*$", re.MULTILINE)


def format_sections(data: bytes, suffix: str, limits: ParseLimits, clock: WorkClock) -> tuple[str, list[Section]]:
    """(title, sections) of an OFFICE_SUFFIXES or SHEET_SUFFIXES file; SkipFile with the reason otherwise."""
    if suffix in SHEET_SUFFIXES:
        sheets = read_sheets(data, suffix, "", limits, clock)
        single = suffix == ".csv"
        return "", [
            Section(
                text=markdown_table(s.header, s.rows),
                heading="" if single else s.name,
                metadata={} if single else {"sheet": s.name},
            )
            for s in sheets
        ]
    kind = _KIND[suffix]
    archive = open_package(data, kind, limits, markup_limit=True)
    if suffix == ".odt" and odf_encrypted(archive):
        raise SkipFile(f"password-protected {kind}: open it and save it without a password to ingest it")
    try:
        title, markdown = _convert(data, suffix)
    except SkipFile:
        raise
    except Exception as exc:  # each library raises its own types on a broken file
        raise SkipFile(f"could not read this {kind}: {type(exc).__name__}: {brief(exc)}") from exc
    clock.check("the end of conversion")
    markdown = normalize_tables(_IMAGE.sub("", clean_text(markdown)))
    if suffix == ".pptx":
        return title, slide_sections(markdown)
    if suffix == ".epub":  # the book's own title, not its first chapter's; its metadata block is not text
        markdown = _EPUB_META.sub("", markdown)
    heading_title, sections = markdown_sections(markdown, limits, clock)
    return (title if suffix == ".epub" else "") or heading_title or title, sections


_DOCX_STYLES = "p[style-name='Title'] => h1:fresh"


def _convert(data: bytes, suffix: str) -> tuple[str, str]:
    """(title or "", Markdown) from the library for ``suffix``."""
    from markitdown import StreamInfo
    from markitdown.converters import DocxConverter, EpubConverter, HtmlConverter, PptxConverter

    if suffix == ".odt":
        from odf.odf2xhtml import ODF2XHTML

        writer = ODF2XHTML(generate_css=False, embedable=True)
        writer.load(io.BytesIO(data))
        result = HtmlConverter().convert_string(writer.xhtml())
        return "", result.markdown
    converter: Any = {".docx": DocxConverter, ".pptx": PptxConverter, ".epub": EpubConverter}[suffix]()
    # Word's Title style is the document's title; mammoth's default map reads it as a plain paragraph,
    # which then sat alone as a chunk while the first "Heading 1" became the title.
    options = {"style_map": _DOCX_STYLES} if suffix == ".docx" else {}
    result = converter.convert(io.BytesIO(data), StreamInfo(extension=suffix), **options)
    return result.title or "", result.markdown


def slide_sections(markdown: str) -> list[Section]:
    """One section per slide with text: heading "Slide N: title", the body, then "Speaker notes: ..."."""
    parts = _SLIDE.split(markdown)
    sections: list[Section] = []
    for number, body in zip(parts[1::2], parts[2::2], strict=True):
        body, _, notes = body.partition(_NOTES)
        lines = body.strip().split("\n")
        title = lines[0][2:].strip() if lines and lines[0].startswith("# ") else ""
        text = "\n".join(lines[1:] if title else lines).strip()
        if notes.strip():
            text = f"{text}\n\nSpeaker notes: {notes.strip()}".strip()
        if title and not text:
            text = title  # a title slide: its title is its text
        if text:
            heading = f"Slide {number}: {title}" if title else f"Slide {number}"
            sections.append(Section(text=text, heading=heading, metadata={"slide": int(number)}))
    if not sections:
        raise SkipFile(
            f"presentation has no text: its {len(parts) // 2} slides hold only pictures"
            " (pictures in slides are not read)"
        )
    return sections
