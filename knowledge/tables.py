"""Spreadsheets (CSV, XLSX) read into sheets, tables written as Markdown, and tables cut into chunks by rows.

A sheet is its header (the first row with a value) and its rows, trailing empty columns and empty
rows dropped. XLSX is read with openpyxl in read-only mode, a row at a time, the cells counted
against ``ParseLimits.table_cells``; CSV with the standard csv module (strict UTF-8, the delimiter
sniffed among ``, ; tab |``). The same sheets are ingested as text (one section per sheet, a
Markdown table) and loaded as data (tools/sql/sheets.py).

Chunking: a Markdown table in a section is never cut inside a row, and every chunk of a long table
starts with the table's header, so each chunk can be read (and embedded) on its own.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from knowledge.bounds import ParseLimits, SkipFile, WorkClock, brief, clean_text
from knowledge.packages import open_package

SHEET_SUFFIXES = {".csv", ".xlsx"}
CSV_DELIMITERS = ",;\t|"
MAX_CELL_CHARS = 2000  # a cell past this is cut in the text (not in the data): one row must fit a chunk
_CHECK_EVERY = 1024  # rows between two looks at the clock
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_SEPARATOR = re.compile(r"^\s*\|(\s*:?-{1,}:?\s*\|)+\s*$")


@dataclass
class Sheet:
    """One sheet: its name, its header and its rows (str cells for CSV, typed values for XLSX)."""

    name: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)


def read_sheets(data: bytes, suffix: str, name: str, limits: ParseLimits, clock: WorkClock) -> list[Sheet]:
    """The sheets of a CSV (one, called ``name``) or XLSX file that hold a header; SkipFile when none does."""
    if suffix == ".csv":
        sheets = [_csv_sheet(data, name, limits, clock)]
    elif suffix == ".xlsx":
        sheets = _xlsx_sheets(data, limits, clock)
    else:
        raise SkipFile(f"not a spreadsheet: {suffix or '(no suffix)'}")
    kept = [sheet for sheet in sheets if sheet.header]
    if not kept:
        raise SkipFile("the spreadsheet is empty: no sheet has a value")
    return kept


def _csv_sheet(data: bytes, name: str, limits: ParseLimits, clock: WorkClock) -> Sheet:
    if b"\x00" in data[:8192]:
        raise SkipFile("not a CSV file: binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"CSV is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})") from exc
    try:
        dialect: Any = csv.Sniffer().sniff(text[:65536], delimiters=CSV_DELIMITERS)
    except csv.Error:  # one column, or too little to tell: a comma
        dialect = csv.excel
    try:
        rows = _bounded_rows(csv.reader(io.StringIO(text, newline=""), dialect), limits, clock)
        return _sheet(name, rows)
    except csv.Error as exc:  # a field over the csv module's size limit, a NUL, a bad quote
        raise SkipFile(f"malformed CSV: {brief(exc)}") from exc


def _xlsx_sheets(data: bytes, limits: ParseLimits, clock: WorkClock) -> list[Sheet]:
    from openpyxl import load_workbook

    archive = open_package(data, "XLSX workbook", limits)
    if "xl/workbook.xml" not in archive.namelist():
        raise SkipFile("not an XLSX workbook (the package has no xl/workbook.xml)")
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises KeyError, InvalidFileException, XML errors ...
        raise SkipFile(f"could not read the XLSX workbook: {type(exc).__name__}: {brief(exc)}") from exc
    sheets: list[Sheet] = []
    cells = [0]  # shared by the sheets: the limit is on the whole workbook
    try:
        for sheet in book.worksheets:
            rows = _bounded_rows(sheet.iter_rows(values_only=True), limits, clock, cells)
            sheets.append(_sheet(clean_text(sheet.title), rows))
    except SkipFile:
        raise
    except Exception as exc:  # a truncated or corrupt part met while reading rows
        raise SkipFile(f"could not read the XLSX workbook: {type(exc).__name__}: {brief(exc)}") from exc
    finally:
        book.close()
    return sheets


def _bounded_rows(
    rows: Iterable[Iterable[Any]], limits: ParseLimits, clock: WorkClock, cells: list[int] | None = None
) -> list[list[Any]]:
    """The rows, as lists, until the workbook's cells pass the limit (SkipFile) or the clock runs out."""
    cells = cells if cells is not None else [0]
    taken: list[list[Any]] = []
    for number, row in enumerate(rows, start=1):
        if number % _CHECK_EVERY == 0:
            clock.check(f"row {number:,}")
        values = list(row)
        cells[0] += len(values)
        if cells[0] > limits.table_cells:
            raise SkipFile(f"spreadsheet has over {limits.table_cells:,} cells, over the cell limit (row {number:,})")
        taken.append(values)
    return taken


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _sheet(name: str, rows: list[list[Any]]) -> Sheet:
    """Header = the first row with a value; empty rows and trailing empty columns dropped."""
    rows = [row for row in rows if not all(_empty(v) for v in row)]
    if not rows:
        return Sheet(name=name, header=[])
    width = max((max((i for i, v in enumerate(row) if not _empty(v)), default=-1) + 1 for row in rows), default=0)
    padded = [[*row[:width], *[None] * (width - len(row))] for row in rows]
    header = [cell_text(v).strip() or f"column_{i + 1}" for i, v in enumerate(padded[0])]
    return Sheet(name=name, header=header, rows=padded[1:])


def cell_text(value: Any) -> str:
    """A cell as text: integral floats without '.0', dates in ISO form, booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return clean_text(str(value))


def markdown_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A Markdown pipe table; '|' in a cell is escaped, line breaks become spaces, long cells are cut."""

    def cell(value: Any) -> str:
        text = " ".join(cell_text(value).split()).replace("|", "\\|")
        return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def normalize_tables(markdown: str) -> str:
    """Tables as converters write them, made regular: a separator line under the header (odfpy's HTML has
    none), and an all-empty header (a Word table without a header row) replaced by the first row."""
    out: list[str] = []
    for block, is_table in table_blocks(markdown):
        if not is_table:
            out.append(block)
            continue
        lines = block.split("\n")
        if not _SEPARATOR.match(lines[1]):
            lines.insert(1, "|" + " --- |" * _cells(lines[0]))
        if not lines[0].replace("|", "").strip() and len(lines) > 3:
            lines = [lines[2], lines[1], *lines[3:]]
        out.append("\n".join(lines))
    return "\n".join(out)


def _cells(line: str) -> int:
    return max(1, len(re.split(r"(?<!\\)\|", line.strip().strip("|"))))


def table_blocks(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into (block, is_table): a table is two or more consecutive lines that start and end with '|'."""
    blocks: list[tuple[str, bool]] = []
    run: list[str] = []
    kind: bool | None = None

    def flush() -> None:
        if run:
            blocks.append(("\n".join(run), bool(kind)))

    lines = text.split("\n")
    for index, line in enumerate(lines):
        in_table = bool(_TABLE_LINE.match(line)) and (
            kind is True or (index + 1 < len(lines) and bool(_TABLE_LINE.match(lines[index + 1])))
        )
        if in_table != kind:
            flush()
            run, kind = [], in_table
        run.append(line)
    flush()
    return blocks


def table_pieces(block: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """A table cut into pieces of whole rows, each starting with the header (and its separator line),
    each within ``max_tokens`` unless one row alone is over it (a row is never cut)."""
    lines = block.strip("\n").split("\n")
    head = lines[:2] if len(lines) > 1 and _SEPARATOR.match(lines[1]) else lines[:1]
    rows = lines[len(head) :]
    if not rows:
        return [block.strip()]
    head_cost = sum(count(line) + 1 for line in head)
    pieces: list[str] = []
    current: list[str] = []
    used = head_cost
    for row, cost in zip(rows, _costs(rows, count), strict=True):
        if current and used + cost > max_tokens:
            pieces.append("\n".join([*head, *current]))
            current, used = [], head_cost
        current.append(row)
        used += cost
    pieces.append("\n".join([*head, *current]))
    return pieces


def _costs(rows: list[str], count: Callable[[str], int]) -> Iterator[int]:
    for row in rows:
        yield count(row) + 1  # the line break
