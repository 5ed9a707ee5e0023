"""Text of a PDF, page by page, within bounds on pages, content bytes and seconds.

pypdf bounds what one stream may inflate to and how far one content stream is parsed, but not how
often the same work is repeated: pages may all draw one big content stream (2.6 KB of PDF, 300 pages
over one 66 KB stream: 24 s), and a page may draw a form XObject thousands of times (1 KB of PDF,
200 draws of a 2000-operator form: 12 s). So the decoded bytes that extraction parses are charged
each time a page or a form draws them, against two budgets: all content (``pdf_content_bytes``),
and content drawn again from a stream already drawn (``pdf_reuse_bytes``, or ``pdf_reuse_ratio``
times the file's size when that is more: a big file may repeat a logo on each of its pages).

- Before any text is extracted, every page's content streams are sized (each distinct stream is
  inflated once, as extraction would), so pages sharing a stream are refused at once.
- During extraction every object pypdf fetches passes through ``_MeteredReader.get_object``: a form
  XObject is charged there, once per draw, and the clock is checked there and between pages.

pypdf is pure Python, so these checks run between its own steps; none interrupts a C call.

A page without a text layer (a scan) is read with Tesseract where it is installed (knowledge/ocr.py),
on a clock of its own; the pages it could not read are listed with the reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
from pypdf.generic import IndirectObject, StreamObject

from knowledge.bounds import ParseLimits, SkipFile, WorkClock, brief

_Key = tuple[int, int]


@dataclass
class PdfText:
    """A PDF's title, its pages with text (number, text), which of them OCR read, and the unread scans."""

    title: str
    pages: list[tuple[int, str]]
    ocr_pages: set[int] = field(default_factory=set)
    unread: list[int] = field(default_factory=list)
    unread_reason: str = ""


class _Stop(BaseException):
    """Raised from inside pypdf when a bound is hit. A BaseException, like gevent's Timeout, because
    pypdf catches Exception around each form it extracts and would go on to the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Meter:
    """The file's budgets: content bytes, content bytes drawn again, and seconds."""

    def __init__(self, limits: ParseLimits, clock: WorkClock, file_bytes: int) -> None:
        self.limits = limits
        self.clock = clock
        self.reuse_limit = max(limits.pdf_reuse_bytes, int(limits.pdf_reuse_ratio * file_bytes))
        self.content_bytes = 0
        self.reused_bytes = 0
        self.first_drawn: dict[_Key, str] = {}
        self.where = "the start"

    def draw(self, key: _Key, size: int, what: str) -> None:
        """Charge one drawing of the stream ``key`` (``size`` bytes decoded)."""
        self.content_bytes += size
        first = self.first_drawn.get(key)
        if first is None:
            self.first_drawn[key] = self.where
        else:
            self.reused_bytes += size
            if self.reused_bytes > self.reuse_limit:
                raise _Stop(
                    f"PDF draws the same content again and again ({what} of {size / 1e3:.0f} KB, first drawn on"
                    f" {first}, again on {self.where}): over the {self.reuse_limit / 1e6:.0f} MB limit on"
                    " re-drawn content (possible decompression bomb)"
                )
        if self.content_bytes > self.limits.pdf_content_bytes:
            raise _Stop(
                f"PDF content too large to extract: over the {self.limits.pdf_content_bytes / 1e6:.0f} MB limit"
                f" on page content and forms (stopped at {self.where})"
            )

    def check(self) -> None:
        if self.clock.over():
            raise _Stop(self.clock.reason(self.where))


class _MeteredReader(PdfReader):
    """A PdfReader that charges each form XObject it hands out and checks the clock on every fetch."""

    meter: _Meter | None = None

    def get_object(self, indirect_reference: int | IndirectObject) -> Any:
        found = super().get_object(indirect_reference)
        if self.meter is not None:
            self.meter.check()
            if isinstance(found, StreamObject) and found.get("/Subtype") == "/Form":
                self.meter.draw(_key(indirect_reference), _decoded_size(found), "a form XObject")
        return found


def _key(reference: int | IndirectObject) -> _Key:
    if isinstance(reference, IndirectObject):
        return reference.idnum, reference.generation
    return reference, 0


def _decoded_size(stream: StreamObject) -> int:
    """The stream's decoded length (pypdf keeps the result, so extraction does not inflate it again)."""
    try:
        return len(stream.get_data())
    except LimitReachedError:
        raise
    except Exception:  # a broken filter: extraction meets the same error and reports or tolerates it
        return 0


def _content_streams(page: Any) -> list[tuple[_Key, StreamObject]]:
    """(object number, stream) for each content stream of a page (streams are always indirect objects)."""
    raw = page.get("/Contents")
    resolved = raw.get_object() if raw is not None else None
    refs = [raw] if isinstance(resolved, StreamObject) else list(resolved) if isinstance(resolved, list) else []
    found = []
    for ref in refs:
        stream = ref.get_object() if isinstance(ref, IndirectObject) else None
        if isinstance(stream, StreamObject):
            found.append((_key(ref), stream))
    return found


def _size_content(pages: list[Any], meter: _Meter) -> None:
    """Charge every page's content streams before extracting any: pages sharing a big stream are
    refused in milliseconds instead of being extracted over and over."""
    for number, page in enumerate(pages, start=1):
        meter.where = f"page {number}"
        meter.check()
        for key, stream in _content_streams(page):
            meter.draw(key, _decoded_size(stream), "a page content stream")


def pdf_sections(data: bytes, limits: ParseLimits, clock: WorkClock) -> PdfText:
    """The pages with text (scans read by OCR where it can); SkipFile for a broken, locked or too
    costly PDF. A PDF encrypted with an empty user password opens in any viewer, so it is read."""
    try:
        return _extract(data, limits, clock)
    except SkipFile:
        raise
    except _Stop as stop:
        raise SkipFile(stop.reason) from None
    except FileNotDecryptedError as exc:
        raise SkipFile("encrypted PDF (needs a password)") from exc
    except DependencyError as exc:  # AES without the optional cryptography package
        raise SkipFile(f"encrypted PDF that pypdf cannot open here: {brief(exc)}") from exc
    except LimitReachedError as exc:
        raise SkipFile(f"PDF stream over the size limit (possible decompression bomb): {brief(exc)}") from exc
    except Exception as exc:  # pypdf raises many types on broken files (IndexError, zlib.error, ...)
        raise SkipFile(f"malformed PDF: {type(exc).__name__}: {brief(exc)}") from exc


def _extract(data: bytes, limits: ParseLimits, clock: WorkClock) -> PdfText:
    meter = _Meter(limits, clock, len(data))
    reader = _MeteredReader(io.BytesIO(data))
    reader.meter = meter
    if reader.is_encrypted and not reader.decrypt(""):
        raise SkipFile("encrypted PDF (needs a password)")
    pages = list(reader.pages)  # pypdf bounds the page tree (entries, depth) while it walks it
    if len(pages) > limits.pdf_pages:
        raise SkipFile(f"PDF has {len(pages):,} pages, over the {limits.pdf_pages:,}-page limit")
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title).strip()
    _size_content(pages, meter)
    texts, scans = [], []
    for number, page in enumerate(pages, start=1):
        meter.where = f"page {number}"
        meter.check()
        text = (page.extract_text() or "").strip()
        if text:
            texts.append((number, text))
        else:
            scans.append((number, page))
    found = PdfText(title, texts)
    if scans:
        from knowledge.ocr import read_pages

        meter.where = "OCR"
        with clock.excluded():  # OCR runs on its own clock (ParseLimits.ocr_seconds)
            read = read_pages(scans, limits)
        found.pages = sorted(texts + read.pages)
        found.ocr_pages = {number for number, _ in read.pages}
        found.unread, found.unread_reason = read.unread, read.reason
    return found
