"""Check the draft against the passages sentence by sentence; revise once or mark what is unsupported.

The check continues the draft's conversation (see prompts.DRAFT): the model has already read the
passages, so the check costs only its instruction and a short JSON reply. The answer is split into
sentences here, not by the model, so every sentence is judged and the reply stays small: one
``{"n", "supported", "passages"}`` per sentence. Unsupported sentences are revised away once; with
no revision left, they are listed under the answer so the reader sees what the sources do not back.
"""

from __future__ import annotations

import re
from typing import Any

from langgraph.runtime import Runtime
from sentencex import segment

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.events import VerdictEvent
from agent.core.state import Passage, TurnState, Verdict
from agent.core.steps.common import emit, step
from agent.core.steps.draft import context_passages, continue_draft
from agent.models.calls import MalformedReply

MAX_SENTENCES = 40  # FactCheck's schema bound; a longer answer's tail is judged as one piece
_CITATIONS = re.compile(r"\s*(?:\[\d{1,3}\])+")
_LEADING_CITATIONS = re.compile(r"^(?:\[\d{1,3}\])+\s*")


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences, each with its citations (a citation after the full stop stays with its sentence)."""
    sentences: list[str] = []
    for piece in segment("en", answer):
        text = piece.strip()
        lead = _LEADING_CITATIONS.match(text)
        if lead and sentences:
            sentences[-1] += " " + lead.group(0).strip()
            text = text[lead.end() :]
        if text:
            sentences.append(text)
    if len(sentences) > MAX_SENTENCES:
        sentences = [*sentences[: MAX_SENTENCES - 1], " ".join(sentences[MAX_SENTENCES - 1 :])]
    return sentences


def claim_text(sentence: str) -> str:
    """A sentence as a claim to show: without its citation markers."""
    return _CITATIONS.sub("", sentence).strip()


def _verdicts(checked: prompts.FactCheck, sentences: list[str], passages: list[Passage]) -> list[Verdict]:
    """One verdict per sentence; a sentence the model did not judge counts as unsupported."""
    by_number = {c.n: c for c in checked.checks if 1 <= c.n <= len(sentences)}
    verdicts: list[Verdict] = []
    for n, sentence in enumerate(sentences, start=1):
        judged = by_number.get(n)
        evidence = [] if judged is None else list(dict.fromkeys(judged.passages))
        verdicts.append(
            {
                "claim": claim_text(sentence) or sentence,
                "supported": bool(judged and judged.supported),
                "evidence": [passages[i - 1]["chunk_id"] for i in evidence if 1 <= i <= len(passages)],
            }
        )
    return verdicts


def fact_check(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    draft = state.get("draft") or ""
    passages = context_passages(state, ctx)
    if not ctx.switches.fact_check or not ctx.switches.retrieval or not passages or not draft:
        return {"answer": draft, "fact_check": [], "revised": False}
    with step(runtime, "fact_check") as result:
        sentences = answer_sentences(draft)
        listed = "\n".join(f"{n}. {sentence}" for n, sentence in enumerate(sentences, start=1))
        messages = continue_draft(state, ctx, passages, draft, f"{prompts.FACT_CHECK}\n\nSentences:\n{listed}")
        try:
            checked = ctx.caller.json("fact_check", messages, prompts.FactCheck, max_tokens=40 + 16 * len(sentences))
        except MalformedReply as exc:
            result["error"] = str(exc)
            return {"answer": draft, "fact_check": [], "revised": False, "errors": [str(exc)]}
        verdicts = _verdicts(checked, sentences, passages)
        for verdict in verdicts:
            emit(runtime, VerdictEvent(verdict["claim"], verdict["supported"], verdict["evidence"]))
        unsupported = [v["claim"] for v in verdicts if not v["supported"]]
        result["claims"] = len(verdicts)
        result["unsupported"] = len(unsupported)
    if not unsupported:
        return {"answer": draft, "fact_check": verdicts, "revised": False}
    if ctx.limits.max_revisions > 0:
        with step(runtime, "revise"):
            listed = "\n".join(f"- {claim}" for claim in unsupported)
            revised = ctx.caller.text(
                "revise",
                continue_draft(state, ctx, passages, draft, f"{prompts.REVISE}\n{listed}"),
                max_tokens=ctx.limits.answer_max_tokens,
            ).strip()
        if revised:
            return {"answer": revised, "fact_check": verdicts, "revised": True}
    marked = draft + "\n\nNot supported by the retrieved passages:\n" + "\n".join(f"- {c}" for c in unsupported)
    return {"answer": marked, "fact_check": verdicts, "revised": False}
