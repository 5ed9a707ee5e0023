"""Text of a PDF, page by page, within bounds on pages, content bytes and seconds.

pypdf bounds what one stream may inflate to and how far one content stream is parsed, but not how
often the same work is repeated: pages may all draw one big content stream, and a page may draw a
form XObject thousands of times (1 KB of PDF: 200 draws of a 2000-operator form took 12 s). So the
decoded bytes that extraction parses are charged each time a page or a form draws them:

- before any text is extracted, every page's content streams are sized (each distinct stream is
  inflated once, as extraction would) and pages that re-draw a stream another page drew are charged
  against ``pdf_shared_content_bytes``, all of them against ``pdf_content_bytes``;
- during extraction every object pypdf fetches passes through ``_MeteredReader.get_object``: a form
  XObject adds its decoded size to the same budget, and the clock is checked there and between pages.

pypdf is pure Python, so these checks run between its own steps; none interrupts a C call.
"""

from __future__ import annotations

import io
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
from pypdf.generic import IndirectObject, StreamObject

from knowledge.bounds import ParseLimits, SkipFile, WorkClock, brief


class _Stop(BaseException):
    """Raised from inside pypdf when a bound is hit. A BaseException, like gevent's Timeout, because
    pypdf catches Exception around each form it extracts and would go on to the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Meter:
    """The file's budget of content bytes and seconds."""

    def __init__(self, limits: ParseLimits, clock: WorkClock) -> None:
        self.limits = limits
        self.clock = clock
        self.content_bytes = 0
        self.where = "the start"

    def charge(self, size: int, what: str) -> None:
        self.content_bytes += size
        if self.content_bytes > self.limits.pdf_content_bytes:
            raise _Stop(
                f"PDF content too large to extract: {what} takes it over the"
                f" {self.limits.pdf_content_bytes / 1e6:.0f} MB limit on page content and forms ({self.where})"
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
                self.meter.charge(_decoded_size(found), "a form XObject drawn again")
        return found


def _decoded_size(stream: StreamObject) -> int:
    """The stream's decoded length (pypdf keeps the result, so extraction does not inflate it again)."""
    try:
        return len(stream.get_data())
    except LimitReachedError:
        raise
    except Exception:  # a broken filter: extraction meets the same error and reports or tolerates it
        return 0


def _content_streams(page: Any) -> list[tuple[tuple[int, int] | int, StreamObject]]:
    """(identity, stream) for each content stream of a page; the identity is its object number."""
    raw = page.get("/Contents")
    resolved = raw.get_object() if raw is not None else None
    refs = [raw] if isinstance(resolved, StreamObject) else list(resolved) if isinstance(resolved, list) else []
    found = []
    for ref in refs:
        stream = ref.get_object() if hasattr(ref, "get_object") else ref
        if isinstance(stream, StreamObject):
            key = (ref.idnum, ref.generation) if isinstance(ref, IndirectObject) else id(stream)
            found.append((key, stream))
    return found


def _size_content(pages: list[Any], meter: _Meter, limits: ParseLimits) -> None:
    """Charge every page's content streams before extracting any: refuse shared-stream bombs at once."""
    first_page: dict[tuple[int, int] | int, int] = {}
    shared = 0
    for number, page in enumerate(pages, start=1):
        meter.where = f"page {number}"
        meter.check()
        for key, stream in _content_streams(page):
            size = _decoded_size(stream)
            if key in first_page:
                shared += size
                if shared > limits.pdf_shared_content_bytes:
                    raise _Stop(
                        f"PDF pages share content streams: page {number} draws the {size / 1e3:.0f} KB stream"
                        f" of page {first_page[key]} again, over the {limits.pdf_shared_content_bytes / 1e6:.0f} MB"
                        " limit on shared page content (possible decompression bomb)"
                    )
            else:
                first_page[key] = number
            meter.charge(size, "page content")


def pdf_sections(data: bytes, limits: ParseLimits, clock: WorkClock) -> tuple[str, list[tuple[int, str]]]:
    """(title, [(page number, text)]) for the pages with text; SkipFile for a broken, locked or
    too costly PDF. A PDF encrypted with an empty user password opens in any viewer, so it is read."""
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


def _extract(data: bytes, limits: ParseLimits, clock: WorkClock) -> tuple[str, list[tuple[int, str]]]:
    meter = _Meter(limits, clock)
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
    _size_content(pages, meter, limits)
    texts = []
    for number, page in enumerate(pages, start=1):
        meter.where = f"page {number}"
        meter.check()
        text = (page.extract_text() or "").strip()
        if text:
            texts.append((number, text))
    return title, texts
