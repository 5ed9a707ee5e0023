"""What parsing one file may cost, and the one rule for control characters in stored text.

Every parser works under ``ParseLimits``: a bound on its nodes (HTML markup, Markdown lines, JSON
values, PDF pages and content bytes) and on its seconds. A file past a bound is skipped with a
reason that names the bound; the other files of the run are not affected.

Time is bounded by a ``WorkClock`` that each parser checks between its own steps (a page, a record,
a few thousand nodes, each object pypdf fetches). No thread is stopped in the middle of a C call:
every step between two checks is bounded beforehand by a size or node limit, so the clock only
has to notice, at the next check, that the file has had its time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class SkipFile(Exception):
    """This file (or record) is not ingested; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on the work of parsing one file (an archive member counts as a file)."""

    seconds: float = 60.0  # parsing work per file, summed over its steps
    html_nodes: int = 300_000  # tags, comments, doctypes, CDATA and processing instructions
    markdown_lines: int = 200_000  # each line may become a block: ~3 tokens, ~1.3 KB, ~20 µs
    jsonl_values: int = 1_000_000  # JSON values in one line (commas and brackets, counted before parsing)
    metadata_bytes: int = 65_536  # one record's metadata as JSON: it is copied into every chunk row
    pdf_pages: int = 5_000
    # Decoded bytes of page content and form XObjects that text extraction parses (~1 MB/s in pypdf),
    # counted each time a page or a form draws them (see knowledge/pdf_text.py).
    pdf_content_bytes: int = 64_000_000
    # Of those, bytes drawn again from a stream already drawn: pages sharing one big content stream, a form
    # drawn over and over. They multiply the work of a small file (2.6 KB, 300 pages over one stream: 24 s),
    # so they may add up to this, or to pdf_reuse_ratio times the file's size when that is more.
    pdf_reuse_bytes: int = 1_000_000
    pdf_reuse_ratio: float = 10.0
    # Office files, e-books and XLSX are zip packages read by libraries that inflate their parts in memory:
    # the parts' declared sizes (Python's zipfile never inflates past them) must add up to at most this.
    package_bytes: int = 200_000_000
    # Of those, the markup (XML, XHTML) of a document, e-book or slide deck: it becomes HTML that BeautifulSoup
    # parses whole (~450 B and ~7 µs per node), where no clock can stop it; pictures do not count.
    package_markup_bytes: int = 40_000_000
    table_cells: int = 1_000_000  # cells of one spreadsheet (all its sheets), read a row at a time
    ocr_pages: int = 200  # scanned PDF pages read with Tesseract, per file
    ocr_seconds: float = 300.0  # Tesseract's time per file (its own clock: pages past it stay unread)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)


DEFAULT_LIMITS = ParseLimits()


class WorkClock:
    """The seconds one file has spent being parsed, summed over the stretches it runs in.

    A loader that yields documents one at a time (JSONL, zip) runs its steps inside ``running()``
    and yields outside it, so the time its consumer spends (embedding, storing) is not charged.
    """

    def __init__(
        self, limits: ParseLimits, seconds: float | None = None, what: str = "the per-file time limit"
    ) -> None:
        self.limit = limits.seconds if seconds is None else seconds
        self.what = what
        self._clock = limits.clock
        self._spent = 0.0
        self._since: float | None = None

    @contextmanager
    def running(self) -> Iterator[WorkClock]:
        self._since = self._clock()
        try:
            yield self
        finally:
            self._spent += self._clock() - self._since
            self._since = None

    @contextmanager
    def excluded(self) -> Iterator[WorkClock]:
        """Time spent inside is not charged to this clock (work that has a clock of its own, like OCR)."""
        if self._since is None:
            yield self
            return
        self._spent += self._clock() - self._since
        try:
            yield self
        finally:
            self._since = self._clock()

    def spent(self) -> float:
        return self._spent + (self._clock() - self._since if self._since is not None else 0.0)

    def over(self) -> bool:
        return self.spent() > self.limit

    def reason(self, where: str) -> str:
        return f"parsing took over {self.limit:g} s, {self.what} (stopped at {where})"

    def check(self, where: str) -> None:
        """SkipFile once the time is spent; ``where`` says how far parsing got."""
        if self.over():
            raise SkipFile(self.reason(where))

    def charged(self, items: Iterator[T]) -> Iterator[T]:
        """``items``, with the time spent producing each one (not the caller's time) on this clock."""
        while True:
            with self.running():
                item = next(items, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]


_END: Any = object()


# The one rule for control characters, applied to all text that is stored (passages, titles, headings,
# metadata) whatever the path in (CLI, chat upload, zip member, JSONL line): NUL and the other C0
# controls are removed, except tab, newline and carriage return; vertical tab and form feed separate
# lines (a form feed is a page break), so they become newlines; DEL goes too. PostgreSQL's text
# cannot hold NUL nor jsonb a \u0000, and the rest are invisible in a passage and unsafe in a terminal.
# An unpaired surrogate (a JSON "\ud800") has no UTF-8 form at all, so it becomes U+FFFD.
# Identifiers (a JSONL record's id) that this would change are refused instead: cleaning two ids
# could make them one. File and member names are not text: they are matched against the disk.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CONTROL_TABLE: dict[int, str | None] = {c: None for c in [*range(0x20), 0x7F] if chr(c) not in "\t\n\r"}
_CONTROL_TABLE |= {0x0B: "\n", 0x0C: "\n"} | dict.fromkeys(range(0xD800, 0xE000), "\ufffd")


def clean_text(text: str) -> str:
    """``text`` without NUL and the other C0 controls except tab, newline and CR (VT and FF become
    newlines), and with U+FFFD for an unpaired surrogate."""
    if _CONTROL.search(text) is None:  # the common case, at the speed of a regex scan
        return text
    return text.translate(_CONTROL_TABLE)


def clean_value(value: Any) -> Any:
    """A JSON-like value with ``clean_text`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(item) for item in value]
    return value


def brief(exc: BaseException | str, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters (parsers quote input back)."""
    text = " ".join(clean_text(str(exc)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
