"""Read files into documents: Markdown, plain text, HTML, PDF and JSONL records.

Every loader either returns documents or raises ``SkipFile`` with a reason a person can act on;
nothing here stops a whole ingest run.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES
_HEADING_MARK = "\x00LADDER-HEADING\x00"


class SkipFile(Exception):
    """This file (or record) is not ingested; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Section:
    """A stretch of a document under one heading path."""

    text: str
    heading: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedDocument:
    """One document ready to chunk."""

    doc_id: str
    source: str
    title: str
    sections: list[Section]
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordProblem:
    """A JSONL line that could not be used; the rest of the file still is."""

    where: str
    reason: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, or SkipFile for unreadable, empty or oversized files."""
    try:
        info = path.stat()
    except OSError as exc:
        raise SkipFile(f"cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SkipFile("not a regular file")  # a FIFO or device would block or never end
    size = info.st_size
    if size > max_bytes:
        raise SkipFile(f"too large: {size / 1e6:.1f} MB over the {max_bytes / 1e6:.1f} MB limit")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # bounded even if the file grows after stat
    except OSError as exc:
        raise SkipFile(f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise SkipFile(f"too large: over the {max_bytes / 1e6:.1f} MB limit")
    if not data.strip():
        raise SkipFile("empty file")
    return data


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (a BOM is allowed); binary or other encodings are skipped, never guessed."""
    if b"\x00" in data[:8192]:
        raise SkipFile("binary content (NUL bytes), not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})") from exc
    if not text.strip():
        raise SkipFile("empty file")
    return text


def markdown_sections(text: str) -> tuple[str, list[Section]]:
    """Split Markdown at its headings (not at '#' lines inside code blocks); return (title, sections)."""
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            inline = tokens[index + 1]
            headings.append((token.map[0], token.map[1], int(token.tag[1]), inline.content.strip()))
    title = next((h[3] for h in headings if h[2] == 1), "")
    sections: list[Section] = []
    path: list[tuple[int, str]] = []

    def add(body_lines: list[str]) -> None:
        body = "\n".join(body_lines).strip()
        if body:
            sections.append(Section(text=body, heading=" > ".join(t for _, t in path)))

    cursor = 0
    for start, end, level, heading in headings:
        add(lines[cursor:start])
        path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, heading)]
        cursor = end
    add(lines[cursor:])
    return title, sections


def html_sections(data: bytes) -> tuple[str, list[Section]]:
    """Visible text of an HTML page split at h1-h6; scripts, styles and templates dropped."""
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception:  # lxml missing or refused the input: the stdlib parser is slower but lenient
        soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for heading in soup.find_all(re.compile(r"^h[1-6]$")):
        level = int(heading.name[1])
        text = heading.get_text(" ", strip=True)
        heading.replace_with(f"\n{_HEADING_MARK}{level}\t{text}\n")
    body = soup.body or soup
    if title_tag:
        title_tag.decompose()
    raw = body.get_text("\n")
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    for part_index, part in enumerate(raw.split(_HEADING_MARK)):
        if part_index == 0:
            text = part
        else:
            head, _, text = part.partition("\n")
            level_text, _, heading_text = head.partition("\t")
            level = int(level_text) if level_text.isdigit() else 1
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, heading_text.strip())]
            if not title and level == 1:
                title = heading_text.strip()
        text = re.sub(r"\n\s*\n\s*", "\n\n", re.sub(r"[ \t\r\f\v]+", " ", text)).strip()
        if text:
            sections.append(Section(text=text, heading=" > ".join(t for _, t in path)))
    return title, sections


def pdf_sections(data: bytes) -> tuple[str, list[Section]]:
    """One section per page with text; encrypted or malformed PDFs are skipped."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title).strip()
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(text=text, metadata={"page": number}))
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OSError) as exc:
        raise SkipFile(f"malformed PDF: {type(exc).__name__}: {exc}") from exc
    if not sections:
        raise SkipFile("PDF has no extractable text (scanned images need OCR)")
    return title, sections


def load_file(path: Path, max_bytes: int) -> LoadedDocument:
    """Load one Markdown, text, HTML or PDF file as a document whose doc_id is its absolute path."""
    suffix = path.suffix.lower()
    data = read_bytes(path, max_bytes)
    if suffix in PDF_SUFFIXES:
        if not data.startswith(b"%PDF"):
            raise SkipFile("not a PDF (no %PDF header)")
        title, sections = pdf_sections(data)
    elif suffix in HTML_SUFFIXES:
        decode_text(data)  # same rules as other text: refuse binary and non-UTF-8
        try:
            title, sections = html_sections(data)
        except RecursionError as exc:
            raise SkipFile("HTML nested too deeply to parse") from exc
    elif suffix in MARKDOWN_SUFFIXES:
        title, sections = markdown_sections(decode_text(data))
    elif suffix in TEXT_SUFFIXES:
        text = decode_text(data).strip()
        title, sections = "", [Section(text=text)]
    else:
        raise SkipFile(f"unsupported file type {suffix or '(none)'}")
    if not sections:
        raise SkipFile("no text found")
    source = str(path.absolute())
    return LoadedDocument(
        doc_id=source,
        source=source,
        title=title or path.stem,
        sections=sections,
        content_hash=sha256(data),
        metadata={"path": source, "file_type": suffix.lstrip(".")},
    )


def load_jsonl(path: Path, max_bytes: int) -> Iterator[LoadedDocument | RecordProblem]:
    """One document per line ``{"id", "text", "title"?, "metadata"?}``; bad lines become problems."""
    text = decode_text(read_bytes(path, max_bytes))
    source = str(path.absolute())
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RecordProblem(where, f"invalid JSON: {exc.msg}")
            continue
        problem = _record_problem(record)
        if problem:
            yield RecordProblem(where, problem)
            continue
        metadata = dict(record.get("metadata") or {})
        title = str(record.get("title") or "")
        body = record["text"].strip()
        yield LoadedDocument(
            doc_id=record["id"],
            source=source,
            title=title,
            sections=[Section(text=body)],
            content_hash=sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()),
            metadata={**metadata, "path": source, "line": number},
        )


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    unknown = set(record) - {"id", "text", "title", "metadata"}
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    if not isinstance(record.get("id"), str) or not record["id"].strip():
        return "missing or empty string 'id'"
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        return "missing or empty string 'text'"
    if "title" in record and record["title"] is not None and not isinstance(record["title"], str):
        return "'title' must be a string"
    if "metadata" in record and record["metadata"] is not None and not isinstance(record["metadata"], dict):
        return "'metadata' must be an object"
    return None
