"""Turn a follow-up into a standalone question before anything searches for it.

"Which file types does it support?" means nothing to a search; with the thread's history it means
"Which file types does Ladder's ingest support?". Classification, decomposition, research and the
draft read the standalone question (``state["standalone"]``); the turn keeps the question as typed.

A rule decides whether the question leans on the conversation at all (``context_reason``); only
then is the model asked, once, with the last few exchanges and a small token budget. A reply that
is empty, too long or not a question is dropped for the question as typed: condensing never fails
a turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.state import TurnState
from agent.core.steps.common import step
from agent.models.calls import ModelCaller
from knowledge.tokens import count_tokens

# What counts as "needs the conversation": an allowlist, small on purpose. A question that matches
# none of it is searched as typed, with no model call; a false alarm costs one short call.
_PRONOUNS = ("it", "its", "itself", "they", "them", "their", "theirs", "he", "him", "his", "she", "her")
_POINTERS = ("this", "that", "these", "those", "there", "same", "former", "latter")
REFERRING_WORDS = frozenset(_PRONOUNS + _POINTERS)
OPENING_WORDS = frozenset({"and", "also", "but", "or", "so"})
OPENING_PHRASES = frozenset({("what", "about"), ("how", "about"), ("what", "if"), ("what", "else")})
SHORT_WORDS = 4  # "In children?", "How many patients?": too short a question to stand alone
_WORD = re.compile(r"[a-z]+")
_EXISTENTIAL = re.compile(r"\b(?:is|are|was|were) there\b|\bthere (?:is|are|was|were)\b")  # "is there a limit?"

EXCHANGES = 3  # the last exchanges of the thread the model sees
SHOWN_CHARS = 300  # of each earlier message: bounds the prompt, which a CPU reads at some 100 tokens/s
MAX_TOKENS = 64  # the reply: one question
MAX_REPLY_TOKENS = 48  # longer than this, the reply was cut off or is not a question
_LABEL = re.compile(r"^(?:standalone question|rewritten question|question|follow-up)\s*:\s*", re.IGNORECASE)


def context_reason(question: str) -> str | None:
    """Why the question needs the conversation to be understood, or None when it stands alone."""
    words = _WORD.findall(_EXISTENTIAL.sub(" ", question.lower()))
    if not words:
        return None
    referring = next((w for w in words if w in REFERRING_WORDS), None)
    if referring:
        return f"refers to {referring!r}"
    if words[0] in OPENING_WORDS:
        return f"starts with {words[0]!r}"
    if tuple(words[:2]) in OPENING_PHRASES:
        return f"starts with {' '.join(words[:2])!r}"
    if len(words) <= SHORT_WORDS and question.rstrip().endswith("?"):  # "thanks a lot!" is not a question
        return f"a question of {len(words)} words"
    return None


def conversation(history: list[dict[str, str]]) -> str:
    """The last exchanges of the thread as plain lines, each message clipped."""
    lines = []
    for message in history[-2 * EXCHANGES :]:
        who = "User" if message["role"] == "user" else "Assistant"
        text = " ".join(message["content"].split())
        lines.append(f"{who}: {text[:SHOWN_CHARS]}{'…' if len(text) > SHOWN_CHARS else ''}")
    return "\n".join(lines)


def condense_messages(question: str, history: list[dict[str, str]], fewshot: bool = True) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": prompts.CONDENSE}]
    if fewshot:
        for example_q, example_a in prompts.CONDENSE_EXAMPLES:
            messages += [{"role": "user", "content": example_q}, {"role": "assistant", "content": example_a}]
    messages.append({"role": "user", "content": prompts.condense_request(conversation(history), question)})
    return messages


def usable_rewrite(reply: str, question: str) -> tuple[str | None, str]:
    """(the rewritten question, '') or (None, why the reply cannot be used)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None, "the reply was empty"
    text = _LABEL.sub("", lines[0]).strip().strip("\"'`").strip()
    if not text:
        return None, "the reply was empty"
    if count_tokens(text) > MAX_REPLY_TOKENS:
        return None, "the reply was too long to be one question"
    if question.rstrip().endswith("?") and not text.endswith("?"):
        return None, "the reply was not a question"
    return text, ""


def rewrite(caller: ModelCaller, question: str, history: list[dict[str, str]], fewshot: bool = True) -> tuple[str, str]:
    """One model call: (the standalone question, '') or (the question as typed, why the reply was dropped)."""
    reply = caller.text("condense", condense_messages(question, history, fewshot), max_tokens=MAX_TOKENS)
    text, problem = usable_rewrite(reply, question)
    return (text, "") if text is not None else (question, problem)


@dataclass(frozen=True)
class Condensed:
    standalone: str
    reason: str | None  # why the question needed the conversation; None: it stands alone, no model call
    fallback: str = ""  # why the model's rewrite was dropped for the question as typed

    def detail(self) -> dict[str, Any]:
        """What the step's end event (and so the chat and the turn log) shows."""
        out: dict[str, Any] = {"standalone": self.standalone, "model_called": self.reason is not None}
        if self.reason is not None:
            out["why"] = self.reason
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def condense_question(
    caller: ModelCaller, question: str, history: list[dict[str, str]], *, fewshot: bool = True
) -> Condensed:
    """The question made standalone: as it is on a thread's first turn or when it needs no context,
    else rewritten by one model call (or as it is, when the rewrite is unusable)."""
    reason = context_reason(question) if history else None
    if reason is None:
        return Condensed(question, None)
    standalone, problem = rewrite(caller, question, history, fewshot)
    return Condensed(standalone, reason, problem)


def condense(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    question = state["question"]
    history = (state.get("history") or []) if ctx.condense else []
    needs_context = bool(history) and context_reason(question) is not None
    with step(runtime, "condense", needs_context=needs_context) as result:
        condensed = condense_question(ctx.caller, question, history, fewshot=ctx.switches.fewshot)
        result.update(condensed.detail())
    return {"standalone": condensed.standalone}
