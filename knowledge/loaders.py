"""Read files into documents: Markdown, plain text, HTML, PDF, JSONL records and zip archives of them;
DOCX, PPTX, EPUB, ODT, XLSX and CSV through knowledge/formats.py.

Every loader either returns documents or raises ``SkipFile`` with a reason a person can act on;
nothing here stops a whole ingest run. Input is treated as hostile: sizes are bounded before
anything is parsed or inflated, parsing work stays linear in the input, and every parser works
under ``ParseLimits`` (nodes, pages, seconds per file; see knowledge/bounds.py). Every document is
built by ``_document``, which applies the one control-character rule (``clean_text``) to all its text.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import stat
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any

from knowledge import html_text
from knowledge.bounds import DEFAULT_LIMITS, ParseLimits, SkipFile, WorkClock, brief, clean_text, clean_value
from knowledge.html_text import check_html_nodes as check_html_nodes  # the tests and the bounds read it here
from knowledge.packages import OFFICE_SUFFIXES
from knowledge.sections import Section, markdown_sections
from knowledge.tables import SHEET_SUFFIXES

log = logging.getLogger(__name__)

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
ARCHIVE_SUFFIXES = {".zip"}
FORMAT_SUFFIXES = OFFICE_SUFFIXES | SHEET_SUFFIXES  # DOCX, PPTX, EPUB, ODT, XLSX, CSV: knowledge/formats.py
DOCUMENT_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES | FORMAT_SUFFIXES
SUPPORTED_SUFFIXES = DOCUMENT_SUFFIXES | ARCHIVE_SUFFIXES
# Archives inside an archive are never expanded: each layer multiplies what a bomb can do.
NESTED_ARCHIVE_SUFFIXES = {".zip", ".jar", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".7z", ".rar"}
_JSON_VALUE_MARKS = (",", "[", "{")  # a JSON text holds at most one value more than these characters
_JSONL_NUL_SHARE = 0.1  # UTF-16 text is half NULs; a record with a stray NUL is far below this


@dataclass
class LoadedDocument:
    """One document ready to chunk."""

    doc_id: str
    source: str
    title: str
    sections: list[Section]
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # where to point a person in a report: the path, ``file:line``, ``archive!member``

    def __post_init__(self) -> None:
        self.where = self.where or self.doc_id


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


def decode_text(data: bytes, *, nul_share: float = 0.0) -> str:
    """Strict UTF-8 (a BOM is allowed); binary or other encodings are skipped, never guessed.

    A file is taken for binary when over ``nul_share`` of its first 8 KiB are NUL bytes: any NUL at
    all for a document, which is one piece; a real share (UTF-16, a binary file) for JSONL, whose
    records are judged one by one, so that one record with a NUL does not cost the file.
    """
    head = data[:8192]
    if head.count(b"\x00") > nul_share * len(head):
        raise SkipFile("binary content (NUL bytes), not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})") from exc
    if not text.strip():
        raise SkipFile("empty file")
    return text


def html_sections(
    data: bytes, limits: ParseLimits = DEFAULT_LIMITS, clock: WorkClock | None = None
) -> tuple[str, list[Section]]:
    """The page's main content split at h1-h6, inline text kept in its sentence (knowledge/html_text.py)."""
    title, parts = html_text.html_sections(data, limits, clock)
    return title, [Section(text=text, heading=heading) for heading, text in parts]


def pdf_sections(
    data: bytes, limits: ParseLimits = DEFAULT_LIMITS, clock: WorkClock | None = None
) -> tuple[str, list[Section]]:
    """One section per page with text (scanned pages OCRed where Tesseract is installed, marked ``ocr``);
    malformed, locked and too costly PDFs are skipped (knowledge/pdf_text.py)."""
    from knowledge.pdf_text import pdf_sections as pages_text

    found = pages_text(data, limits, clock or WorkClock(limits))
    if not found.pages:
        why = found.unread_reason or "nothing read"
        raise SkipFile(f"PDF has no extractable text: no page has a text layer; {why}")
    if found.unread:
        log.warning("PDF pages %s not read: %s", found.unread, found.unread_reason)
    return found.title, [
        Section(text=text, metadata={"page": number, **({"ocr": True} if number in found.ocr_pages else {})})
        for number, text in found.pages
    ]


def load_file(path: Path, max_bytes: int, limits: ParseLimits = DEFAULT_LIMITS) -> LoadedDocument:
    """Load one Markdown, text, HTML or PDF file as a document whose doc_id is its absolute path."""
    data = read_bytes(path, max_bytes)
    source = str(path.absolute())
    return document_from_bytes(data, path.suffix.lower(), doc_id=source, source=source, name=path.stem, limits=limits)


def document_from_bytes(
    data: bytes,
    suffix: str,
    *,
    doc_id: str,
    source: str,
    name: str,
    metadata: dict[str, Any] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> LoadedDocument:
    """One document from a file's bytes, parsed by ``suffix``; ``name`` is the title when it has none."""
    clock = WorkClock(limits)
    with clock.running():
        title, sections = _parse(data, suffix, limits, clock)
    return _document(
        doc_id=doc_id,
        source=source,
        title=title or name,
        sections=sections,
        content_hash=sha256(data),
        metadata={"path": source, "file_type": suffix.lstrip("."), **(metadata or {})},
    )


def _parse(data: bytes, suffix: str, limits: ParseLimits, clock: WorkClock) -> tuple[str, list[Section]]:
    if suffix in PDF_SUFFIXES:
        if not data.startswith(b"%PDF"):
            raise SkipFile("not a PDF (no %PDF header)")
        return pdf_sections(data, limits, clock)
    if suffix in HTML_SUFFIXES:
        decode_text(data)  # same rules as other text: refuse binary and non-UTF-8
        try:
            return html_sections(data, limits, clock)
        except RecursionError as exc:
            raise SkipFile("HTML nested too deeply to parse") from exc
    if suffix in MARKDOWN_SUFFIXES:
        return markdown_sections(decode_text(data), limits, clock)
    if suffix in TEXT_SUFFIXES:
        return "", [Section(text=decode_text(data))]
    if suffix in FORMAT_SUFFIXES:
        from knowledge.formats import format_sections

        return format_sections(data, suffix, limits, clock)
    raise SkipFile(f"unsupported file type {suffix or '(none)'}")


def _document(
    *, doc_id: str, source: str, title: str, sections: list[Section], where: str = "", **rest: Any
) -> LoadedDocument:
    """The one way a document is made: ``clean_text`` on its title, headings, text and metadata;
    sections left empty by that are dropped, and a document left with none is skipped."""
    kept = [
        Section(text=text, heading=clean_text(s.heading), metadata=clean_value(s.metadata))
        for s in sections
        if (text := clean_text(s.text).strip())
    ]
    if not kept:
        raise SkipFile("no text found")
    rest["metadata"] = clean_value(rest.get("metadata") or {})
    return LoadedDocument(doc_id=doc_id, source=source, title=clean_text(title), sections=kept, where=where, **rest)


def load_jsonl(
    path: Path, max_bytes: int, limits: ParseLimits = DEFAULT_LIMITS
) -> Iterator[LoadedDocument | RecordProblem]:
    """One document per line ``{"id", "text", "title"?, "metadata"?}``; bad lines become problems."""
    data = read_bytes(path, max_bytes)
    yield from jsonl_records(data, source=str(path.absolute()), where=str(path), limits=limits)


def jsonl_records(
    data: bytes,
    *,
    source: str,
    where: str,
    metadata: dict[str, Any] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Iterator[LoadedDocument | RecordProblem]:
    """The records of JSONL bytes; ``where`` names the file in problems (``where:line``).

    Lines end at "\n" only: a record may hold U+2028 or a form feed, which ``str.splitlines`` would
    cut it at. The clock runs while a line is parsed, not while the caller handles the record; when
    it runs out the file is skipped from that line on (records before it are already the caller's).
    """
    text = decode_text(data, nul_share=_JSONL_NUL_SHARE)
    clock = WorkClock(limits)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        clock.check(f"line {number:,}")
        at = f"{where}:{number}"
        with clock.running():
            try:
                item = _jsonl_item(line, at, number, source, metadata, limits)
            except Exception as exc:  # a loader bug on one record must not cost the others
                log.exception("unexpected error loading %s", at)
                item = RecordProblem(at, f"could not load: {type(exc).__name__}: {brief(exc)}")
        yield item


def _jsonl_item(
    line: str, at: str, number: int, source: str, metadata: dict[str, Any] | None, limits: ParseLimits
) -> LoadedDocument | RecordProblem:
    """One JSONL line as a document, or the problem with it."""
    values = sum(line.count(mark) for mark in _JSON_VALUE_MARKS) + 1
    if values > limits.jsonl_values:
        return RecordProblem(at, f"over {limits.jsonl_values:,} JSON values in one line, over the JSONL value limit")
    try:
        # strict=False: a raw control character in a string (invalid JSON, but what a NUL in a record
        # usually is) is read like its escape, and then cleaned like every other one
        record = json.loads(line, strict=False)
    except json.JSONDecodeError as exc:
        return RecordProblem(at, f"invalid JSON: {exc.msg}")
    except RecursionError:  # [[[[... : one hostile line must not cost the file's other records
        return RecordProblem(at, "invalid JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer over Python's 4300-digit limit
        return RecordProblem(at, f"invalid JSON: {brief(exc)}")
    try:
        problem = _record_problem(record, limits)
        if problem:
            return RecordProblem(at, problem)
        return _document(
            doc_id=record["id"],
            source=source,
            title=str(record.get("title") or ""),
            sections=[Section(text=record["text"])],
            # surrogatepass: an unpaired surrogate must not stop the hash (the text itself is cleaned)
            content_hash=sha256(
                json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
            ),
            metadata={**(record.get("metadata") or {}), "path": source, "line": number, **(metadata or {})},
            where=at,
        )
    except SkipFile as skip:  # nothing left of its text once control characters are gone
        return RecordProblem(at, skip.reason)
    except RecursionError:
        return RecordProblem(at, "'metadata' nested too deeply")


@dataclass(frozen=True)
class ArchiveLimits:
    """What one zip archive may expand to. Headers can lie, so reads are counted, not trusted."""

    max_members: int = 10_000
    max_total_bytes: int | None = None  # None: ten times the per-file limit
    max_ratio: float = 100.0  # text rarely compresses past 20:1; a bomb of zeros reaches 1000:1
    ratio_floor_bytes: int = 1_000_000  # a small member may compress as well as it likes
    max_seconds: float = 300.0  # parsing all members together (each member also has the per-file limit)


_READ_CHUNK = 1 << 20


def load_zip(
    path: Path, max_bytes: int, limits: ArchiveLimits | None = None, parse: ParseLimits = DEFAULT_LIMITS
) -> Iterator[LoadedDocument | RecordProblem]:
    """The supported files inside a zip archive as documents, read in memory (nothing touches disk).

    A member's doc_id is ``<archive>!<member path>`` and its source the archive, so re-ingesting and
    ``--prune`` treat members as they treat JSONL records. A member over ``max_bytes``, one that
    inflates past ``max_ratio``:1, a nested archive, an unsafe path (``..``, absolute, a drive), a
    corrupt member or one past a parse limit (each member is a file to ``parse``) is a problem with a
    reason, and the other members are still read; an archive whose members add up to more than the
    total limit, or whose entries overlap, is skipped whole, and one that takes longer than
    ``max_seconds`` is skipped from that member on.
    """
    limits = limits or ArchiveLimits()
    total_limit = limits.max_total_bytes if limits.max_total_bytes is not None else 10 * max_bytes
    data = read_bytes(path, max_bytes)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, or ValueError/struct errors from a mangled directory
        raise SkipFile(f"not a valid zip archive: {brief(exc)}") from exc
    clock = WorkClock(parse, limits.max_seconds, "the time limit for one archive")
    with archive:
        wanted, problems = _archive_members(archive, path, max_bytes, total_limit, limits)
        yield from problems
        budget = [total_limit]  # bytes the members still to read may inflate to, together
        for info, member in wanted:
            clock.check(f"member {member}")  # outside the member's try: the rest of the archive is not read
            where = f"{path}!{member}"
            try:
                yield from clock.charged(_member_items(archive, info, member, path, max_bytes, budget, limits, parse))
            except SkipFile as skip:
                yield RecordProblem(where, skip.reason)
            except Exception as exc:  # a loader bug on one member must not cost the others
                log.exception("unexpected error loading %s", where)
                yield RecordProblem(where, f"could not load: {type(exc).__name__}: {brief(exc)}")


def _archive_members(
    archive: zipfile.ZipFile, path: Path, max_bytes: int, total_limit: int, limits: ArchiveLimits
) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[RecordProblem]]:
    """The members to read and the problems of the others; SkipFile when the whole archive is refused."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise SkipFile(f"archive has {len(infos):,} entries, over the {limits.max_members:,} limit")
    spans = sorted((info.header_offset, info.compress_size) for info in infos)
    if any(start + size > following for (start, size), (following, _) in pairwise(spans)):
        # Entries sharing compressed bytes are the "overlapping" bomb: a few KB read many times over
        raise SkipFile("zip bomb: entries overlap (several files share the same compressed data)")
    problems: list[RecordProblem] = []
    wanted: list[tuple[zipfile.ZipInfo, str]] = []
    seen: set[str] = set()
    for info in infos:
        member, problem = _member_problem(info, seen, max_bytes, limits)
        if problem:
            problems.append(RecordProblem(f"{path}!{_printable(member or info.filename)}", problem))
        elif member:
            wanted.append((info, member))
    declared = sum(info.file_size for info, _ in wanted)
    if declared > total_limit:
        if _inflates_too_far(declared, sum(info.compress_size for info, _ in wanted), limits):
            raise SkipFile(f"zip bomb: expands beyond {total_limit / 1e6:.1f} MB")
        raise SkipFile(
            f"archive too large: its files expand to {declared / 1e6:.1f} MB, over the {total_limit / 1e6:.1f} MB limit"
        )
    return wanted, problems


def _member_items(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member: str,
    path: Path,
    max_bytes: int,
    budget: list[int],
    limits: ArchiveLimits,
    parse: ParseLimits,
) -> Iterator[LoadedDocument | RecordProblem]:
    """One member's document, or its JSONL records; ``budget`` is the archive's bytes left to inflate."""
    source, where = str(path.absolute()), f"{path}!{member}"
    content = _read_member(archive, info, min(max_bytes, budget[0]), limits)
    budget[0] -= len(content)
    suffix = PurePosixPath(member).suffix.lower()
    extra = {"member": member}
    if suffix in JSONL_SUFFIXES:
        yield from jsonl_records(content, source=source, where=where, metadata=extra, limits=parse)
        return
    yield document_from_bytes(
        content,
        suffix,
        doc_id=f"{source}!{member}",
        source=source,
        name=PurePosixPath(member).stem,
        metadata=extra,
        limits=parse,
    )


def _member_problem(
    info: zipfile.ZipInfo, seen: set[str], max_bytes: int, limits: ArchiveLimits
) -> tuple[str | None, str | None]:
    """(the member's clean path or None to pass over it silently, the reason to refuse it or None)."""
    if info.is_dir():
        return None, None
    name = info.filename.replace("\\", "/")  # Windows tools write backslashes
    if any(unicodedata.category(char).startswith("C") for char in name):
        return None, "unsafe name in archive (control characters)"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None, "unsafe path in archive (absolute)"
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        return None, "unsafe path in archive (..)"
    if not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
        return None, None  # hidden, as in a folder, and macOS's resource forks
    member = "/".join(parts)
    suffix = PurePosixPath(member).suffix.lower()
    if suffix in NESTED_ARCHIVE_SUFFIXES:
        return member, "archive inside an archive, not expanded"
    if suffix not in DOCUMENT_SUFFIXES:
        return member, f"unsupported file type {suffix or '(none)'}"
    if stat.S_ISLNK(info.external_attr >> 16):
        return member, "symbolic link in archive, not followed"
    if info.flag_bits & 0x1:
        return member, "encrypted archive member"
    if member in seen:
        return member, "duplicate entry in archive (the first one is used)"
    seen.add(member)
    if _inflates_too_far(info.file_size, info.compress_size, limits):
        return member, (
            f"zip bomb: expands to {info.file_size / 1e6:.1f} MB"
            f" from {info.compress_size / 1e3:.1f} KB (over {limits.max_ratio:.0f}:1)"
        )
    if info.file_size > max_bytes:
        return member, f"too large: {info.file_size / 1e6:.1f} MB over the {max_bytes / 1e6:.1f} MB limit"
    return member, None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, limits: ArchiveLimits) -> bytes:
    """A member's bytes, inflated a chunk at a time and stopped as soon as it passes a limit."""
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_READ_CHUNK):
                size += len(chunk)
                if _inflates_too_far(size, info.compress_size, limits):
                    raise SkipFile(f"zip bomb: expands past {limits.max_ratio:.0f}:1 (its header claimed less)")
                if size > limit:
                    raise SkipFile(f"too large: expands beyond {limit / 1e6:.1f} MB")
                chunks.append(chunk)
    except SkipFile:
        raise
    except Exception as exc:  # bad CRC, truncated data, an unsupported compression method
        raise SkipFile(f"corrupt archive member: {type(exc).__name__}: {brief(exc)}") from exc
    return b"".join(chunks)


def _inflates_too_far(expanded: int, compressed: int, limits: ArchiveLimits) -> bool:
    return expanded > limits.ratio_floor_bytes and expanded > limits.max_ratio * max(compressed, 1)


def _printable(name: str, limit: int = 200) -> str:
    """A name from an archive, safe to show: control characters as '?', cut to ``limit``."""
    shown = "".join("?" if unicodedata.category(char).startswith("C") else char for char in name)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _record_problem(record: object, limits: ParseLimits) -> str | None:
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    unknown = set(record) - {"id", "text", "title", "metadata"}
    if unknown:
        return brief(f"unknown keys {sorted(unknown)}")
    if not isinstance(record.get("id"), str) or not record["id"].strip():
        return "missing or empty string 'id'"
    if clean_text(record["id"]) != record["id"]:  # cleaning an id could make two records one
        return "'id' has control characters or an unpaired surrogate"
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        return "missing or empty string 'text'"
    if "title" in record and record["title"] is not None and not isinstance(record["title"], str):
        return "'title' must be a string"
    if "metadata" in record and record["metadata"] is not None and not isinstance(record["metadata"], dict):
        return "'metadata' must be an object"
    if record.get("metadata"):
        size = len(json.dumps(record["metadata"], ensure_ascii=False).encode())
        if size > limits.metadata_bytes:
            return (
                f"'metadata' is {size:,} bytes as JSON, over the {limits.metadata_bytes:,}-byte metadata limit"
                " (metadata is copied into every chunk)"
            )
    return None
