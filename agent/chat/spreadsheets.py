"""A spreadsheet dropped into the chat is offered both ways: ingested as text (the Ingest button), or loaded
as data (one table per sheet in a read-only database of its own, tools/sql/sheets.py) for SQL questions.

With logins on, loading is refused: registered databases are shared by every user of the chat, while an
upload belongs to the user who made it; the operator loads shared data with ``ladder db load-file``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from knowledge.db import Database
from knowledge.errors import user_errors
from knowledge.tables import SHEET_SUFFIXES
from tools.sql.sheets import load_spreadsheet, safe_identifier
from tools.sql.sources import add_source

LOGIN_REFUSAL = (
    "**Not loaded:** with logins on, a database would be shared by every user of this chat. Ask the operator"
    " to load it with `ladder db load-file`; **Ingest** still adds it to your own collection as text."
)


def spreadsheets(files: list[str] | None) -> list[Path]:
    """The dropped files that are spreadsheets (CSV, XLSX)."""
    return [Path(f) for f in files or [] if Path(f).suffix.lower() in SHEET_SUFFIXES]


def _code(text: str) -> str:  # a client-chosen name, shown as a code span so no Markdown in it runs
    return "`" + text.replace("`", "'") + "`"


def _plain(text: str) -> str:  # reasons may quote the input back
    return re.sub(r"([\\`*_\[\]()<>!#|~])", r"\\\1", text)


def offer(files: list[str] | None) -> str:
    """What a drop of spreadsheets can become, or "" when none was dropped."""
    found = spreadsheets(files)
    if not found:
        return ""
    names = ", ".join(_code(p.name) for p in found)
    return (
        f"{names}: a spreadsheet. **Ingest** adds its rows to the collection as text to search;"
        " **Load as data** makes it a database (a table per sheet) for questions about its numbers, answered"
        " with SQL."
    )


def load_as_data(db: Database, files: list[str] | None, max_bytes: int) -> tuple[str, list[str]]:
    """Load each dropped spreadsheet as a database named after it; (a report in Markdown, the names loaded)."""
    found = spreadsheets(files)
    if not found:
        return "Drop a .csv or .xlsx file first.", []
    lines: list[str] = []
    loaded_names: list[str] = []
    for path in found:
        name = safe_identifier(path.stem, set(), set(), "sheet")
        try:
            loaded, tables = load_spreadsheet(db.url, path, name, max_bytes)
            with db.connection() as conn:
                add_source(conn, loaded.name, loaded.url)
        except user_errors() as exc:
            lines.append(f"- {_code(path.name)} not loaded: {_plain(str(exc))}")
            continue
        shown = ", ".join(f"{_code(t.name)} ({t.rows} rows)" for t in tables)
        lines.append(f"- {_code(path.name)} loaded as the database {_code(loaded.name)}: {shown}")
        loaded_names.append(loaded.name)
    return "\n".join(lines), loaded_names


def database_choice(names: list[str], choices: list[str]) -> dict[str, Any]:
    """The Database dropdown's update: the new list, with the last database loaded picked."""
    import gradio as gr

    return gr.update(choices=choices, value=names[-1]) if names else gr.update(choices=choices)
