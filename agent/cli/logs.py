"""The turn-log commands: list and prune turns, give feedback, export eval sets and fine-tuning data.
Wired into the ``ladder`` app by agent/cli/app.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agent.cli.common import err, load_settings, out, output_file, run

if TYPE_CHECKING:
    from agent.core.config import Settings

logs_app = typer.Typer(help="The turn log: every question, answer, step and feedback.")
export_app = typer.Typer(help="Turn the log into data: eval sets and fine-tuning files.", no_args_is_help=True)


def _age_option(text: str | None) -> datetime | None:
    from agent.records.turns import parse_age

    if text is None:
        return None
    try:
        return datetime.now(UTC) - parse_age(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@logs_app.callback(invoke_without_command=True)
def logs(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only turns newer than this age: 7d, 12h, 30m.")] = None,
    feedback: Annotated[str, typer.Option(help="up, down, any or none (all turns).")] = "none",
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    user: Annotated[str | None, typer.Option(help="Only this user's turns.")] = None,
) -> None:
    """List logged turns, newest first, with who asked (secrets redacted)."""
    if ctx.invoked_subcommand is not None:
        return
    if feedback not in ("up", "down", "any", "none"):
        raise typer.BadParameter("use up, down, any or none", param_hint="--feedback")
    started = _age_option(since)

    def body() -> None:
        from agent.records.turns import list_turns
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            turns = list_turns(conn, since=started, feedback=feedback, limit=limit, user=user)  # type: ignore[arg-type]
        if as_json:
            for turn in turns:
                print(json.dumps(turn, default=str, ensure_ascii=False))
            return
        table = Table("started", "turn", "user", "face", "status", "feedback", "question", "answer")
        for t in turns:
            table.add_row(
                t["started_at"].strftime("%Y-%m-%d %H:%M"),
                t["turn_id"][:12],
                t["user"] or "",
                t["face"],
                t["status"],
                t["feedback"] or "",
                (t["question"] or "")[:60],
                (t["answer"] or t["error"] or "")[:60],
            )
        out.print(table)

    run(body)


@logs_app.command("show")
def logs_show(
    turn_id: Annotated[str, typer.Argument(help="The turn (its id, as `ladder logs` shows it).")],
    as_json: Annotated[bool, typer.Option("--json", help="The whole turn as one JSON object.")] = False,
) -> None:
    """One turn whole: steps with durations, model calls, passages with rank and score, verdicts, answer, feedback."""

    def body() -> None:
        from agent.records.turn_detail import render_turn, turn_detail, turn_json
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            turn = turn_detail(conn, turn_id)
        if turn is None:
            err.print(f"error: no turn {turn_id!r} (ladder logs lists them)", style="red", markup=False)
            raise typer.Exit(1)
        print(turn_json(turn) if as_json else render_turn(turn))

    run(body)


@logs_app.command("prune")
def logs_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Delete turns older than this: 90d, 12h.")],
) -> None:
    """Delete old turns with their feedback and the conversation state (checkpoints) that holds them."""
    from agent.records.turns import parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None

    def body() -> None:
        from agent.records.turns import prune_turns
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            report = prune_turns(conn, age)
        out.print(
            f"deleted {report.turns} turns older than {older_than} with their feedback, and {report.checkpoints}"
            f" checkpoints (every one of {report.threads_deleted} threads left without turns; all but the latest"
            f" of {report.threads_trimmed} threads that keep newer turns)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    run(body)


def feedback(
    turn_id: Annotated[str, typer.Argument(help="The turn (its id, as `ladder ask --json` and `ladder logs` show).")],
    rating: Annotated[str, typer.Argument(help="up or down.")],
    comment: Annotated[str | None, typer.Option(help="What was good or wrong.")] = None,
    correct: Annotated[str | None, typer.Option(help="The answer it should have given.")] = None,
) -> None:
    """Attach feedback to a turn: a thumbs up or down, a comment, a corrected answer."""

    def body() -> None:
        from agent.records.turns import add_feedback
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            add_feedback(conn, turn_id, rating, comment, correct)  # type: ignore[arg-type]
        out.print(f"feedback stored on {turn_id}", highlight=False, markup=False)

    run(body)


@export_app.command("evalset")
def export_evalset(
    out_file: Annotated[Path, typer.Option("--out", help="The JSONL file to write.", callback=output_file)],
    redact_personal: Annotated[bool, typer.Option("--redact/--no-redact", help="Mask emails and phones.")] = True,
) -> None:
    """Turns with feedback as an eval set: question, the approved or corrected answer, cited passages."""

    def body() -> None:
        from evals.finetune.data import write_jsonl
        from evals.finetune.exports import evalset_records
        from knowledge.db import Database

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            records, skipped = evalset_records(conn, personal=redact_personal)
        write_jsonl(out_file, records)
        out.print(
            f"wrote {len(records)} eval-set lines to {out_file}"
            + (f" ({skipped} turns with a thumbs-down but no corrected answer left out)" if skipped else ""),
            highlight=False,
            markup=False,
        )

    run(body)


def _logged_examples(
    settings: Settings, teacher: str | None, min_feedback: str, system: bool, personal: bool
) -> tuple[list[dict[str, Any]], int]:
    """Fine-tuning examples from the logged turns, re-answered by ``teacher`` if given; and how many it dropped."""
    if teacher:
        from agent.core.assemble import open_agent
        from evals.finetune.exports import distilled_examples

        with open_agent(settings, model=teacher) as agent, agent.kb.db.connection() as conn:
            return distilled_examples(agent, conn, system=system, personal=personal)
    from evals.finetune.exports import finetune_examples
    from knowledge.db import Database

    with Database(settings.database_config()) as db, db.connection() as conn:
        return finetune_examples(conn, min_feedback=min_feedback, system=system, personal=personal), 0  # type: ignore[arg-type]


def _write_split(out_file: Path, train: list[dict[str, Any]], validation: list[dict[str, Any]]) -> Path | None:
    """Write the training file, and the validation file beside it when any example is held out; returns the latter."""
    from evals.finetune.data import write_jsonl

    validation_file = out_file.with_name(out_file.stem + ".validation.jsonl")
    write_jsonl(out_file, train)
    if not validation:
        return None
    write_jsonl(validation_file, validation)
    return validation_file


@export_app.command("finetune")
def export_finetune(
    out_file: Annotated[
        Path, typer.Option("--out", help="The training JSONL (validation goes beside it).", callback=output_file)
    ],
    min_feedback: Annotated[str, typer.Option(help="up (approved or corrected turns) or any.")] = "up",
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share held out for validation.")] = 0.1,
    system: Annotated[bool, typer.Option("--system/--no-system", help="Include the system prompt.")] = True,
    redact_personal: Annotated[bool, typer.Option("--redact/--no-redact", help="Mask emails and phones.")] = True,
    max_tokens: Annotated[int, typer.Option(min=256, help="Longest example kept (the model's limit).")] = 65_536,
    epochs: Annotated[
        int | None, typer.Option(min=1, max=50, help="For the cost estimate (default: OpenAI rule).")
    ] = None,
    price_per_1m: Annotated[float, typer.Option(min=0.0, help="Training price per 1M tokens, for the estimate.")] = 3.0,
    teacher: Annotated[str | None, typer.Option(help="Distil: re-answer logged questions with this model.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation shuffle.")] = 0,
) -> None:
    """Logged turns as OpenAI chat fine-tuning JSONL: validated, deduplicated, split, with a cost estimate."""
    if min_feedback not in ("up", "any"):
        raise typer.BadParameter("use up or any", param_hint="--min-feedback")

    def body() -> None:
        from evals.finetune.data import dedupe, default_epochs, split_train_validation, validate_examples

        examples, dropped = _logged_examples(load_settings(), teacher, min_feedback, system, redact_personal)
        unique, duplicates = dedupe(examples)
        kept, report = validate_examples(enumerate(unique, start=1), max_tokens=max_tokens)
        train, validation = split_train_validation(kept, val_fraction, seed)
        validation_file = _write_split(out_file, train, validation)
        n_epochs = epochs or default_epochs(len(kept))
        summary = {
            "train_file": str(out_file),
            "validation_file": str(validation_file) if validation_file else None,
            "train": len(train),
            "validation": len(validation),
            "duplicates_removed": duplicates,
            "teacher_dropped": dropped,
            **report.to_dict(),
            "epochs": n_epochs,
            "estimated_cost_usd": round(report.estimate_cost(n_epochs, price_per_1m), 4),
            "price_per_1m_training_tokens": price_per_1m,
        }
        print(json.dumps(summary, indent=1, default=str))
        if not train:
            err.print("error: no example qualified (give feedback first: `ladder feedback TURN up`)", style="red")
            raise typer.Exit(1)

    run(body)
