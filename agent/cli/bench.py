"""``ladder bench``: benchmarks that print ratios against baselines measured in the same process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.common import err, load_settings, out, output_file, run


def bench_agent(
    turns: Annotated[int, typer.Option(min=1, max=500, help="Turns for the overhead measurement.")] = 20,
    embedded: Annotated[bool, typer.Option(help="Also time the embedded model.")] = True,
    fanout: Annotated[int, typer.Option(min=0, max=155, help="FanOutQA questions to decompose.")] = 20,
) -> None:
    """Graph overhead, parallel fan-out, the embedded model's speed, FanOutQA decomposition recall."""
    from evals.bench.agent import run_agent_benchmark

    run(lambda: run_agent_benchmark(load_settings(), turns=turns, embedded=embedded, fanout_questions=fanout))


def bench_load(
    sessions: Annotated[
        int | None, typer.Option(min=1, max=200, help="Concurrent chat sessions (default 20; 4 with --embedded).")
    ] = None,
    turns: Annotated[int, typer.Option(min=1, max=50, help="Questions per session.")] = 3,
    latency: Annotated[float, typer.Option(min=0.0, max=30.0, help="Seconds the scripted model takes per call.")] = 0.2,
    users: Annotated[
        bool, typer.Option("--users", help="Logins on: each session its own user with a bearer token.")
    ] = False,
    flood: Annotated[
        float, typer.Option(min=0.0, max=500.0, help="Wrong logins a second during a second run (turns --users on).")
    ] = 0.0,
    flood_addresses: Annotated[int, typer.Option(min=1, max=250, help="Loopback addresses the flood comes from.")] = 1,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="The real embedded model over Ladder's docs/, not a scripted one.")
    ] = False,
    questions: Annotated[int, typer.Option(min=1, max=3, help="With --embedded: questions per session.")] = 2,
    model: Annotated[
        str | None, typer.Option(help="With --embedded: the local model (default LADDER_LOCAL_MODEL, the 1.5B).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --embedded: print the figures as JSON.")] = False,
) -> None:
    """Concurrent sessions through the chat server's API (loopback, scripted model): throughput, p50/p95,
    and a check that every turn is logged once, in its own thread, with its own answer (and, with
    --users, by its own user, and that no session can ask in another's thread). With --flood, the
    turns' p95 while wrong logins arrive, as a ratio to a quiet run in the same process. With
    --embedded, the sessions talk to the real embedded model, first one at a time (the baseline),
    then all at once: no turn may break, get lost or cross into another session."""
    if embedded:
        if users or flood or latency != 0.2:
            raise typer.BadParameter(
                "--users, --flood and --latency are for the scripted model", param_hint="--embedded"
            )
        run(lambda: _bench_load_embedded(sessions or 4, questions, model, as_json))
        return
    sessions = sessions or 20

    def body() -> None:
        from agent.chat.scripted import scripted_chat
        from evals.bench.load import run_load

        report = run_load(
            load_settings(),
            scripted_chat,
            sessions=sessions,
            turns=turns,
            latency_s=latency,
            users=users,
            flood=flood,
            flood_addresses=flood_addresses,
        )
        print(json.dumps(report, indent=1))
        if flood:
            err.print(
                f"p95 of the turns during {flood:g} wrong logins/s: {report['p95_ratio']}x the quiet run's",
                markup=False,
            )
        _fail_on_problems(report)

    run(body)


def _bench_load_embedded(sessions: int, questions: int, model: str | None, as_json: bool) -> None:
    from agent.chat.scripted import loopback_chat
    from evals.bench.load_embedded import MAX_SESSIONS, run_embedded_load

    if sessions > MAX_SESSIONS:
        raise typer.BadParameter(f"at most {MAX_SESSIONS} sessions with --embedded", param_hint="--sessions")
    report = run_embedded_load(load_settings(local_model=model), loopback_chat, sessions=sessions, questions=questions)
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        for phase in ("alone", "together"):
            f = report[phase]
            out.print(
                f"{phase:>8}: {f['answered']}/{f['turns']} turns in {f['seconds']} s, {f['turns_per_second']} turns/s,"
                f" p50 {f['p50_s']} s, p95 {f['p95_s']} s, {f['turns_that_waited']} waited"
                f" (p95 {f['queue_wait_p95_s']} s in line)",
                highlight=False,
            )
        ratios = report["ratios"]
        out.print(
            f"together / alone: turns/s {ratios['turns_per_second']}x, p50 {ratios['p50_s']}x, p95 {ratios['p95_s']}x"
            f" ({report['model']}, {sessions} sessions x {questions} questions)",
            highlight=False,
        )
        for problem in report["problems"]:
            err.print(f"problem: {problem}", style="red", highlight=False)
    _fail_on_problems(report)


def bench_ingest_search(
    folder: Annotated[
        Path | None, typer.Option(help="Folder to ingest meanwhile (default: CISI's 1460 abstracts, a file each).")
    ] = None,
    searchers: Annotated[int, typer.Option(min=1, max=200, help="Concurrent searchers.")] = 8,
    searches: Annotated[int, typer.Option(min=1, max=1000, help="Searches each without ingestion.")] = 15,
    rate: Annotated[
        float, typer.Option(min=0.0, max=1000.0, help="Searches a second, all searchers together (0: no pause).")
    ] = 4.0,
    timeout: Annotated[float, typer.Option(min=1.0, max=3600.0, help="Seconds the ingestion may take.")] = 600.0,
) -> None:
    """Search latency through the chat server's API (loopback) without and during a `ladder ingest`
    of a large folder into another collection: p50/p95 and their ratios, errors, ingestion throughput."""
    if folder is not None and not folder.expanduser().is_dir():
        raise typer.BadParameter(f"{folder} is not a folder", param_hint="--folder")

    def body() -> None:
        from agent.chat.scripted import scripted_chat
        from evals.bench.load import run_search_under_ingestion

        try:
            report = run_search_under_ingestion(
                load_settings(),
                scripted_chat,
                folder=folder,
                searchers=searchers,
                searches=searches,
                rate=rate,
                timeout_s=timeout,
            )
        except FileNotFoundError as exc:  # the shared data behind the defaults
            err.print(f"error: {exc}", style="red", highlight=False, markup=False)
            raise typer.Exit(2) from None
        print(json.dumps(report, indent=1))
        _fail_on_problems(report)

    run(body)


def bench_retrieval(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the figures as JSON.", callback=output_file)
    ] = None,
    hnsw_vectors: Annotated[int, typer.Option(help="Size of the HNSW recall/latency test.")] = 100_000,
    quick: Annotated[bool, typer.Option(help="Small sizes, for a smoke run.")] = False,
    chart: Annotated[
        Path | None, typer.Option(help="Also draw nDCG@10 per retriever as a PNG.", callback=output_file)
    ] = None,
) -> None:
    """Retrieval quality (CISI, PubMedQA), HNSW recall and latency, ingestion throughput."""
    from evals.bench.retrieval import run_retrieval_benchmark, write_chart

    def body() -> None:
        figures = run_retrieval_benchmark(load_settings(), out_file=out_file, hnsw_vectors=hnsw_vectors, quick=quick)
        if chart is not None:
            out.print(f"chart: {write_chart(figures, chart)}")

    run(body)


def bench_html(
    pages: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Only the answering pages and others up to N (default all).")
    ] = None,
    before: Annotated[bool, typer.Option(help="Also measure the HTML reading before knowledge/html_text.py.")] = True,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the figures as JSON.", callback=output_file)
    ] = None,
) -> None:
    """Hybrid search over the Python 3.11 HTML manual (Debian's python3-doc) against page-level BM25
    (bm25s): MRR@10 and recall@5 over 40 questions written as users ask them, the ratio printed."""

    def body() -> None:
        from evals.bench.html_manual import run_html_benchmark

        try:
            run_html_benchmark(load_settings(), limit=pages, before=before, out_file=out_file)
        except FileNotFoundError as exc:
            err.print(f"error: {exc}", style="red", highlight=False, markup=False)
            raise typer.Exit(2) from None

    run(body)


def bench_followups(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the figures as JSON.", callback=output_file)
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="Only the first N follow-ups.")] = None,
) -> None:
    """Follow-ups in a thread: retrieval recall@5 as typed, rewritten by the condense step (the configured
    chat model), and as a hand-written standalone question; the seconds the step costs."""

    def body() -> None:
        from evals.bench.followups import run_followups_benchmark

        try:
            report = run_followups_benchmark(load_settings(), out_file=out_file, limit=limit)
        except FileNotFoundError as exc:  # the shared corpora the triples are written over
            err.print(f"error: {exc}", style="red", highlight=False, markup=False)
            raise typer.Exit(2) from None
        _fail_on_problems(report)

    run(body)


def bench_sheets(
    formats: Annotated[str, typer.Option("--formats", help="Which loads to ask: csv, xlsx or csv,xlsx.")] = "csv,xlsx",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Spreadsheets as data: ten aggregate questions over the Palmer penguins (written out as CSV and XLSX,
    loaded by `ladder db load-file`) through the agent; execution accuracy beside the gold SQL's."""
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    if not chosen or any(f not in ("csv", "xlsx") for f in chosen):
        raise typer.BadParameter("use csv, xlsx or csv,xlsx", param_hint="--formats")

    def body() -> None:
        from evals.bench.sheets import run_sheets_benchmark

        run_sheets_benchmark(load_settings(), list(dict.fromkeys(chosen)), as_json=as_json)

    run(body)


def bench_cli(
    runs: Annotated[int, typer.Option(min=1, max=100, help="Counted runs of each command.")] = 5,
    collection: Annotated[
        str | None,
        typer.Option("--collection", "-c", help="Search this collection (default: docs/ in a data folder of its own)."),
    ] = None,
    query: Annotated[str | None, typer.Option(help="What the timed search looks for.")] = None,
    torch: Annotated[
        bool, typer.Option("--torch/--no-torch", help="Also time the search on the torch runtime, as a baseline.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """`ladder --help`, `ladder collections` and `ladder search` timed as processes (median, p90), each as a
    ratio to `python -c pass` run in turn with them; the search also to itself on the torch runtime."""

    def body() -> None:
        from evals.bench.cli_startup import QUERY, run_cli_benchmark

        load_settings()  # bad settings are refused here, clearly, not by the timed commands
        report = run_cli_benchmark(runs=runs, collection=collection, query=query or QUERY, torch=torch)
        if as_json:
            print(json.dumps(report, indent=1, ensure_ascii=False))
        else:
            _print_cli_report(report)
        _fail_on_problems(report)

    run(body)


def bench_factcheck(
    limit: Annotated[int | None, typer.Option(min=2, help="Check only this many claims, spread over the set.")] = None,
    split: Annotated[str, typer.Option(help="Which half: tune, test or all (each half is reported).")] = "all",
    config: Annotated[
        list[str] | None,
        typer.Option(
            help="after (the turn's check), before (ed2d3da's), model (after without its guards),"
            " quoted (after, quoting the closest passage sentence); repeat."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per check on stderr.")] = False,
) -> None:
    """Planted errors the fact-check catches and true claims it flags, before and after, with seconds per check."""
    from evals.bench.factcheck import CONFIGS, DEFAULT_CONFIGS, SPLITS, format_report, run_factcheck_benchmark

    if split not in SPLITS:
        raise typer.BadParameter(f"{split!r}: use one of {', '.join(SPLITS)}", param_hint="--split")
    configs = tuple(dict.fromkeys(config or DEFAULT_CONFIGS))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r}: use {', '.join(CONFIGS)}", param_hint="--config")

    def body() -> None:
        figures = run_factcheck_benchmark(
            load_settings(), split=split, limit=limit, configs=configs, progress=err.print if verbose else None
        )
        print(json.dumps(figures, indent=1) if as_json else format_report(figures))

    run(body)


def bench_scale(
    chunks: Annotated[
        int, typer.Option(min=1_000, max=20_000_000, help="Synthetic chunks in the collection.")
    ] = 1_000_000,
    queries: Annotated[int, typer.Option(min=2, max=2_000, help="Questions timed (half short, half long).")] = 200,
    baseline_queries: Annotated[
        int, typer.Option(min=0, max=2_000, help="Of those, timed on the query-time BM25 baseline too (slow at scale).")
    ] = 40,
    maintenance_work_mem: Annotated[str, typer.Option(help="Memory for the HNSW build.")] = "4GB",
    cisi: Annotated[bool, typer.Option("--cisi/--no-cisi", help="Also nDCG@10 on CISI with both scorings.")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the collection (bench-scale) afterwards.")] = False,
    reuse: Annotated[
        bool, typer.Option(help="Time the collection a --keep run of the same size left, instead of building it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (progress goes to stderr).")] = False,
) -> None:
    """Search at a million chunks: hybrid, keyword and dense latency, dense recall, keyword agreement with bm25s,
    ingest and index build, database size; the keyword figures beside the query-time BM25 it replaced."""
    from evals.bench.scale import ScaleOptions, format_scale_report, run_scale_benchmark

    options = ScaleOptions(chunks, queries, baseline_queries, maintenance_work_mem, cisi, keep, reuse)

    def body() -> None:
        settings = load_settings(maintenance_work_mem=maintenance_work_mem)
        figures = run_scale_benchmark(settings, options, lambda line: err.print(line, highlight=False, markup=False))
        print(json.dumps(figures, indent=1) if as_json else format_scale_report(figures))

    run(body)


def _print_cli_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"ladder as a process: {report['runs']} runs each, in turn ({report['collection']})")
    for column in ("command", "median s", "p90 s", "min s", "max s", "cpu s (median)"):
        table.add_column(column)
    for name, row in report["figures"].items():
        figures = (row["median_s"], row["p90_s"], row["min_s"], row["max_s"], row["cpu_median_s"])
        table.add_row(name, *(f"{value:.3f}" for value in figures))
    out.print(table)
    for name, value in report["ratios"].items():
        out.print(f"{name}: {value:g}x", highlight=False)
    for goal, met in report["goals"].items():
        out.print(f"{goal}: {'met' if met else 'NOT met'}", highlight=False)
    cpus, load = report["cpus"], report["load_average"]
    busy = " (busy: other work shares the CPUs, so wall times run long; the ratios hold)" if load[0] > cpus else ""
    out.print(f"{cpus} CPUs, load average {load}{busy}", highlight=False)


def _fail_on_problems(report: dict[str, Any]) -> None:
    """Exit 1 when the run found problems (they are in the JSON printed above)."""
    problems = report["problems"]
    if problems:
        err.print(f"error: {len(problems)} problems (see 'problems')", style="red", markup=False)
        raise typer.Exit(1)
