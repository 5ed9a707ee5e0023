"""Split a multi-part question into sub-questions (query expansion), one model call at most."""

from __future__ import annotations

import re
from typing import Any

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.state import TurnState
from agent.core.steps.common import standalone_question, step
from agent.models.calls import MalformedReply, ModelCaller

# A rule spares the model call where a question plainly asks one thing.
_MULTI = re.compile(r"\b(and|also|as well as|versus|vs\.?|compare|both|each)\b|[;?].+\?", re.IGNORECASE)


_WH = r"(?:what|how|why|when|where|who|whom|whose|which|is|are|was|were|does|do|did|can|could|should|will)"
_CONJOINED = re.compile(rf"^(?P<a>{_WH}\b.+?)[,;]?\s+(?:and|also|and also)\s+(?P<b>{_WH}\b.+)$", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(it|its|they|them|their|this|that|these|those|he|she|his|her)\b", re.IGNORECASE)
_TWO_QUESTIONS = re.compile(r"^(?P<a>[^?]+\?)\s*(?P<b>[^?]+\?)$")


def rule_split(question: str) -> list[str] | None:
    """Two questions joined by 'and' or written one after the other, split without the model.

    "How long do refunds take, and where do parcels ship from?" needs no model call; anything the
    patterns do not cover clearly is left to the model.
    """
    text = question.strip()
    match = _CONJOINED.match(text) or _TWO_QUESTIONS.match(text)
    if match is None:
        return None
    parts = [match.group("a").strip(" ,;?"), match.group("b").strip(" ,;?")]
    if any(len(part.split()) < 3 for part in parts):
        return None
    if _PRONOUN.search(parts[1]):
        return None  # "...and how tall is it?": only the model can say what "it" is
    return [part[0].upper() + part[1:] + "?" for part in parts]


def looks_multi_part(question: str) -> bool:
    return bool(_MULTI.search(question)) or len(question.split()) > 25


def decompose_messages(question: str, fewshot: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": prompts.DECOMPOSE}]
    if fewshot:
        example_q, example_a = prompts.DECOMPOSE_EXAMPLE
        messages += [{"role": "user", "content": example_q}, {"role": "assistant", "content": example_a}]
    messages.append({"role": "user", "content": question})
    return messages


def split_question(caller: ModelCaller, question: str, max_parts: int, fewshot: bool) -> tuple[list[str], list[str]]:
    """(sub-questions, errors); falls back to the whole question when the reply is unusable."""
    try:
        reply = caller.json("decompose", decompose_messages(question, fewshot), prompts.SubQuestions, max_tokens=200)
    except MalformedReply as exc:
        return [question], [str(exc)]
    subs = list(dict.fromkeys(s.strip() for s in reply.sub_questions if s.strip()))[:max_parts]
    return subs or [question], []


def decompose(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    question = standalone_question(state)
    with step(runtime, "decompose") as result:
        if not ctx.switches.decompose or not looks_multi_part(question):
            result["sub_questions"] = [question]
            return {"sub_questions": [question]}
        ruled = rule_split(question)
        if ruled is not None:
            result["sub_questions"] = ruled
            result["by"] = "rule"
            return {"sub_questions": ruled}
        subs, errors = split_question(ctx.caller, question, ctx.limits.max_sub_questions, ctx.switches.fewshot)
        result["sub_questions"] = subs
    return {"sub_questions": subs, "errors": errors}
