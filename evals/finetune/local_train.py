"""LoRA training of the embedded chat model on CPU: the base loaded from its GGUF, PEFT, a bounded loop.

The loop is written out (about as long as a Trainer's configuration) because it must do four things
a team fine-tuning on a laptop needs and the Trainer does not give together: time a real step before
committing to the run, report progress per example, keep checkpoints that survive a kill (the
adapter, the optimizer and the schedule, written atomically), and compute the held-out loss on the
assistant's tokens only, before training and after each epoch.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.finetune.local_data import IGNORED, Tokenized
from knowledge.embeddings import cpu_supports_bf16

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
CHECKPOINT = "checkpoint"  # the latest complete checkpoint; a new one is written beside it, then swapped in


@dataclass(frozen=True)
class LoraSettings:
    """The hyperparameters, stored on the card."""

    epochs: int = 2
    lr: float = 2e-4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    max_tokens: int = 1024
    accumulate: int = 8  # examples per optimizer step
    warmup_fraction: float = 0.1
    seed: int = 0
    targets: tuple[str, ...] = LORA_TARGETS
    # bf16 autocast where the CPU has bf16 instructions (measured there: 20-28 against 12 tokens/s in
    # fp32 on the 0.5B); on a CPU without them PyTorch emulates bf16 and one step took minutes.
    bf16: bool = field(default_factory=cpu_supports_bf16)


@dataclass
class TrainState:
    """Where the run is; saved with each checkpoint."""

    epoch: int = 0
    position: int = 0  # examples of this epoch done
    step: int = 0  # optimizer steps done
    train_losses: list[tuple[int, float]] = field(default_factory=list)  # (optimizer step, mean loss)
    heldout_losses: list[tuple[int, float]] = field(default_factory=list)  # (epoch, loss); epoch 0 is the base
    seconds: float = 0.0
    tokens: int = 0


def load_base(model_file: Path, cache: Path | None = None) -> tuple[Any, Any]:
    """The base model de-quantized from its GGUF (fp32) and its tokenizer, with the GGUF's chat template.

    Reading the GGUF takes minutes on 2 cores (the tokenizer is rebuilt from its vocabulary, every
    tensor de-quantized); with ``cache`` the result is saved there once and later runs load it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cache is not None and (cache / "done").is_file():
        tokenizer = AutoTokenizer.from_pretrained(cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype="float32")
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_file.parent, gguf_file=model_file.name)
        model = AutoModelForCausalLM.from_pretrained(model_file.parent, gguf_file=model_file.name, dtype="float32")
        if cache is not None:
            partial = cache.with_name(cache.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            from safetensors.torch import save_model

            # save_pretrained refuses a model read from GGUF; its de-quantized weights save like any
            partial.mkdir(parents=True)
            model.config.save_pretrained(partial)
            save_model(model, str(partial / "model.safetensors"))
            tokenizer.save_pretrained(partial)
            (partial / "done").write_text(model_file.name, encoding="utf-8")
            shutil.rmtree(cache, ignore_errors=True)
            os.replace(partial, cache)
    model.config.use_cache = False
    return model, tokenizer


def with_lora(model: Any, settings: LoraSettings, checkpoint: Path | None = None) -> Any:
    """The model with fresh LoRA weights, or the checkpoint's."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if checkpoint is not None:
        return PeftModel.from_pretrained(model, checkpoint / "adapter", is_trainable=True)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _loss(model: Any, example: Tokenized, bf16: bool) -> tuple[Any, int]:
    """Mean cross-entropy over the example's assistant tokens (labels shift inside the model)."""
    import torch

    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids, labels=labels)
    return out.loss.float(), len(example.input_ids)


def heldout_loss(model: Any, examples: list[Tokenized], bf16: bool) -> float:
    """Token-weighted loss on the held-out examples' assistant tokens."""
    import torch

    if not examples:
        return float("nan")
    model.eval()
    total = weight = 0.0
    with torch.no_grad():
        for example in examples:
            loss, _ = _loss(model, example, bf16)
            n = sum(1 for label in example.labels[1:] if label != IGNORED)
            total, weight = total + float(loss) * n, weight + n
    model.train()
    return total / weight if weight else float("nan")


def tokens_per_second(model: Any, example: Tokenized, bf16: bool) -> float:
    """One real forward and backward pass on ``example`` (gradients then dropped), timed."""
    model.train()
    started = time.perf_counter()
    loss, n = _loss(model, example, bf16)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return n / (time.perf_counter() - started)


def _optimizer(model: Any, settings: LoraSettings, total_steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    warmup = max(1, int(total_steps * settings.warmup_fraction))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, warmup + 1))


def save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState) -> None:
    """Write the checkpoint beside the last one, then swap it in: a kill leaves one whole checkpoint."""
    import torch

    fresh, old = folder / f"{CHECKPOINT}.new", folder / f"{CHECKPOINT}.old"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    model.save_pretrained(fresh / "adapter")
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}
    torch.save(saved, fresh / "optimizer.pt")  # the RNG too: LoRA's dropout draws the same after a resume
    (fresh / "state.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
    current = folder / CHECKPOINT
    if current.exists():
        os.replace(current, old)
    os.replace(fresh, current)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path) -> TrainState | None:
    """The state of the latest whole checkpoint in ``folder``, if there is one."""
    current, old = folder / CHECKPOINT, folder / f"{CHECKPOINT}.old"
    if not (current / "state.json").is_file() and (old / "state.json").is_file():
        os.replace(old, current)  # killed between save_checkpoint's two renames: .old is the whole one
    path = current / "state.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    data["train_losses"] = [tuple(x) for x in data["train_losses"]]
    data["heldout_losses"] = [tuple(x) for x in data["heldout_losses"]]
    return TrainState(**data)


def _step(model: Any, optimizer: Any, scheduler: Any) -> None:
    """One optimizer step on the accumulated gradients, clipped to norm 1."""
    import torch

    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _restore(folder: Path, optimizer: Any, scheduler: Any) -> None:
    """The optimizer, the schedule and the random state as the checkpoint left them."""
    import torch

    saved = torch.load(folder / CHECKPOINT / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])


def train(
    model: Any,
    train_set: list[Tokenized],
    heldout: list[Tokenized],
    settings: LoraSettings,
    folder: Path,
    *,
    progress: Callable[[TrainState, int, float | None], None] = lambda state, total, loss: None,
    checkpoint_every_s: float = 300.0,
    measured: Callable[[float], None] = lambda tokens_per_s: None,
) -> tuple[Any, TrainState]:
    """Train (or go on from ``folder``'s checkpoint); returns the PEFT model and the final state.
    ``measured`` gets the tokens/s of one real step on a middle-length example before training starts
    (it may raise to stop there)."""
    state = load_state(folder)
    model = with_lora(model, settings, folder / CHECKPOINT if state else None)
    middle = sorted(train_set, key=lambda t: len(t.input_ids))[len(train_set) // 2]
    measured(tokens_per_second(model, middle, settings.bf16))
    optimizer, scheduler = _optimizer(
        model, settings, math.ceil(len(train_set) / settings.accumulate) * settings.epochs
    )
    if state is not None:
        _restore(folder, optimizer, scheduler)
    else:
        state = TrainState(heldout_losses=[(0, heldout_loss(model, heldout, settings.bf16))])
    total = len(train_set) * settings.epochs
    model.train()
    last_save = time.monotonic()
    while state.epoch < settings.epochs:
        order = list(range(len(train_set)))
        random.Random(settings.seed + state.epoch).shuffle(order)  # the same order again after a resume
        pending: list[float] = []
        while state.position < len(order):
            started = time.perf_counter()
            example = train_set[order[state.position]]
            loss, n = _loss(model, example, settings.bf16)
            (loss / settings.accumulate).backward()
            pending.append(float(loss.detach()))
            state.position += 1
            state.tokens += n
            if len(pending) == settings.accumulate or state.position == len(order):
                _step(model, optimizer, scheduler)
                state.step += 1
                state.train_losses.append((state.step, sum(pending) / len(pending)))
                pending = []
                if time.monotonic() - last_save > checkpoint_every_s:
                    save_checkpoint(folder, model, optimizer, scheduler, state)
                    last_save = time.monotonic()
            state.seconds += time.perf_counter() - started
            progress(state, total, pending[-1] if pending else state.train_losses[-1][1])
        state.epoch += 1
        state.position = 0
        state.heldout_losses.append((state.epoch, heldout_loss(model, heldout, settings.bf16)))
        save_checkpoint(folder, model, optimizer, scheduler, state)
        last_save = time.monotonic()
        progress(state, total, None)
    return model, state
