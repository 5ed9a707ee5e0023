"""The evaluation commands: run the ladder, report it, compare runs, sweep chunk sizes.
Wired into ``ladder eval`` by agent/cli.py (``ladder eval sql`` lives in agent/cli_data.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli.common import err, load_settings, out, output_file, run


def eval_run(
    dataset: Annotated[
        str, typer.Argument(help="pubmedqa, fanoutqa, sql-eval, a JSONL eval set, or a named set: set:NAME[@VERSION].")
    ],
    ladder: Annotated[
        str,
        typer.Option(
            help="Rungs, in order: baseline,+fewshot,+retrieval,+hybrid,+hyde,+rerank,+decompose,+factcheck,"
            "+finetune (with --adapter)"
        ),
    ] = "baseline,+fewshot,+retrieval,+hybrid,+hyde,+rerank,+decompose,+factcheck",
    model: Annotated[str | None, typer.Option(help="Chat model (default: the configured one).")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge model for the LLM metrics (default: none).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="The first N examples.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Examples answered at once.")] = 1,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Ask this collection.")] = None,
    resume: Annotated[int | None, typer.Option(help="Finish this run (after a crash).")] = None,
    version: Annotated[int | None, typer.Option(min=1, help="The named set's version (as set:NAME@V).")] = None,
    adapter: Annotated[str | None, typer.Option(help="The LoRA adapter the +finetune rung serves.")] = None,
) -> None:
    """Answer the eval set at every rung of the ladder, scoring and storing each answer (resumable)."""

    def body() -> None:
        from tqdm import tqdm

        from agent.core.assemble import open_knowledge_base
        from evals.ladder.run import run_ladder

        settings = load_settings()
        evalset = _eval_set(settings, dataset, version)
        rungs = [r.strip() for r in ladder.split(",") if r.strip()]
        total = len(rungs) * min(limit or len(evalset.examples), len(evalset.examples))
        with open_knowledge_base(settings) as kb, tqdm(total=total, desc="ladder", unit="answer") as bar:

            def progress(rung: str, position: int, count: int) -> None:
                bar.set_postfix_str(rung)
                bar.update(1)

            run_id = run_ladder(
                settings,
                kb,
                evalset,
                rungs=rungs,
                model=model,
                judge_model=judge or None,
                limit=limit,
                concurrency=concurrency,
                collection=collection,
                resume=resume,
                progress=progress,
                adapter=adapter,
            )
        out.print(f"run {run_id} done: ladder eval report {run_id}", highlight=False, markup=False)

    run(body)


def _eval_set(settings: Any, dataset: str, version: int | None) -> Any:
    """The set to run: a named one from the database (``set:NAME[@V]``, or ``--version``), else a file or built-in."""
    from agent.records.evalsets import parse_set_ref
    from evals.eval_sets import load_eval_set, named_set

    ref = parse_set_ref(dataset) if dataset.startswith("set:") else None
    if ref is None:
        if version is not None:
            raise typer.BadParameter("--version needs a named set (set:NAME)", param_hint="--version")
        return load_eval_set(dataset)
    from knowledge.db import Database

    with Database(settings.database_config()) as db, db.connection() as conn:
        return named_set(conn, ref[0], ref[1] if ref[1] is not None else version)


def eval_sets(
    name: Annotated[str | None, typer.Argument(help="Show this set's items (set NAME or NAME@VERSION).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The named eval sets (built in the console's review queue) with their versions; or one set's items."""

    def body() -> None:
        from agent.records.evalsets import list_sets, parse_set_ref, set_items
        from knowledge.db import Database

        ref = parse_set_ref(f"set:{name}") if name else None
        with Database(load_settings().database_config()) as db, db.connection() as conn:
            rows = set_items(conn, *ref)[1] if ref else list_sets(conn)
        if as_json:
            for row in rows:
                print(json.dumps(row, default=str, ensure_ascii=False))
            return
        keys = ("item_id", "question", "reference_answer") if ref else ("name", "version", "items", "updated_at")
        table = Table(*keys)
        for row in rows:
            table.add_row(*(str(row[k])[:80] for k in keys))
        out.print(table)

    run(body)


def _metric_cell(rung: dict[str, Any], name: str) -> str:
    """One rung's mean of a metric with its change from the rung below; empty where the rung lacks it."""
    if name not in rung["metrics"]:
        return ""
    delta = rung["delta"].get(name)
    return f"{rung['metrics'][name][0]:.2f}" + (f" ({delta:+.2f})" if delta else "")


def _ladder_table(run_id: int, found: dict[str, Any], summary: list[dict[str, Any]], metrics: list[str]) -> Table:
    """The run's metrics and costs per rung."""
    # Metrics down, rungs across: eight rungs fit a terminal, a dozen metrics do not.
    table = Table("metric", *(s["rung"] for s in summary), title=f"run {run_id}: {found['dataset']}")
    for name in metrics:
        table.add_row(name, *(_metric_cell(s, name) for s in summary))
    table.add_row("tokens/answer", *(f"{s['tokens']:.0f}" for s in summary))
    table.add_row("prompt tokens/answer", *(f"{s['prompt_tokens']:.0f}" for s in summary))
    table.add_row("cost/answer $", *(f"{s['cost_usd']:.4f}" for s in summary))
    table.add_row("s/answer", *(f"{s['seconds']:.1f}" for s in summary))
    table.add_row("errors", *(str(s["errors"]) for s in summary))
    return table


def _write_ladder_chart(
    found: dict[str, Any], summary: list[dict[str, Any]], chosen: str | None, chart: Path | None, html_file: Path | None
) -> Path | None:
    """Draw the chosen metric per rung when a chart or an HTML report is asked for; returns the chart's path."""
    if not (chosen and (chart or html_file)):
        return chart
    from evals.ladder.report import write_chart

    chart_path = chart or html_file.with_suffix(".png")  # type: ignore[union-attr]
    title = f"{found['dataset']}: {chosen} per rung ({found['model']}, n={found['n_examples']})"
    write_chart(summary, chosen, chart_path, title=title)
    out.print(f"chart: {chart_path}", highlight=False, markup=False)
    return chart_path


def _print_rung_diff(found: dict[str, Any], rows: list[dict[str, Any]], rung: str, chosen: str | None) -> None:
    """The examples whose score on the chosen metric changed from the rung below ``rung``."""
    from evals.ladder.report import diff as example_diff

    names = list(found["rungs"])
    if rung not in names or names.index(rung) == 0 or not chosen:
        raise typer.BadParameter("give a rung above the first, and a metric", param_hint="--diff")
    below = names[names.index(rung) - 1]
    for change in example_diff(rows, below, rung, chosen):
        out.print(
            f"{change['example_id']}: {change['before']:.2f} -> {change['after']:.2f}  {change['question'][:80]}",
            highlight=False,
            markup=False,
        )


def eval_report(
    run_id: Annotated[int, typer.Argument(help="The run (from `ladder eval run`).")],
    chart: Annotated[Path | None, typer.Option(help="Write the ladder chart (PNG) here.", callback=output_file)] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report here.", callback=output_file)
    ] = None,
    diff: Annotated[str | None, typer.Option(help="Show the examples that changed at this rung.")] = None,
    metric: Annotated[str | None, typer.Option(help="The metric for the chart and --diff.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The ladder table: every metric per rung with a 95% bootstrap interval and the change from the rung below."""

    def body() -> None:
        from evals.ladder.report import headline, load_results, summarize, write_html
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            found, rows = load_results(conn, run_id)
        summary = summarize(found, rows)
        if as_json:
            print(json.dumps({"run": found, "summary": summary}, default=str))
            return
        metrics = sorted({m for s in summary for m in s["metrics"]})
        out.print(_ladder_table(run_id, found, summary, metrics))
        out.print(
            f"mean (change from the rung below) over n={found['n_examples']}; intervals: --json or --html",
            highlight=False,
        )
        chosen = metric or headline(summary)
        chart_path = _write_ladder_chart(found, summary, chosen, chart, html_file)
        if html_file:
            write_html(found, summary, metrics, chart_path, html_file)
            out.print(f"html: {html_file}", highlight=False, markup=False)
        if diff:
            _print_rung_diff(found, rows, diff, chosen)

    run(body)


def eval_compare(
    run_a: Annotated[int, typer.Argument(help="The reference run.")],
    run_b: Annotated[int, typer.Argument(help="The run to check.")],
    metric: Annotated[str, typer.Option(help="The metric to guard.")] = "label_accuracy",
    rung: Annotated[str | None, typer.Option(help="The rung to compare (default: the top rung both have).")] = None,
    max_drop: Annotated[float, typer.Option(min=0.0, help="Largest allowed drop of the mean.")] = 0.0,
) -> None:
    """Exit 1 when run B's metric drops by more than --max-drop from run A's (a CI quality gate)."""

    def body() -> None:
        from evals.ladder.report import compare
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            result = compare(conn, run_a, run_b, metric, rung=rung, max_drop=max_drop)
        print(json.dumps(result))
        if not result["ok"]:
            err.print(
                f"regression: {metric} on {result['rung']} fell from {result['a']:.3f} to {result['b']:.3f}",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)

    run(body)


def eval_sweep_chunks(
    dataset: Annotated[str, typer.Argument(help="An eval set with documents and reference_doc_ids (pubmedqa).")],
    sizes: Annotated[str, typer.Option(help="Chunk sizes in tokens, comma-separated.")] = "128,256,512,1024",
    limit: Annotated[int | None, typer.Option(min=1, help="The first N questions.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The chunking experiment: ingest the set's documents at each size and score retrieval."""
    try:
        chosen = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter("sizes must be whole numbers", param_hint="--sizes") from None

    def body() -> None:
        from agent.core.assemble import open_knowledge_base
        from evals.eval_sets import load_eval_set
        from evals.ladder.chunk_sweep import sweep_chunks

        settings = load_settings()
        with open_knowledge_base(settings) as kb:
            rows = sweep_chunks(settings, kb, load_eval_set(dataset), chosen, limit=limit)
        if as_json:
            print(json.dumps(rows))
            return
        table = Table(*rows[0].keys(), title=f"chunk sizes on {dataset}")
        for row in rows:
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
        out.print(table)

    run(body)


def eval_sql(
    questions: Annotated[Path | None, typer.Option(help="defog-style questions CSV (default: the shared set).")] = None,
    databases: Annotated[Path | None, typer.Option(help="Folder of <db_name>.sql scripts.")] = None,
    model: Annotated[str | None, typer.Option(help="Chat model, or 'gold' to score the gold SQL itself.")] = None,
    fewshot: Annotated[str, typer.Option(help="Modes to run: both, off or on.")] = "both",
    limit: Annotated[int | None, typer.Option(min=1, help="At most N questions, spread over categories.")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only these categories (repeatable).")] = None,
    reload: Annotated[bool, typer.Option(help="Reload the databases even if they are loaded.")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write every outcome as JSON.", callback=output_file)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Execution accuracy of text-to-SQL on defog's sql-eval, per category, without and with few-shot examples."""
    modes = {"both": ("zero-shot", "few-shot"), "off": ("zero-shot",), "on": ("few-shot",)}
    if fewshot not in modes:
        raise typer.BadParameter("use both, off or on", param_hint="--fewshot")

    def body() -> None:
        from evals.sql.harness import run_sql_eval

        def show(o: Any) -> None:
            if not as_json:
                mark = "✓" if o.correct else "✗"
                err.print(f"{mark} {o.mode:9} {o.db_name:11} #{o.id:<3} {o.seconds:5.1f}s", highlight=False)

        report = run_sql_eval(
            load_settings(),
            questions_file=questions,
            databases_dir=databases,
            model=model,
            modes=modes[fewshot],
            limit=limit,
            categories=set(category) if category else None,
            reload=reload,
            progress=show,
        )
        payload = report.to_dict()
        if out_file:
            out_file.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        if as_json:
            print(json.dumps({k: v for k, v in payload.items() if k != "outcomes"}, default=str))
            if report.stopped:
                raise typer.Exit(1)
            return
        accuracy = payload["accuracy"]
        table = Table(title=f"execution accuracy: {report.model} ({payload['questions']} questions)")
        table.add_column("category")
        for mode in accuracy:
            table.add_column(mode, justify="right")
        for name in sorted({c for cells in accuracy.values() for c in cells}, key=lambda c: (c == "all", c)):
            table.add_row(name, *(f"{cells.get(name, 0):.1%}" for cells in accuracy.values()))
        out.print(table)
        for note in report.skipped:
            err.print(f"skipped {note}", highlight=False, markup=False)
        if report.stopped:
            err.print(f"error: stopped early: {report.stopped}", style="red", highlight=False, markup=False)
            raise typer.Exit(1)

    run(body)
