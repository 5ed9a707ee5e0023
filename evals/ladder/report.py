"""`ladder eval report` and `ladder eval compare`: the ladder table, its chart, and regression checks.

Every metric per rung is a mean with a bootstrap confidence interval and its change from the rung
below; token use and cost sit beside accuracy, as the talk's figure weighs them.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from evals.ladder import rag_metrics as rm
from evals.ladder.run import get_run

HEADLINES = ("label_accuracy", "answer_similarity", "context_recall_ids", "faithfulness_overlap", "citation_quality")


def load_results(conn: psycopg.Connection, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run = get_run(conn, run_id)
    cur = conn.cursor(row_factory=dict_row).execute(
        "SELECT rung, example_id, position, question, answer, metrics, usage, seconds, error FROM eval_results"
        " WHERE run_id = %s ORDER BY position",
        (run_id,),
    )
    return run, cur.fetchall()


def summarize(run: dict[str, Any], rows: list[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per rung, in ladder order: n, errors, each metric's (mean, low, high) and delta, tokens, cost, seconds."""
    out: list[dict[str, Any]] = []
    previous: dict[str, float] = {}
    for rung in run["rungs"]:
        mine = [r for r in rows if r["rung"] == rung]
        names = sorted({m for r in mine for m in r["metrics"]})
        metrics, deltas = {}, {}
        for name in names:
            values = [r["metrics"][name] for r in mine if name in r["metrics"]]
            mean, low, high = rm.bootstrap_ci(values, seed=seed)
            metrics[name] = (mean, low, high)
            if name in previous:
                deltas[name] = mean - previous[name]
        previous = {name: value[0] for name, value in metrics.items()}
        usage = [r["usage"] or {} for r in mine]
        out.append(
            {
                "rung": rung,
                "n": len(mine),
                "errors": sum(1 for r in mine if r["error"]),
                "metrics": metrics,
                "delta": deltas,
                "tokens": _mean([u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage]),
                "prompt_tokens": _mean([u.get("prompt_tokens", 0) for u in usage]),
                "cost_usd": _mean([u.get("estimated_cost_usd", 0.0) for u in usage]),
                "seconds": _mean([r["seconds"] or 0.0 for r in mine]),
            }
        )
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def headline(summary: list[dict[str, Any]]) -> str | None:
    """The metric the chart shows: the first of HEADLINES that every rung has."""
    for name in HEADLINES:
        if summary and all(name in s["metrics"] for s in summary):
            return name
    return None


def table_rows(summary: list[dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    rows = []
    for s in summary:
        cells = [s["rung"], str(s["n"])]
        for name in metrics:
            if name not in s["metrics"]:
                cells.append("")
                continue
            mean, low, high = s["metrics"][name]
            delta = s["delta"].get(name)
            shown = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
            cells.append(shown + (f" ({delta:+.3f})" if delta is not None else ""))
        cells += [
            f"{s['tokens']:.0f}",
            f"{s['prompt_tokens']:.0f}",
            f"{s['cost_usd']:.5f}",
            f"{s['seconds']:.1f}",
            str(s["errors"]),
        ]
        rows.append(cells)
    return rows


def write_chart(summary: list[dict[str, Any]], metric: str, path: Path, *, title: str = "") -> Path:
    """The ladder as bars with confidence intervals; a tick above each rung that improved on the one below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["rung"] for s in summary]
    means = [s["metrics"][metric][0] for s in summary]
    errors = [
        [max(0.0, m - s["metrics"][metric][1]) for m, s in zip(means, summary, strict=True)],
        [max(0.0, s["metrics"][metric][2] - m) for m, s in zip(means, summary, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4.2))
    bars = ax.bar(names, means, yerr=errors, capsize=4, color="#4C72B0")
    for i, (bar, s) in enumerate(zip(bars, summary, strict=True)):
        label = f"{means[i]:.0%}"
        if i and s["delta"].get(metric, 0.0) > 0:
            label += " \u2713"  # kept: it climbed
        ax.text(bar.get_x() + bar.get_width() / 2, min(1.02, means[i] + errors[1][i] + 0.02), label, ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"The ladder: {metric}")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(
    run: dict[str, Any], summary: list[dict[str, Any]], metrics: list[str], chart: Path | None, path: Path
) -> Path:
    head = ["rung", "n", *metrics, "tokens/answer", "prompt tokens/answer", "cost/answer (USD)", "s/answer", "errors"]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(summary, metrics)
    )
    image = ""
    if chart is not None and chart.is_file():
        image = f'<img alt="ladder chart" src="data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()}">'
    page = (
        f"<!doctype html><meta charset=utf-8><title>Ladder run {run['id']}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}</style>"
        f"<h1>Run {run['id']}: {html.escape(run['dataset'])} with {html.escape(run['model'])}</h1>{image}"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{body}</table>"
        "<p>mean [95% bootstrap interval] (change from the rung below)</p>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def diff(rows: list[dict[str, Any]], rung_a: str, rung_b: str, metric: str) -> list[dict[str, Any]]:
    """Examples whose ``metric`` changed between two rungs, biggest change first."""
    a = {r["example_id"]: r for r in rows if r["rung"] == rung_a}
    b = {r["example_id"]: r for r in rows if r["rung"] == rung_b}
    changed = []
    for example_id in a.keys() & b.keys():
        before, after = a[example_id]["metrics"].get(metric), b[example_id]["metrics"].get(metric)
        if before is None or after is None or math.isclose(before, after):
            continue
        changed.append(
            {
                "example_id": example_id,
                "question": a[example_id]["question"],
                "before": before,
                "after": after,
                "answer_before": a[example_id]["answer"],
                "answer_after": b[example_id]["answer"],
            }
        )
    return sorted(changed, key=lambda c: -abs(c["after"] - c["before"]))


def compare(
    conn: psycopg.Connection, run_a: int, run_b: int, metric: str, *, rung: str | None = None, max_drop: float = 0.0
) -> dict[str, Any]:
    """Whether run B holds ``metric`` (on ``rung``, default the top rung both have) within ``max_drop`` of run A."""
    found = []
    for run_id in (run_a, run_b):
        run, rows = load_results(conn, run_id)
        found.append({s["rung"]: s for s in summarize(run, rows)})
    common = [r for r in found[0] if r in found[1]]
    if not common:
        raise ValueError(f"runs {run_a} and {run_b} share no rung")
    chosen = rung or common[-1]
    if chosen not in common or metric not in found[0][chosen]["metrics"] or metric not in found[1][chosen]["metrics"]:
        raise ValueError(f"both runs need {metric!r} on rung {chosen!r}")
    before, after = found[0][chosen]["metrics"][metric][0], found[1][chosen]["metrics"][metric][0]
    return {
        "rung": chosen,
        "metric": metric,
        "a": before,
        "b": after,
        "drop": before - after,
        "max_drop": max_drop,
        "ok": before - after <= max_drop,
    }
