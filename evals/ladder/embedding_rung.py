"""The fine-tuned-embeddings rung: train on approved turns, re-embed, and measure what it bought.

The pairs are split before training: the held-out questions (never trained on) measure MRR@10 of
their cited passage, by dense search, in the original collection and in the re-embedded one.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from typing import Any, Literal

from agent.core.config import Settings
from evals.finetune.exports import training_pairs
from knowledge.base import KnowledgeBase
from knowledge.db import Database
from knowledge.embedding_finetune import copy_collection, train_embeddings
from knowledge.embeddings import EmbeddingError, load_embedder


def _mrr(kb: KnowledgeBase, collection: str, pairs: list[dict[str, Any]], k: int = 10) -> float:
    """Mean reciprocal rank, per question, of the first of its cited passages among the top ``k`` dense
    hits (passages matched by text: chunk ids differ between the two collections)."""
    cited: dict[str, set[str]] = {}
    for pair in pairs:
        cited.setdefault(pair["question"], set()).add(pair["text"])
    total = 0.0
    for question, texts in cited.items():
        hits = kb.search(question, collection, k=k, mode="dense")
        rank = next((i for i, h in enumerate(hits, start=1) if h.text in texts), None)
        total += 1.0 / rank if rank else 0.0
    return total / len(cited) if cited else float("nan")


def run_embedding_rung(
    settings: Settings,
    collection: str,
    *,
    name: str | None = None,
    min_feedback: Literal["up", "any"] = "up",
    epochs: int = 1,
    holdout: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train, save under the data folder, copy ``collection`` re-embedded, and compare MRR@10."""
    target = name or f"{collection}-ft"
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", target):
        raise EmbeddingError(f"{target!r} is not a usable name (letters, digits, '_', '.', '-')")
    with Database(settings.database_config()) as db:
        with db.connection() as conn:
            pairs = training_pairs(conn, min_feedback=min_feedback, collection=collection)
        if len(pairs) < 2:
            raise EmbeddingError(
                f"{len(pairs)} (question, cited passage) pairs from approved turns in {collection!r}; at least 2"
                " are needed (thumbs up in the chat or `ladder feedback TURN up`)"
            )
        # Split by question, not by pair: a question seen in training would flatter the result.
        questions = sorted({p["question"] for p in pairs})
        random.Random(seed).shuffle(questions)
        held_questions = set(questions[: int(len(questions) * holdout)]) if len(questions) >= 5 else set()
        held = [p for p in pairs if p["question"] in held_questions]
        train = [p for p in pairs if p["question"] not in held_questions]
        model_dir = settings.data_dir / "models" / "embeddings" / target
        started = time.perf_counter()
        report = train_embeddings(
            [(p["question"], p["text"]) for p in train], settings.embedding_model, model_dir, epochs=epochs, seed=seed
        )
        base = load_embedder(settings.embedding_config())
        tuned = load_embedder(dataclasses.replace(settings.embedding_config(), model=str(model_dir)))
        with db.connection() as conn:
            copied = copy_collection(conn, collection, target, tuned)
        total_seconds = time.perf_counter() - started
        measured = held or train
        before = _mrr(KnowledgeBase(db, base), collection, measured)
        after = _mrr(KnowledgeBase(db, tuned), target, measured)
    return {
        "collection": target,
        "model_dir": str(model_dir),
        "pairs": len(pairs),
        "trained_on": len(train),
        "measured_on_questions": len({p["question"] for p in measured}),
        "measured_on_held_out": bool(held),
        "training_seconds": report.seconds,
        "total_seconds": round(total_seconds, 2),
        "loss_first_last": [round(report.first_loss, 4), round(report.last_loss, 4)],
        "chunks_reembedded": copied["chunks"],
        "mrr@10_before": round(before, 4),
        "mrr@10_after": round(after, 4),
    }
