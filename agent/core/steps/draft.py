"""Draft the answer from the passages, citing them by number; streamed token by token."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.events import TokenEvent
from agent.core.state import Passage, TurnState
from agent.core.steps.common import collect_passages, emit, numbered, pack, standalone_question, step
from knowledge.tokens import count_tokens

PROMPT_OVERHEAD_TOKENS = 350  # system prompt, example and framing around the passages


def context_passages(state: TurnState, ctx: TurnContext) -> list[Passage]:
    """The passages the draft may use: all sub-questions' passages, packed into the token budget."""
    passages = collect_passages(state.get("research") or [])
    question_tokens = count_tokens(standalone_question(state)) + sum(
        count_tokens(s) for s in state.get("sub_questions") or []
    )
    window = ctx.limits.context_tokens - ctx.limits.answer_max_tokens - PROMPT_OVERHEAD_TOKENS - 2 * question_tokens
    return pack(passages, max(min(window, ctx.limits.passage_tokens), 0))


def draft_messages(state: TurnState, ctx: TurnContext, passages: list[Passage]) -> list[dict[str, Any]]:
    """The draft's conversation; the fact-check and the revision continue it (see prompts.DRAFT)."""
    question = standalone_question(state)
    subs = state.get("sub_questions") or [question]
    system: list[dict[str, Any]] = [{"role": "system", "content": prompts.system(state.get("domain", ""))}]
    if not ctx.switches.retrieval:  # the baseline rung: the model alone (with one example on the few-shot rung)
        if ctx.switches.fewshot:
            example_q, example_a = prompts.BASELINE_EXAMPLE
            system += [{"role": "user", "content": example_q}, {"role": "assistant", "content": example_a}]
        return [*system, {"role": "user", "content": question}]
    # The draft's instructions in the system prompt: with the example, a prefix that every turn shares
    # and the model keeps evaluated; only the passages and the question are read anew.
    system[0]["content"] += f"\n\n{prompts.DRAFT}"
    if ctx.switches.fewshot:
        example_q, example_a = prompts.DRAFT_EXAMPLE
        system += [{"role": "user", "content": example_q}, {"role": "assistant", "content": example_a}]
    # Passages first, the question last: what differs between the draft and the check comes at the end.
    parts = [numbered(passages) if passages else "No passages were found.", f"Question: {question}"]
    if len(subs) > 1:
        parts.append("It has these parts:\n" + "\n".join(f"- {s}" for s in subs))
    return [*system, {"role": "user", "content": "\n".join(parts)}]


def continue_draft(
    state: TurnState, ctx: TurnContext, passages: list[Passage], draft: str, instruction: str
) -> list[dict[str, Any]]:
    """The draft's conversation with its answer and one more instruction: the prefix the model has read."""
    return [
        *draft_messages(state, ctx, passages),
        {"role": "assistant", "content": draft},
        {"role": "user", "content": instruction},
    ]


def draft(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    with step(runtime, "draft") as result:
        passages = context_passages(state, ctx)
        result["passages"] = len(passages)
        text = ctx.caller.text(
            "draft",
            draft_messages(state, ctx, passages),
            max_tokens=ctx.limits.answer_max_tokens,
            on_token=lambda piece: emit(runtime, TokenEvent(piece)),
        )
    return {"draft": text.strip()}


def smalltalk(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    with step(runtime, "smalltalk"):
        messages = [{"role": "system", "content": prompts.SMALLTALK}]
        for turn in (state.get("history") or [])[-4:]:
            messages.append({"role": turn["role"], "content": turn["content"]})
        messages.append({"role": "user", "content": state["question"]})
        text = ctx.caller.text(
            "smalltalk",
            messages,
            max_tokens=120,
            on_token=lambda piece: emit(runtime, TokenEvent(piece)),
        )
    return {"draft": text.strip()}
