"""``ladder finetune local``: a LoRA adapter for the embedded model, trained here, written as GGUF with its card.

The run lives in ``<data_dir>/adapters/NAME/``: ``run.json`` (what is being trained, so a second
start with the same inputs resumes and one with other inputs is refused), the checkpoint, and at
the end ``adapter.gguf``, ``card.json`` and ``loss.png``. Nothing is downloaded: the base is the
embedded GGUF, de-quantized by transformers.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.models.adapters import ADAPTER_FILE, CARD_FILE, AdapterError, adapters_dir, check_name
from agent.models.local_server import KNOWN_MODELS, file_sha256, resolve_model_file
from evals.finetune.data import split_train_validation, validate_jsonl
from evals.finetune.local_data import Tokenized, tokenize_all
from evals.finetune.local_gguf import write_adapter
from evals.finetune.local_train import (
    CHECKPOINT,
    LoraSettings,
    TrainState,
    load_base,
    load_state,
    train,
)

BASES = {"0.5b": "qwen2.5-coder-0.5b-instruct", "1.5b": "qwen2.5-coder-1.5b-instruct"}
MIN_FREE_BYTES = 500_000_000  # checkpoints of a rank-16 adapter take tens of MB; leave room for the rest
HELDOUT_FRACTION = 0.1


class FinetuneError(AdapterError):
    """A fine-tuning run that cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class LocalRun:
    """What to train: the data, the base, the name, the hyperparameters."""

    data: Path
    name: str
    base: str = "0.5b"
    validation: Path | None = None
    settings: LoraSettings = field(default_factory=LoraSettings)


def _examples(path: Path, max_tokens: int) -> list[dict[str, Any]]:
    """The file's valid examples, or a FinetuneError with what the validation found."""
    if not path.is_file():
        raise FinetuneError(f"no file at {path}")
    kept, report = validate_jsonl(path, max_tokens=max_tokens, encoding_name="cl100k_base")
    if not kept:
        found = ", ".join(f"{k} ({v})" for k, v in report.errors.items()) or "no examples"
        long = f"; {len(report.too_long)} over {max_tokens} tokens" if report.too_long else ""
        raise FinetuneError(f"{path}: nothing to train on: {found}{long} (ladder finetune check {path} shows each)")
    return kept


def _spec(run: LocalRun, base_sha256: str) -> dict[str, Any]:
    validation = run.validation
    return {
        "base_model": BASES[run.base],
        "base_sha256": base_sha256,
        "data_file": str(run.data.resolve()),
        "data_sha256": file_sha256(run.data),
        "validation_file": str(validation.resolve()) if validation else None,
        "validation_sha256": file_sha256(validation) if validation else None,
        "hyperparameters": {**asdict(run.settings), "targets": list(run.settings.targets)},
    }


def _claim_folder(folder: Path, spec: dict[str, Any]) -> bool:
    """Create the run's folder, or check that the run in it is this one; True when resuming."""
    if (folder / ADAPTER_FILE).exists() or (folder / CARD_FILE).exists():
        raise FinetuneError(f"an adapter named {folder.name!r} exists ({folder}): choose another --name")
    marker = folder / "run.json"
    if marker.is_file():
        earlier = json.loads(marker.read_text(encoding="utf-8"))
        if earlier != spec:
            changed = sorted(k for k in spec if spec[k] != earlier.get(k))
            raise FinetuneError(
                f"{folder} holds an unfinished run with other inputs ({', '.join(changed)} differ): "
                "give another --name, or delete that folder to start over"
            )
        return load_state(folder) is not None
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < MIN_FREE_BYTES:
        raise FinetuneError(f"{folder}: under {MIN_FREE_BYTES // 1_000_000} MB free on that disk for the checkpoints")
    marker.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return False


def plot_losses(state: TrainState, path: Path, title: str) -> None:
    """The training loss per optimizer step and the held-out loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps_per_epoch = max(1, state.step // max(1, state.epoch))
    if state.train_losses:
        ax.plot(*zip(*state.train_losses, strict=True), label="training (per step)", color="tab:blue", alpha=0.7)
    held = [(epoch * steps_per_epoch, loss) for epoch, loss in state.heldout_losses]
    ax.plot(*zip(*held, strict=True), "o-", label="held out (per epoch; step 0 is the base)", color="tab:red")
    ax.set(xlabel="optimizer step", ylabel="loss on the assistant's tokens", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read(run: LocalRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and held-out examples that pass the format checks (before any model is loaded)."""
    loose = run.settings.max_tokens * 4  # cl100k counts differ from Qwen's: the real limit is checked later
    train_examples = _examples(run.data, loose)
    if run.validation is not None:
        return train_examples, _examples(run.validation, loose)
    return split_train_validation(train_examples, HELDOUT_FRACTION, run.settings.seed)


def _tokenized(
    tokenizer: Any, examples: tuple[list[dict[str, Any]], list[dict[str, Any]]], limit: int, say: Callable[[str], None]
) -> tuple[list[Tokenized], list[Tokenized]]:
    """Both parts tokenized with the model's own template; the ones refused are reported by position."""
    train_set, refused = tokenize_all(tokenizer, list(enumerate(examples[0], 1)), limit)
    heldout, refused_heldout = tokenize_all(tokenizer, list(enumerate(examples[1], 1)), limit)
    for kind, bad in (("training", refused), ("held-out", refused_heldout)):
        for position, reason in list(bad.items())[:5]:
            say(f"skipped {kind} example {position}: {reason}")
        if len(bad) > 5:
            say(f"... and {len(bad) - 5} more {kind} examples skipped")
    if not train_set:
        raise FinetuneError(f"no training example fits in --max-tokens {limit} with the model's tokenizer")
    return train_set, heldout


def estimate_seconds(rate: float, train_set: list[Tokenized], heldout: list[Tokenized], epochs: int) -> float:
    """Training at the measured tokens/s, and the held-out passes (forward only, about a third as long)."""
    trained = sum(len(t.input_ids) for t in train_set) * epochs
    evaluated = sum(len(t.input_ids) for t in heldout) * (epochs + 1)
    return (trained + evaluated / 3) / rate


def finetune_local(
    data_dir: Path,
    run: LocalRun,
    *,
    say: Callable[[str], None],
    progress: Callable[[TrainState, int, float | None], None],
    confirm: Callable[[float], bool] = lambda seconds: True,
    model_file: Path | None = None,
) -> dict[str, Any]:
    """Train the adapter (or finish a killed run of the same inputs); returns its card.
    ``model_file`` replaces the embedded base's GGUF (tests use a small model)."""
    check_name(run.name)
    if run.base not in BASES:
        raise FinetuneError(f"unknown base {run.base!r}; use one of {', '.join(BASES)}")
    if run.validation is None:  # `ladder export finetune` writes its validation file beside the training file
        beside = run.data.with_name(run.data.stem + ".validation.jsonl")
        run = replace(run, validation=beside if beside.is_file() else None)
    examples = _read(run)
    base_name = BASES[run.base]
    model_file = model_file or resolve_model_file(base_name)
    known = KNOWN_MODELS[base_name]
    base_sha256 = known.sha256 if model_file.name == known.filename else file_sha256(model_file)
    folder = adapters_dir(data_dir) / run.name
    resuming = _claim_folder(folder, _spec(run, base_sha256))
    say(f"loading {base_name} from {model_file.name} (de-quantized to fp32)")
    model, tokenizer = load_base(model_file, data_dir / "adapters" / ".base" / base_sha256[:16])
    train_set, heldout = _tokenized(tokenizer, examples, run.settings.max_tokens, say)

    def estimate(rate: float) -> None:
        seconds = estimate_seconds(rate, train_set, heldout, run.settings.epochs)
        say(
            f"{len(train_set)} training and {len(heldout)} held-out examples,"
            f" {sum(t.trained_tokens for t in train_set):,} assistant tokens to learn; measured {rate:.0f} tokens/s:"
            f" about {seconds / 60:.0f} min for {run.settings.epochs} epochs" + (" (resuming)" if resuming else "")
        )
        if not confirm(seconds):
            raise FinetuneError("not started")

    started = time.perf_counter()
    peft_model, state = train(model, train_set, heldout, run.settings, folder, progress=progress, measured=estimate)
    counts = (len(train_set), len(heldout))
    return _finish(folder, run, peft_model, state, model_file, counts, time.perf_counter() - started)


def _finish(
    folder: Path, run: LocalRun, model: Any, state: TrainState, model_file: Path, counts: tuple[int, int], took: float
) -> dict[str, Any]:
    """Write the GGUF adapter, the loss curve and the card; drop the checkpoint."""
    from peft import get_peft_model_state_dict

    spec = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    config = model.config
    written = write_adapter(
        get_peft_model_state_dict(model),
        folder / ADAPTER_FILE,
        architecture=config.model_type,
        layers=config.num_hidden_layers,
        alpha=run.settings.alpha,
        metadata={"name": run.name, "base_model": spec["base_model"], "base_sha256": spec["base_sha256"]},
    )
    model.save_pretrained(folder / "peft")  # the same weights for transformers users
    plot_losses(state, folder / "loss.png", f"{run.name}: LoRA r={run.settings.rank} on {spec['base_model']}")
    card = {
        "name": run.name,
        **spec,
        "base_file": model_file.name,
        "adapter_sha256": file_sha256(folder / ADAPTER_FILE),
        "adapted_weights": written,
        "examples": {"train": counts[0], "heldout": counts[1]},
        "losses": {"train": state.train_losses, "heldout": state.heldout_losses},
        "trained_tokens": state.tokens,
        "seconds_training": round(state.seconds, 1),
        "seconds_this_start": round(took, 1),
        "tokens_per_s": round(state.tokens / state.seconds, 1) if state.seconds else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / CARD_FILE).write_text(json.dumps(card, indent=1), encoding="utf-8")
    shutil.rmtree(folder / CHECKPOINT, ignore_errors=True)
    return card
