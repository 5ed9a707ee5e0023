"""The console's Evaluations page, server side: the runs, a run's ladder table (as `ladder eval report`
shows it, with its chart), and the per-example diff of two rungs or two runs, expected against actual.
Every method checks the caller is an operator first (ConsoleService.guard).
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from agent.chat.console.service import ConsoleService, _short
from agent.records.evalsets import EvalSetStoreError, parse_set_ref
from evals.eval_sets import EvalSetError, load_eval_set, named_set
from evals.ladder.report import headline, load_results, summarize, table_rows, write_chart
from evals.ladder.run import run_ladder
from knowledge.errors import LadderError

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often a started run's progress is shown
RUN_COLUMNS = ["run", "dataset", "model", "collection", "rungs", "examples", "status", "created"]
DIFF_COLUMNS = ["example", "question", "expected", "answer A", "score A", "answer B", "score B"]


class Evaluations:
    """Runs, reports and diffs for operators."""

    def __init__(self, console: ConsoleService) -> None:
        self.console = console
        self.db = console.db

    def runs(self, request: gr.Request | None) -> list[list[Any]]:
        self.console.guard(request)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT id, dataset, model, collection, rungs, n_examples, status, created_at FROM eval_runs"
                " ORDER BY id DESC LIMIT 200"
            ).fetchall()
        return [[i, d, m, c or "", ", ".join(r), n, s, f"{at:%Y-%m-%d %H:%M}"] for i, d, m, c, r, n, s, at in rows]

    def _results(self, run_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            with self.db.connection() as conn:
                return load_results(conn, int(run_id))
        except (LadderError, TypeError, ValueError) as exc:
            raise gr.Error(f"no such run: {exc}", print_exception=False) from None

    def report(self, request: gr.Request | None, run_id: Any) -> tuple[Any, str | None]:
        """The ladder table (metrics with 95% intervals and the change from the rung below) and its chart."""
        self.console.guard(request)
        found, rows = self._results(run_id)
        summary = summarize(found, rows)
        metrics = sorted({m for s in summary for m in s["metrics"]})
        head = ["rung", "n", *metrics, "tokens/answer", "prompt tokens/answer", "cost/answer $", "s/answer", "errors"]
        chosen = headline(summary)
        chart = None
        if chosen and summary:
            chart = str(Path(tempfile.mkdtemp(prefix="ladder-chart-")) / f"run-{found['id']}.png")
            write_chart(summary, chosen, Path(chart), title=f"{found['dataset']}: {chosen} per rung")
        return gr.update(value=table_rows(summary, metrics), headers=head), chart

    def _expected(self, dataset: str) -> dict[str, str]:
        """The reference answers of the run's set, when it can still be read (a file may be gone)."""
        try:
            if dataset.startswith("set:"):
                name, _, version = dataset[4:].partition("@")
                with self.db.connection() as conn:
                    evalset = named_set(conn, name, int(version) if version else None)
            else:
                evalset = load_eval_set(dataset)
        except (EvalSetError, LadderError, OSError, ValueError):
            return {}
        return {e.id: e.reference_answer or e.label or "" for e in evalset.examples}

    def diff(
        self, request: gr.Request | None, run_a: Any, rung_a: str, run_b: Any, rung_b: str, metric: str
    ) -> list[list[Any]]:
        """Every example of rung A of run A beside rung B of run B (the same run for two rungs)."""
        self.console.guard(request)
        found_a, rows_a = self._results(run_a)
        _, rows_b = self._results(run_b or run_a)
        rung_a = rung_a or found_a["rungs"][0]
        rung_b = rung_b or rung_a
        a = {r["example_id"]: r for r in rows_a if r["rung"] == rung_a}
        b = {r["example_id"]: r for r in rows_b if r["rung"] == rung_b}
        expected = self._expected(found_a["dataset"])

        def score(row: dict[str, Any] | None) -> str:
            value = (row or {}).get("metrics", {}).get(metric) if metric else None
            return f"{value:.3f}" if isinstance(value, int | float) else ""

        return [
            [i, _short((a.get(i) or b.get(i) or {}).get("question"), 80), _short(expected.get(i), 300),
             _short((a.get(i) or {}).get("answer"), 300), score(a.get(i)),
             _short((b.get(i) or {}).get("answer"), 300), score(b.get(i))]
            for i in sorted(a.keys() | b.keys())
        ]  # fmt: skip

    def start(
        self, request: gr.Request | None, set_ref: str, rungs: str, limit: Any, collection: str = ""
    ) -> Iterator[str]:
        """Run the ladder on a named set (``set:NAME[@V]``) asking ``collection`` (default: the chat's),
        on a worker thread, showing its progress."""
        self.console.guard(request)
        evalset = self._named(set_ref)
        ladder = [r.strip() for r in (rungs or "").split(",") if r.strip()] or ["baseline", "+retrieval"]
        count = min(int(limit) if limit else len(evalset.examples), len(evalset.examples))
        events: queue.Queue[str] = queue.Queue()
        outcome: dict[str, Any] = {}
        agent = self.console.handlers.agent

        def work() -> None:
            try:
                outcome["run"] = run_ladder(
                    agent.settings, agent.kb, evalset, rungs=ladder, limit=count,
                    collection=(collection or "").strip() or agent.settings.collection,
                    progress=lambda rung, position, n: events.put(rung),
                )  # fmt: skip
            except (LadderError, ValueError) as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # the page says it failed; the server log keeps the trace
                log.exception("a console evaluation run failed")
                outcome["error"] = f"the run failed unexpectedly ({type(exc).__name__}); see the server log"

        worker = threading.Thread(target=work, name="ladder-console-eval", daemon=True)
        worker.start()
        done = 0
        yield f"Started {evalset.name}: {len(ladder)} rungs × {count} examples."
        while worker.is_alive() or not events.empty():  # ends with the run, which is bounded by its examples
            try:
                rung = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            done += 1
            yield f"{evalset.name}: {done}/{len(ladder) * count} answers (now at {rung})"
        worker.join()
        if "error" in outcome:
            raise gr.Error(outcome["error"], print_exception=False)
        yield f"Run **{outcome['run']}** done ({done} answers): refresh the runs to see it."

    def _named(self, set_ref: str) -> Any:
        try:
            ref = parse_set_ref((set_ref or "").strip())
            if ref is None:
                raise EvalSetStoreError("name a set as set:NAME or set:NAME@VERSION")
            with self.db.connection() as conn:
                return named_set(conn, ref[0], ref[1])
        except (EvalSetStoreError, EvalSetError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
