"""The operator's console: a page of the chat app at /console (not in the chat's navigation), with the
tabs Turns, Review queue, Evaluations and Knowledge. The page shows its content only to operators, and
every handler behind it checks the role again on the server (ConsoleService.guard), so a user who calls
the endpoints directly is refused too. Every event is private (no API endpoint, no MCP tool).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from agent.chat.console.evaluations import DIFF_COLUMNS, RUN_COLUMNS, Evaluations
from agent.chat.console.service import QUEUE_COLUMNS, TURN_COLUMNS, ConsoleService

if TYPE_CHECKING:
    from agent.chat.handlers import ChatHandlers

PATH = "console"
PRIVATE = {"api_visibility": "private"}
REFUSED = "The console is for operators. Ask an operator to run `ladder users role NAME operator`."
DEFAULT_SET = "reviewed"


def console_link(app: gr.Blocks, handlers: ChatHandlers) -> None:
    """A link from the chat to the console, shown only to operators (inside the chat's Blocks)."""
    console = ConsoleService(handlers)
    link = gr.Markdown(f"[Operator console](/{PATH})", visible=False, elem_id="console_link")

    def show(request: gr.Request) -> Any:
        return gr.update(visible=console.allowed(request))

    app.load(show, None, [link], **PRIVATE)


def add_console(app: gr.Blocks, handlers: ChatHandlers) -> None:
    """Add the console page to the chat app (call after the chat's Blocks is built)."""
    console = ConsoleService(handlers)
    with app.route("Console", f"/{PATH}", show_in_navbar=False):
        gr.Markdown("## Ladder operator console  ·  [back to the chat](/)")
        refused = gr.Markdown(REFUSED, visible=False, elem_id="console_refused")
        with gr.Column(visible=False, elem_id="console") as body, gr.Tabs():
            with gr.Tab("Turns", id="turns"):
                turns_load = _turns_tab(console)
            with gr.Tab("Review queue", id="review") as review:
                review_load = _review_tab(console)
            with gr.Tab("Evaluations", id="evaluations") as evaluations:
                evals_load = _evaluations_tab(Evaluations(console))
            with gr.Tab("Knowledge", id="knowledge") as knowledge:
                knowledge_load = _knowledge_tab(console)
        # A tab's tables reload when it is opened: the data is fresh, and Gradio draws a table's rows
        # only once it is visible (a table filled while its tab was hidden can show no rows).
        for tab, fill in ((review, review_load), (evaluations, evals_load), (knowledge, knowledge_load)):
            tab.select(fill[0], fill[1], fill[2], **PRIVATE)

        def open_page(request: gr.Request) -> tuple[Any, Any]:
            allowed = console.allowed(request)
            return gr.update(visible=not allowed), gr.update(visible=allowed)

        opened = app.load(open_page, None, [refused, body], **PRIVATE)
        for fill in (turns_load, review_load, evals_load, knowledge_load):
            opened.success(fill[0], fill[1], fill[2], **PRIVATE)


def _table(columns: list[str], elem_id: str, **kw: Any) -> gr.Dataframe:
    return gr.Dataframe(headers=columns, interactive=False, wrap=True, elem_id=elem_id, **kw)


def _turns_tab(console: ConsoleService) -> tuple[Any, list[Any], list[Any]]:
    with gr.Row():
        since = gr.Textbox(label="Newer than (7d, 12h)", elem_id="f_since", scale=1)
        until = gr.Textbox(label="Older than", elem_id="f_until", scale=1)
        face = gr.Dropdown(["any", "ui", "cli", "mcp", "api", "openai", "eval"], value="any", label="Face")
        user = gr.Textbox(label="User", elem_id="f_user", scale=1)
        collection = gr.Textbox(label="Collection", elem_id="f_collection", scale=1)
        status = gr.Dropdown(["any", "done", "failed", "running"], value="any", label="Status")
        feedback = gr.Dropdown(["any", "up", "down", "none"], value="any", label="Feedback", elem_id="f_feedback")
    with gr.Row():
        unsupported = gr.Checkbox(label="Fact-check found unsupported claims", elem_id="f_unsupported")
        errors = gr.Checkbox(label="Errors only", elem_id="f_errors")
        search = gr.Button("Search", variant="primary", elem_id="turns_search")
    table = _table(TURN_COLUMNS, "turns_table")
    with gr.Row():
        turn_id = gr.Textbox(label="Turn id (click a row)", elem_id="turn_id", scale=4)
        show = gr.Button("Show turn", elem_id="turn_show", scale=1)
    detail = gr.Code(label="The turn whole (as `ladder logs show`)", language=None, max_lines=60, elem_id="turn_detail")
    filters = [since, until, face, user, collection, status, feedback, unsupported, errors]

    def find(
        since: str,
        until: str,
        face: str,
        user: str,
        collection: str,
        status: str,
        feedback: str,
        unsupported: bool,
        errors: bool,
        request: gr.Request,
    ) -> list[list[Any]]:
        chosen = {"face": face, "user": user, "collection": collection, "status": status, "feedback": feedback}
        return console.turns(request, since=since, until=until, fact_check_failed=unsupported, errors=errors, **chosen)

    def picked(rows: Any, evt: gr.SelectData, request: gr.Request) -> tuple[str, str]:
        chosen = str(evt.row_value[0]) if evt.row_value else ""
        return chosen, console.turn_text(request, chosen) if chosen else ""

    def shown(chosen: str, request: gr.Request) -> str:
        return console.turn_text(request, chosen)

    search.click(find, filters, [table], **PRIVATE)
    table.select(picked, [table], [turn_id, detail], **PRIVATE)
    show.click(shown, [turn_id], [detail], **PRIVATE)
    return find, filters, [table]


def _review_tab(console: ConsoleService) -> tuple[Any, list[Any], list[Any]]:
    gr.Markdown("Thumbs-down turns and turns whose fact-check found unsupported claims, oldest first.")
    refresh = gr.Button("Refresh the queue", elem_id="queue_refresh")
    table = _table(QUEUE_COLUMNS, "queue_table")
    turn_id = gr.Textbox(label="Turn under review (click a row)", elem_id="review_turn", interactive=False)
    question = gr.Textbox(label="Question", interactive=False, elem_id="review_question")
    answer = gr.Textbox(label="Ladder's answer", interactive=False, lines=3, elem_id="review_answer")
    comments = gr.Textbox(label="What the user said", interactive=False, elem_id="review_comments")
    reference = gr.Textbox(label="Reference answer (write or edit)", lines=4, elem_id="review_reference")
    relevant = gr.CheckboxGroup([], label="Relevant retrieved passages", type="value", elem_id="review_passages")
    with gr.Row():
        set_name = gr.Textbox(DEFAULT_SET, label="Eval set", elem_id="review_set", scale=2)
        accept = gr.Button("Accept into the set", variant="primary", elem_id="review_accept", scale=1)
    with gr.Row():
        reason = gr.Textbox(label="Reason to dismiss", elem_id="review_reason", scale=2)
        dismiss = gr.Button("Dismiss", variant="stop", elem_id="review_dismiss", scale=1)
    notice = gr.Markdown(elem_id="review_notice")
    sets = _table(["set", "version", "items", "updated"], "sets_table")
    fields = [turn_id, question, answer, comments, reference, relevant]

    def load(request: gr.Request) -> tuple[Any, Any]:
        return console.queue(request), console.sets(request)

    def picked(rows: Any, evt: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
        chosen = str(evt.row_value[0]) if evt.row_value else ""
        item = console.review_item(request, chosen)
        boxes = gr.update(choices=item["passages"], value=item["cited"])
        return chosen, item["question"], item["answer"], item["comments"], item["reference"], boxes, ""

    def accepted(t: str, name: str, ref: str, chosen: list[int], request: gr.Request) -> tuple[Any, ...]:
        message = console.accept(request, t, name, ref, chosen)
        return message, *load(request), "", "", "", "", "", gr.update(choices=[], value=[])

    def dismissed(t: str, why: str, request: gr.Request) -> tuple[Any, ...]:
        message = console.dismiss(request, t, why)
        return message, *load(request), "", "", "", "", "", gr.update(choices=[], value=[]), ""

    refresh.click(load, None, [table, sets], **PRIVATE)
    table.select(picked, [table], [*fields, notice], **PRIVATE)
    accept.click(accepted, [turn_id, set_name, reference, relevant], [notice, table, sets, *fields], **PRIVATE)
    dismiss.click(dismissed, [turn_id, reason], [notice, table, sets, *fields, reason], **PRIVATE)
    return load, [], [table, sets]


def _evaluations_tab(evals: Evaluations) -> tuple[Any, list[Any], list[Any]]:
    with gr.Row():
        set_ref = gr.Textbox(label="Named set (set:NAME or set:NAME@VERSION)", elem_id="start_set", scale=2)
        rungs = gr.Textbox("baseline,+retrieval", label="Rungs", elem_id="start_rungs", scale=2)
        limit = gr.Number(label="First N examples (empty: all)", precision=0, elem_id="start_limit", scale=1)
        collection = gr.Textbox(
            evals.console.handlers.services.settings.collection, label="Collection", elem_id="start_collection"
        )
        start = gr.Button("Start a run", variant="primary", elem_id="start_run", scale=1)
    progress = gr.Markdown(elem_id="start_progress")
    refresh = gr.Button("Refresh the runs", elem_id="runs_refresh")
    runs = _table(RUN_COLUMNS, "runs_table")
    with gr.Row():
        run_id = gr.Number(label="Run", precision=0, elem_id="report_run", scale=1)
        show = gr.Button("Show the ladder", elem_id="report_show", scale=1)
    with gr.Row():
        report = _table(["rung", "n"], "report_table", scale=3)
        chart = gr.Image(label="Ladder chart", type="filepath", interactive=False, scale=2, elem_id="report_chart")
    gr.Markdown("**Per example, side by side**: rung A of run A against rung B of run B (leave B empty: run A).")
    with gr.Row():
        run_a = gr.Number(label="Run A", precision=0, elem_id="diff_run_a")
        rung_a = gr.Textbox(label="Rung A", elem_id="diff_rung_a")
        run_b = gr.Number(label="Run B", precision=0, elem_id="diff_run_b")
        rung_b = gr.Textbox(label="Rung B", elem_id="diff_rung_b")
        metric = gr.Textbox("answer_similarity", label="Metric", elem_id="diff_metric")
        compare = gr.Button("Compare", elem_id="diff_show")
    diff = _table(DIFF_COLUMNS, "diff_table")

    def picked(rows: Any, evt: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
        chosen = int(evt.row_value[0]) if evt.row_value else None
        return (chosen, *evals.report(request, chosen)) if chosen is not None else (None, gr.update(), None)

    def reported(chosen: Any, request: gr.Request) -> tuple[Any, str | None]:
        return evals.report(request, chosen)

    def compared(a: Any, ra: str, b: Any, rb: str, m: str, request: gr.Request) -> list[list[Any]]:
        return evals.diff(request, a, ra, b, rb, m)

    def started(chosen: str, names: str, first: Any, target: str, request: gr.Request) -> Iterator[str]:
        yield from evals.start(request, chosen, names, first, target)

    start.click(started, [set_ref, rungs, limit, collection], [progress], **PRIVATE).then(
        evals.runs, None, [runs], **PRIVATE
    )
    refresh.click(evals.runs, None, [runs], **PRIVATE)
    runs.select(picked, [runs], [run_id, report, chart], **PRIVATE)
    show.click(reported, [run_id], [report, chart], **PRIVATE)
    compare.click(compared, [run_a, rung_a, run_b, rung_b, metric], [diff], **PRIVATE)
    return evals.runs, [], [runs]


def _knowledge_tab(console: ConsoleService) -> tuple[Any, list[Any], list[Any]]:
    refresh = gr.Button("Refresh", elem_id="knowledge_refresh")
    collections = _table(["collection", "documents", "chunks", "embedding model", "description"], "collections_table")
    documents = _table(["doc id", "title", "source", "chunks", "ingested"], "documents_table")
    gr.Markdown("**Ingest runs** (newest first) and the files they skipped, with the reason")
    runs = _table(
        ["run", "collection", "status", "started", "files", "added", "updated", "chunks", "skipped", "error"],
        "ingest_table",
    )
    skipped = _table(["run", "collection", "file", "reason"], "skipped_table")

    def load(request: gr.Request) -> tuple[Any, Any, Any]:
        return console.collections(request), *console.ingest_runs(request)

    def picked(rows: Any, evt: gr.SelectData, request: gr.Request) -> Any:
        return console.documents(request, str(evt.row_value[0])) if evt.row_value else []

    refresh.click(load, None, [collections, runs, skipped], **PRIVATE)
    collections.select(picked, [collections], [documents], **PRIVATE)
    return load, [], [collections, runs, skipped]
