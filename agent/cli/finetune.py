"""``ladder finetune``: check and submit fine-tuning data (OpenAI's API), and fine-tune the embedding model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.common import err, load_settings, out, run

finetune_app = typer.Typer(
    help="Fine-tune on the exported data: a LoRA adapter for the embedded model here, or OpenAI's fine-tuning API.",
    no_args_is_help=True,
)


@finetune_app.command("check")
def finetune_check(
    file: Annotated[Path, typer.Argument(help="A chat fine-tuning JSONL file.")],
    max_tokens: Annotated[int, typer.Option(min=256)] = 65_536,
) -> None:
    """Validate a fine-tuning file: format errors by kind and line, token counts, examples over the limit."""

    def body() -> None:
        from evals.finetune.data import validate_jsonl

        if not file.is_file():
            err.print(f"error: no file at {file}", style="red", markup=False)
            raise typer.Exit(1)
        _, report = validate_jsonl(file, max_tokens=max_tokens)
        print(json.dumps(report.to_dict(), indent=1, default=str))
        if report.errors:
            raise typer.Exit(1)

    run(body)


def _openai_client() -> Any:
    from openai import OpenAI

    settings = load_settings()
    if settings.openai_api_key is None:
        _say_missing_key()
    return OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),  # type: ignore[union-attr]
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )


@finetune_app.command("submit")
def finetune_submit(
    file: Annotated[Path, typer.Argument(help="The training JSONL from `ladder export finetune`.")],
    model: Annotated[str, typer.Option(help="The base model to fine-tune.")] = "gpt-4o-mini-2024-07-18",
    validation: Annotated[Path | None, typer.Option(help="Validation JSONL (default: beside FILE).")] = None,
    suffix: Annotated[str, typer.Option(help="Added to the fine-tuned model's name.")] = "ladder",
) -> None:
    """Upload the files and start an OpenAI fine-tuning job; prints the job id."""

    def body() -> None:
        from evals.finetune.data import validate_jsonl

        client = _openai_client()
        beside = file.with_name(file.stem + ".validation.jsonl")
        validation_path = validation or (beside if beside.is_file() else None)
        for path in [file, *([validation_path] if validation_path else [])]:
            if not path.is_file():
                raise typer.BadParameter(f"no file at {path}")
            _, report = validate_jsonl(path)
            if report.errors:  # never pay for an upload the service will reject
                err.print(f"error: {path} has format errors: {dict(report.errors)}", style="red", markup=False)
                raise typer.Exit(1)
        with file.open("rb") as handle:
            training = client.files.create(file=handle, purpose="fine-tune")
        validation_id = None
        if validation_path:
            with validation_path.open("rb") as handle:
                validation_id = client.files.create(file=handle, purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model=model, training_file=training.id, validation_file=validation_id, suffix=suffix
        )
        out.print(f"started fine-tuning job {job.id} ({job.status}) on {model}", highlight=False, markup=False)
        out.print(f"follow it with: ladder finetune status {job.id}", highlight=False, markup=False)

    run(body)


@finetune_app.command("status")
def finetune_status(
    job_id: Annotated[str | None, typer.Argument(help="A job id (default: the latest jobs).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A fine-tuning job's status, its fine-tuned model once done, and its latest events."""

    def body() -> None:
        client = _openai_client()
        if job_id is None:
            jobs = [j.model_dump() for j in client.fine_tuning.jobs.list(limit=5).data]
            payload: dict[str, Any] = {"jobs": jobs}
        else:
            job = client.fine_tuning.jobs.retrieve(job_id).model_dump()
            events = [e.model_dump() for e in client.fine_tuning.jobs.list_events(job_id, limit=10).data]
            payload = {"job": job, "events": events}
        if as_json:
            print(json.dumps(payload, default=str))
            return
        for job in payload.get("jobs") or [payload["job"]]:
            done = f" -> model {job['fine_tuned_model']}" if job.get("fine_tuned_model") else ""
            out.print(f"{job['id']}: {job['status']} ({job['model']}){done}", highlight=False, markup=False)
        for event in payload.get("events") or []:
            out.print(f"  {event.get('message')}", highlight=False, markup=False)
        if payload.get("job", {}).get("fine_tuned_model"):
            out.print(f"use it: LADDER_CHAT_MODEL={payload['job']['fine_tuned_model']}", highlight=False, markup=False)

    run(body)


@finetune_app.command("embeddings")
def finetune_embeddings(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Whose turns.")] = None,
    min_feedback: Annotated[str, typer.Option(help="up (approved or corrected turns) or any.")] = "up",
    epochs: Annotated[int, typer.Option(min=1, max=20)] = 1,
    name: Annotated[str | None, typer.Option(help="New model and collection (COLLECTION-ft).")] = None,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share of pairs kept out to measure.")] = 0.2,
) -> None:
    """Fine-tune the local embedding model on (question, cited passage) pairs from approved turns,
    re-embed the collection with it as a new collection, and report the time and the MRR@10 it bought."""
    if min_feedback not in ("up", "any"):
        raise typer.BadParameter("use up or any", param_hint="--min-feedback")

    def body() -> None:
        from evals.ladder.embedding_rung import run_embedding_rung

        settings = load_settings()
        report = run_embedding_rung(
            settings,
            collection or settings.collection,
            name=name,
            min_feedback=min_feedback,  # type: ignore[arg-type]
            epochs=epochs,
            holdout=holdout,
        )
        print(json.dumps(report, indent=1, default=str))
        out.print(
            f"use it: LADDER_EMBEDDING_MODEL={report['model_dir']} with collection {report['collection']}",
            highlight=False,
            markup=False,
        )

    run(body)


@finetune_app.command("local")
def finetune_local_command(
    data: Annotated[Path, typer.Argument(help="Chat JSONL, as `ladder export finetune` writes it.")],
    name: Annotated[str, typer.Option(help="The adapter's name (LADDER_CHAT_ADAPTER=NAME serves it).")],
    base: Annotated[str, typer.Option(help="The embedded model to adapt: 0.5b or 1.5b.")] = "0.5b",
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 2,
    lr: Annotated[
        float, typer.Option(min=1e-6, max=1e-2, help="Peak learning rate (warm-up, then linear decay).")
    ] = 2e-4,
    rank: Annotated[int, typer.Option(min=1, max=256, help="LoRA rank on the attention projections.")] = 16,
    max_tokens: Annotated[int, typer.Option(min=64, max=8192, help="Longer examples are skipped.")] = 1024,
    validation: Annotated[
        Path | None, typer.Option(help="Held-out JSONL (default: FILE.validation.jsonl beside it, else 10% of FILE).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking after the time estimate.")] = False,
) -> None:
    """Train a LoRA adapter for the embedded model on CPU (loss on the assistant's turns only), with a
    held-out loss, checkpoints (run it again to resume) and a loss curve; writes the adapter as GGUF."""

    def body() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from evals.finetune.local import LocalRun, finetune_local
        from evals.finetune.local_train import LoraSettings

        settings = load_settings()
        lora = LoraSettings(epochs=epochs, lr=lr, rank=rank, alpha=2 * rank, max_tokens=max_tokens)
        say = lambda line: err.print(line, highlight=False, markup=False)  # noqa: E731
        ask = lambda seconds: yes or typer.confirm("start?", default=True, err=True)  # noqa: E731
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("training", total=None)

            def progress(state: Any, total: int, loss: float | None) -> None:
                done = state.epoch * (total // max(1, epochs)) + state.position
                held = f" held-out {state.heldout_losses[-1][1]:.3f}" if state.heldout_losses else ""
                last = f" loss {loss:.3f}" if loss is not None else ""
                bar.update(task, total=total, completed=done, description=f"epoch {state.epoch + 1}{last}{held}")

            card = finetune_local(
                settings.data_dir, LocalRun(data, name, base, validation, lora), say=say, progress=progress, confirm=ask
            )
        print(json.dumps(card, indent=1, default=str))
        out.print(
            f"serve it: LADDER_CHAT_ADAPTER={name} (or ladder ask --adapter {name})", highlight=False, markup=False
        )

    run(body)


@finetune_app.command("pubmedqa-data")
def finetune_pubmedqa_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for pubmedqa-train.jsonl and its validation file.")],
    count: Annotated[int, typer.Option(min=2, max=400, help="Training questions to use (of 400).")] = 200,
) -> None:
    """The measured case's data: PubMedQA's training part (never the 100 of pubmedqa-heldout) as the
    draft prompts of the +retrieval rung, answered "yes/no/maybe, then the reasoning" with citations."""

    def body() -> None:
        from agent.core.assemble import open_knowledge_base
        from evals.bench.finetune_pubmedqa import write_training_files

        settings = load_settings()
        with open_knowledge_base(settings) as kb:
            print(json.dumps(write_training_files(kb, settings, out_dir, count=count), indent=1))

    run(body)


@finetune_app.command("adapters")
def finetune_adapters(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The adapters trained here: name, base model, examples, held-out loss before and after."""

    def body() -> None:
        from agent.models.adapters import list_adapters

        found = list_adapters(load_settings().data_dir)
        if as_json:
            print(json.dumps([{"name": a.name, **a.card} for a in found], default=str))
            return
        if not found:
            out.print("no adapters yet: train one with ladder finetune local DATA.jsonl --name NAME", markup=False)
        for a in found:
            held = a.card.get("losses", {}).get("heldout") or []
            change = f"held-out loss {held[0][1]:.3f} -> {held[-1][1]:.3f}" if len(held) > 1 else ""
            examples = a.card.get("examples", {}).get("train")
            out.print(f"{a.name}: {a.base_model}, {examples} examples, {change}", highlight=False, markup=False)

    run(body)


def _say_missing_key() -> None:
    err.print(
        "error: fine-tuning needs OpenAI's API: set OPENAI_API_KEY (and OPENAI_BASE_URL for another"
        " compatible service); the embedded model cannot be fine-tuned here",
        style="red",
        markup=False,
    )
    raise typer.Exit(1)
