"""Check the draft against the passages sentence by sentence; revise once or mark what is unsupported.

The check continues the draft's conversation (see prompts.DRAFT): the model has already read the
passages, so the check costs only its instruction and a short JSON reply. The answer is split into
sentences here, not by the model, so every sentence is judged and the reply stays small: one
``{"n", "supported", "passages"}`` per sentence. The guards (fact_guards.py) judge first: a sentence
whose words show the passages cannot back it is unsupported with their reason, a word-for-word copy of
a passage sentence is supported by it, and the model is asked only about the others (no call at all
when none is left), each pointed at the passage most like it (with the words a near copy changed).
Unsupported sentences are revised away once; with no revision left, or where the revision still
says them (or says something the guards refuse), they are listed under the answer so the reader sees
what the sources do not back.
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
from agent.core.steps.citing import support
from agent.core.steps.common import emit, step
from agent.core.steps.draft import context_passages, continue_draft, draft_messages
from agent.core.steps.fact_guards import claim_text, closest_sentence, copied_from, guard, replaced_words
from agent.models.calls import MalformedReply, ModelCaller

__all__ = ["answer_sentences", "check_draft", "claim_text", "fact_check", "still_unsupported"]

MAX_SENTENCES = 40  # FactCheck's schema bound; a longer answer's tail is judged as one piece
_LEADING_CITATIONS = re.compile(r"^(?:\[\d{1,3}\])+\s*")
MODEL_UNSUPPORTED = "the passages do not state it"
NOT_JUDGED = "the check did not judge it"


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


def _listing(sentences: list[str], passages: list[Passage], hints: bool, quote: bool = False) -> str:
    """The sentences to judge, numbered from 1, each (with ``hints``) pointed at the passage most like it.

    Only a near copy has its changed words spelled out; the closest passage sentence is quoted in full
    only with ``quote``, since quoting roughly doubles what the check reads (the passages are already in
    the conversation).
    """
    lines = []
    for n, sentence in enumerate(sentences, start=1):
        lines.append(f"{n}. {sentence}")
        if not hints:
            continue
        claim = claim_text(sentence)
        number, closest, _ = closest_sentence(claim, passages)
        if not closest:
            continue
        swaps = replaced_words(claim, closest)
        if quote:
            lines.append(f"   (closest in passage [{number}]: {closest})")
        if swaps:
            said = "; ".join(f'"{mine}" where passage [{number}] has "{theirs}"' for theirs, mine in swaps[:3])
            lines.append(f"   (it has {said})")
        elif not quote:
            lines.append(f"   (closest: passage [{number}])")
    return "\n".join(lines)


def _ask_model(
    caller: ModelCaller,
    conversation: list[dict[str, Any]],
    draft: str,
    sentences: list[str],
    passages: list[Passage],
    hints: bool,
    quote: bool,
) -> dict[int, prompts.SentenceCheck]:
    """The model's judgement of ``sentences`` by their index there; one call, continuing the draft."""
    listing = _listing(sentences, passages, hints, quote)
    messages = [
        *conversation,
        {"role": "assistant", "content": draft},
        {"role": "user", "content": f"{prompts.FACT_CHECK}\n\nSentences:\n{listing}"},
    ]
    checked = caller.json("fact_check", messages, prompts.FactCheck, max_tokens=40 + 16 * len(sentences))
    return {c.n - 1: c for c in checked.checks if 1 <= c.n <= len(sentences)}


def check_draft(
    caller: ModelCaller,
    conversation: list[dict[str, Any]],
    question: str,
    draft: str,
    passages: list[Passage],
    *,
    guards: bool = True,
    hints: bool = True,
    quote: bool = False,
) -> list[Verdict]:
    """Judge each sentence of ``draft`` against ``passages``: one verdict per sentence, in order.

    ``conversation`` is the draft's (``draft_messages``): the check continues it. The guards judge first
    (a word-for-word copy of a passage is supported by it) and the model the rest (``guards=False``: the
    model judges every sentence; ``quote``: each shown with the closest passage sentence in full). Raises
    MalformedReply when the model's reply does not fit the schema even after one re-ask.
    """
    sentences = answer_sentences(draft)
    reasons = [guard(s, question, passages) if guards else "" for s in sentences]
    copies = [copied_from(s, passages) if guards and not reasons[i] else 0 for i, s in enumerate(sentences)]
    asked = [i for i, reason in enumerate(reasons) if not reason and not copies[i]]
    judged: dict[int, prompts.SentenceCheck] = {}
    if asked:
        replies = _ask_model(caller, conversation, draft, [sentences[i] for i in asked], passages, hints, quote)
        judged = {asked[k]: check for k, check in replies.items()}
    verdicts: list[Verdict] = []
    for i, sentence in enumerate(sentences):
        check = judged.get(i)
        supported = bool(copies[i]) or (not reasons[i] and check is not None and check.supported)
        cited = [copies[i]] if copies[i] else [] if check is None or not supported else check.passages
        reason = reasons[i] or ("" if supported else MODEL_UNSUPPORTED if check is not None else NOT_JUDGED)
        claim = claim_text(sentence) or sentence
        evidence = [passages[n - 1]["chunk_id"] for n in dict.fromkeys(cited) if 1 <= n <= len(passages)]
        verdicts.append(
            {
                "claim": claim,
                "supported": supported,
                "evidence": evidence,
                "reason": reason,
                "support": support(claim, evidence, passages),  # the sentence in each, as offsets (citing.py)
            }
        )
    return verdicts


def _revise_or_mark(
    state: TurnState, ctx: TurnContext, runtime: Runtime[TurnContext], passages: list[Passage], verdicts: list[Verdict]
) -> dict[str, Any]:
    """Rewrite the draft once without its unsupported sentences (told why each is), or list them under it."""
    draft = state.get("draft") or ""
    unsupported = [v for v in verdicts if not v["supported"]]
    if ctx.limits.max_revisions > 0:
        with step(runtime, "revise"):
            listed = "\n".join(f"- {v['claim']} ({v.get('reason') or MODEL_UNSUPPORTED})" for v in unsupported)
            revised = ctx.caller.text(
                "revise",
                continue_draft(state, ctx, passages, draft, f"{prompts.REVISE}\n{listed}"),
                max_tokens=ctx.limits.answer_max_tokens,
            ).strip()
        if revised:
            kept = still_unsupported(revised, state["question"], passages, unsupported)
            return {"answer": _marked(revised, kept), "fact_check": verdicts, "revised": True}
    return {"answer": _marked(draft, [v["claim"] for v in unsupported]), "fact_check": verdicts, "revised": False}


def still_unsupported(revised: str, question: str, passages: list[Passage], unsupported: list[Verdict]) -> list[str]:
    """The revision's sentences that repeat a refused claim or that the guards refuse: no model call.

    A small model asked to drop a sentence sometimes hands it back word for word; shown unmarked, it
    would read as checked.
    """
    refused = {" ".join(v["claim"].lower().split()) for v in unsupported}
    kept = []
    for sentence in answer_sentences(revised):
        claim = claim_text(sentence) or sentence
        if " ".join(claim.lower().split()) in refused or guard(sentence, question, passages):
            kept.append(claim)
    return kept


def _marked(answer: str, claims: list[str]) -> str:
    """The answer with the claims the passages do not back listed under it (none: the answer as it is)."""
    if not claims:
        return answer
    listed = "\n".join(f"- {claim}" for claim in claims)
    return f"{answer}\n\nNot supported by the retrieved passages:\n{listed}"


def fact_check(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    draft = state.get("draft") or ""
    passages = context_passages(state, ctx)
    if not ctx.switches.fact_check or not ctx.switches.retrieval or not passages or not draft:
        return {"answer": draft, "fact_check": [], "revised": False}
    with step(runtime, "fact_check") as result:
        conversation = draft_messages(state, ctx, passages)
        try:
            verdicts = check_draft(ctx.caller, conversation, state["question"], draft, passages)
        except MalformedReply as exc:
            result["error"] = str(exc)
            return {"answer": draft, "fact_check": [], "revised": False, "errors": [str(exc)]}
        for verdict in verdicts:
            emit(runtime, VerdictEvent(verdict["claim"], verdict["supported"], verdict["evidence"]))
        result["claims"] = len(verdicts)
        result["unsupported"] = sum(not v["supported"] for v in verdicts)
    if not result["unsupported"]:
        return {"answer": draft, "fact_check": verdicts, "revised": False}
    return _revise_or_mark(state, ctx, runtime, passages, verdicts)
