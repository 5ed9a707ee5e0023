"""The fine-tuning rung's measured case: PubMedQA's training part as chat examples the embedded model
would be asked at the +retrieval rung, answered in the wanted format.

Each training question is searched in the same collection, the same way, as ``ladder eval run
pubmedqa-heldout`` searches it (dense, ``passages_per_question`` passages), and the prompt is the
draft's own (agent/core/steps/draft.py) with retrieval on and no few-shot example. The target is the
expert label, then the expert's long answer, each sentence citing the passages of the question's own
abstract: "yes/no/maybe, then the reasoning", with citations as the draft prompt asks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agent.core.config import Settings
from agent.core.context import Limits, Switches, TurnContext
from agent.core.state import Passage, TurnState
from agent.core.steps.draft import context_passages, draft_messages
from evals.eval_sets import EvalExample, EvalSet, pubmedqa_part
from evals.finetune.data import split_train_validation, write_jsonl
from evals.ladder.run import collection_for
from knowledge.base import KnowledgeBase
from tools.knowledge import find_passages, passage_of

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def target_answer(example: EvalExample, passages: list[Passage]) -> str:
    """The label, then the long answer with the own abstract's passage numbers after each sentence."""
    own = [i for i, p in enumerate(passages, 1) if p["doc_id"] in (example.reference_doc_ids or [])]
    cite = "".join(f"[{n}]" for n in own)
    sentences = [s.strip() for s in _SENTENCE_END.split(example.reference_answer or "") if s.strip()]
    reasoning = " ".join(f"{s[:-1]} {cite}{s[-1]}" if cite and s[-1] in ".!?" else s for s in sentences)
    return f"{(example.label or '').capitalize()}. {reasoning}".strip()


def chat_example(
    kb: KnowledgeBase, settings: Settings, evalset: EvalSet, collection: str, example: EvalExample
) -> dict[str, Any]:
    """One training example: the draft's messages for this question, and the target answer."""
    question = evalset.prompt(example)
    ctx = TurnContext(
        caller=None,  # type: ignore[arg-type]  (the draft's prompt needs no model)
        kb=kb,
        collection=collection,
        switches=Switches(fewshot=False, retrieval=True, hyde=False, rerank=False, decompose=False, fact_check=False),
        limits=Limits.from_settings(settings, embedded=True),
        search_mode="dense",
    )
    hits = find_passages(kb, collection, question, k=settings.passages_per_question, mode="dense")
    state: TurnState = {  # type: ignore[typeddict-item]
        "question": question,
        "research": [{"index": 0, "sub_question": question, "passages": [passage_of(h) for h in hits], "searches": []}],
    }
    passages = context_passages(state, ctx)
    messages = draft_messages(state, ctx, passages)
    return {"messages": [*messages, {"role": "assistant", "content": target_answer(example, passages)}]}


def write_training_files(
    kb: KnowledgeBase, settings: Settings, out_dir: Path, *, count: int, validation_fraction: float = 0.1
) -> dict[str, Any]:
    """pubmedqa-train.jsonl and its .validation.jsonl in ``out_dir``, from the first ``count`` training questions."""
    heldout = pubmedqa_part("heldout")
    collection = collection_for(kb, heldout, None)  # the collection the held-out questions are asked of
    training = pubmedqa_part("train")
    examples = [chat_example(kb, settings, training, collection, e) for e in training.examples[:count]]
    train, validation = split_train_validation(examples, validation_fraction, seed=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_file = out_dir / "pubmedqa-train.jsonl"
    write_jsonl(train_file, train)
    write_jsonl(train_file.with_name("pubmedqa-train.validation.jsonl"), validation)
    return {
        "train_file": str(train_file),
        "train": len(train),
        "validation": len(validation),
        "collection": collection,
        "heldout_questions": len(heldout.examples),
    }
