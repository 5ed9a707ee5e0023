"""``ladder bench sheets``: ten aggregate questions over the Palmer penguins, loaded from CSV and from XLSX.

The table (344 penguins, CC0) comes from the ``palmerpenguins`` package and is written out in the run
as a CSV file and as an XLSX workbook; each is loaded with ``ladder db load-file``'s code
(tools/sql/sheets.py) into a database of its own. The baseline, measured in the same run: a
hand-written SQL query per question, run on each loaded database, must give the gold answer that
pandas computes from the package's DataFrame (so the loader and its inferred types are right). Then
each question goes through the agent (the configured chat model: the embedded one by default), which
routes it to the SQL tool; its execution accuracy is the share of answers whose result rows hold the
gold answer. The SQL the model wrote is printed beside each verdict.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.config import Settings


@dataclass(frozen=True)
class Question:
    text: str
    gold: Callable[[Any], Any]  # the answer from the DataFrame: a number, a string, or {group: number}
    sql: str  # a hand-written query on the loaded table, for the baseline


QUESTIONS = [
    Question("How many penguins are in the penguins table?", lambda d: len(d), "SELECT count(*) FROM penguins"),
    Question(
        "How many different islands appear in the penguins table?",
        lambda d: d.island.nunique(),
        "SELECT count(DISTINCT island) FROM penguins",
    ),
    Question(
        "What is the average body mass in grams of Gentoo penguins?",
        lambda d: d[d.species == "Gentoo"].body_mass_g.mean(),
        "SELECT avg(body_mass_g) FROM penguins WHERE species = 'Gentoo'",
    ),
    Question(
        "What is the longest flipper length in mm among the penguins?",
        lambda d: d.flipper_length_mm.max(),
        "SELECT max(flipper_length_mm) FROM penguins",
    ),
    Question(
        "How many penguins were observed in the year 2008?",
        lambda d: int((d.year == 2008).sum()),
        "SELECT count(*) FROM penguins WHERE year = 2008",
    ),
    Question(
        "How many female penguins are there?",
        lambda d: int((d.sex == "female").sum()),
        "SELECT count(*) FROM penguins WHERE sex = 'female'",
    ),
    Question(
        "How many penguins are there of each species?",
        lambda d: d.groupby("species").size().to_dict(),
        "SELECT species, count(*) FROM penguins GROUP BY species",
    ),
    Question(
        "What is the average bill length in mm of the penguins on each island?",
        lambda d: d.groupby("island").bill_length_mm.mean().to_dict(),
        "SELECT island, avg(bill_length_mm) FROM penguins GROUP BY island",
    ),
    Question(
        "Which penguin species has the highest average body mass?",
        lambda d: d.groupby("species").body_mass_g.mean().idxmax(),
        "SELECT species FROM penguins GROUP BY species ORDER BY avg(body_mass_g) DESC LIMIT 1",
    ),
    Question(
        "What is the smallest bill depth in mm of Adelie penguins on Dream island?",
        lambda d: d[(d.species == "Adelie") & (d.island == "Dream")].bill_depth_mm.min(),
        "SELECT min(bill_depth_mm) FROM penguins WHERE species = 'Adelie' AND island = 'Dream'",
    ),
]


def _close(value: Any, gold: float) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and abs(number - gold) <= max(0.05, 5e-4 * abs(gold))  # ROUND(x, 1) still counts


def matches(rows: list[list[Any]], gold: Any) -> bool:
    """Whether result rows hold the gold answer: one row with the number (or the name) for a single answer;
    for a grouped one, one row per group holding the group's name and its number."""
    if isinstance(gold, dict):
        if len(rows) != len(gold):
            return False
        found = {}
        for row in rows:
            names = [v for v in row if isinstance(v, str) and v in gold]
            if len(names) != 1 or not any(_close(v, float(gold[names[0]])) for v in row if v not in gold):
                return False
            found[names[0]] = True
        return len(found) == len(gold)
    if len(rows) != 1:
        return False
    if isinstance(gold, str):
        return any(isinstance(v, str) and v.strip().lower() == gold.lower() for v in rows[0])
    return any(_close(v, float(gold)) for v in rows[0])  # PostgreSQL's numeric reaches JSON as a string


def write_penguins(folder: Path) -> tuple[Any, dict[str, Path]]:
    """The package's DataFrame, written as penguins.csv and as penguins.xlsx (sheet "penguins")."""
    try:
        from palmerpenguins import load_penguins
    except ImportError as exc:
        raise RuntimeError("the benchmark needs the palmerpenguins package: pip install -e '.[test]'") from exc
    frame = load_penguins()
    files = {"csv": folder / "penguins.csv", "xlsx": folder / "penguins.xlsx"}
    frame.to_csv(files["csv"], index=False)
    frame.to_excel(files["xlsx"], index=False, sheet_name="penguins")
    return frame, files


def load_sources(settings: Settings, files: dict[str, Path]) -> dict[str, str]:
    """Each file loaded and registered as bench_penguins_<format>; format -> data source name."""
    from knowledge.db import Database
    from tools.sql.sheets import load_spreadsheet
    from tools.sql.sources import add_source

    names = {}
    with Database(settings.database_config()) as db, db.connection() as conn:
        for kind, path in files.items():
            loaded, _ = load_spreadsheet(db.url, path, f"bench_penguins_{kind}", 10_000_000)
            add_source(conn, loaded.name, loaded.url)
            names[kind] = loaded.name
    return names


def gold_sql_scores(settings: Settings, sources: dict[str, str], golds: list[Any]) -> dict[str, int]:
    """The baseline: how many hand-written queries give the gold answer on each loaded database."""
    from knowledge.db import Database
    from tools.sql.sources import get_source

    scores = {}
    with Database(settings.database_config()) as db, db.connection() as conn:
        for kind, name in sources.items():
            source = get_source(conn, name, settings.data_sources)
            scores[kind] = sum(matches(source.run_sql(q.sql).rows, g) for q, g in zip(QUESTIONS, golds, strict=True))
    return scores


def ask_agent(settings: Settings, sources: dict[str, str], golds: list[Any]) -> list[dict[str, Any]]:
    """Every question through the agent on every loaded database: the SQL it ran and whether it was right."""
    from agent.core.assemble import open_agent
    from agent.core.turn import TurnRequest

    answers = []
    with open_agent(settings) as agent:
        for kind, name in sources.items():
            for question, gold in zip(QUESTIONS, golds, strict=True):
                started = time.perf_counter()
                result = agent.ask(TurnRequest(question.text, settings.collection, None, None, name, face="cli"))
                data = result.data or {}
                rows = data.get("rows") or []
                answers.append(
                    {
                        "format": kind,
                        "question": question.text,
                        "sql": data.get("sql", ""),
                        "rows": rows[:5],
                        "gold": gold,
                        "correct": not data.get("error") and matches(rows, gold),
                        "error": data.get("error") or (None if result.data else "not answered from the database"),
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
    return answers


def _plain(value: Any) -> Any:
    """Numpy numbers from pandas as Python ones, rounded for printing."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    return round(value, 3) if isinstance(value, float) else value


def run_sheets_benchmark(settings: Settings, formats: list[str], *, as_json: bool = False) -> dict[str, Any]:
    """Load the penguins from each format, score the gold SQL (baseline) and the agent; print and return it."""
    with tempfile.TemporaryDirectory(prefix="ladder-bench-sheets-") as tmp:
        frame, files = write_penguins(Path(tmp))
        sources = load_sources(settings, {k: files[k] for k in formats})
    golds = [_plain(q.gold(frame)) for q in QUESTIONS]
    baseline = gold_sql_scores(settings, sources, golds)
    answers = ask_agent(settings, sources, golds)
    report: dict[str, Any] = {
        "model": settings.chat_model or settings.local_model,
        "questions": len(QUESTIONS),
        "formats": {},
    }
    for kind in sources:
        mine = [a for a in answers if a["format"] == kind]
        correct = sum(a["correct"] for a in mine)
        report["formats"][kind] = {
            "gold_sql": baseline[kind],
            "agent": correct,
            "execution_accuracy": round(correct / len(QUESTIONS), 3),
            "vs_gold_sql": round(correct / baseline[kind], 3) if baseline[kind] else None,
        }
    report["answers"] = answers
    print(json.dumps(report, default=str, ensure_ascii=False) if as_json else _report_text(report))
    return report


def _report_text(report: dict[str, Any]) -> str:
    lines = []
    for answer in report["answers"]:
        mark = "✓" if answer["correct"] else "✗"
        lines.append(f"{mark} [{answer['format']}] {answer['question']} ({answer['seconds']} s)")
        lines.append(f"    SQL: {' '.join((answer['sql'] or '(none)').split())}")
        if not answer["correct"]:
            lines.append(f"    got {answer['rows'] or answer['error']}; gold {answer['gold']}")
    for kind, score in report["formats"].items():
        lines.append(
            f"{kind}: execution accuracy {score['agent']}/{report['questions']} = {score['execution_accuracy']:.2f}"
            f" with {report['model']} (gold SQL on the same loaded table: {score['gold_sql']}/{report['questions']};"
            f" ratio {score['vs_gold_sql']})"
        )
    return "\n".join(lines)
