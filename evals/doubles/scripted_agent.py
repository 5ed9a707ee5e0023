"""A scripted model for the graph: it recognises each step's prompt and answers like a good model.

Tests replace single steps (``model.steps["decompose"] = ...``) to script failures and odd replies.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.core import prompts
from evals.doubles.scripted_model import last_user
from tools.sql.writer import SQL_PROMPT

MARKERS = {
    "condense": prompts.CONDENSE[:40],
    "decompose": prompts.DECOMPOSE[:40],
    "hyde": prompts.HYDE[:40],
    "rerank": prompts.RERANK[:40],
    "react_json": prompts.REACT[:40],
    "react_native": prompts.REACT_NATIVE[:40],
    "fact_check": prompts.FACT_CHECK[:40],
    "revise": prompts.REVISE[:40],
    "draft": prompts.DRAFT[:40],
    "smalltalk": prompts.SMALLTALK[:40],
    "sql": SQL_PROMPT.split("{", 1)[0],
}


def step_of(body: dict[str, Any]) -> str:
    """The step a request comes from: its instruction is in the system prompt, or last in the last
    user message (draft, fact-check and revise are one conversation with one system prompt)."""
    system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    for text in (users[-1] if users else "", system):
        for step, marker in MARKERS.items():
            if marker in text:
                return step
    return "baseline"


def passage_ids(text: str) -> list[int]:
    return [int(n) for n in re.findall(r'<passage id="(\d+)"', text)]


class ScriptedModel:
    """Call it with a request body; it answers per step and counts the calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.steps: dict[str, Callable[[dict[str, Any]], str | dict[str, Any]]] = {
            "condense": self.condense,
            "decompose": self.decompose,
            "hyde": lambda body: "Refunds are paid back within fourteen days after the parcel arrives.",
            "rerank": self.rerank,
            "react_json": lambda body: json.dumps({"action": "answer"}),
            "react_native": lambda body: {"role": "assistant", "content": "Enough."},
            "draft": self.draft,
            "fact_check": self.fact_check,
            "revise": lambda body: "Refunds take 14 days [1].",
            "smalltalk": lambda body: "Hello! Ask me about your documents.",
            "baseline": lambda body: "An answer from the model alone.",
            "sql": lambda body: json.dumps({"sql": "SELECT 1"}),
        }

    def __call__(self, body: dict[str, Any]) -> str | dict[str, Any]:
        step = step_of(body)
        self.calls[step] += 1
        self.bodies.setdefault(step, []).append(body)
        return self.steps[step](body)

    @staticmethod
    def condense(body: dict[str, Any]) -> str:
        """The follow-up as it was asked (a test scripts a real rewrite where it needs one)."""
        return last_user(body).rsplit("Follow-up: ", 1)[-1].strip()

    @staticmethod
    def decompose(body: dict[str, Any]) -> str:
        question = last_user(body)
        parts = [p.strip(" ?.") + "?" for p in re.split(r"\b(?:and|with|versus)\b", question) if p.strip(" ?.")]
        return json.dumps({"sub_questions": parts})

    @staticmethod
    def rerank(body: dict[str, Any]) -> str:
        ids = passage_ids(last_user(body))
        return json.dumps({"relevant": list(reversed(ids))})

    @staticmethod
    def draft(body: dict[str, Any]) -> str:
        ids = passage_ids(last_user(body))
        if not ids:
            return "I don't know."
        return " ".join(f"Fact number {n} is stated [{n}]." for n in ids[:2])

    @staticmethod
    def fact_check(body: dict[str, Any]) -> str:
        """Every numbered sentence supported by the passages it cites."""
        listed = last_user(body).split("Sentences:\n", 1)[1]
        checks = [
            {"n": int(n), "supported": True, "passages": [int(c) for c in re.findall(r"\[(\d+)\]", sentence)]}
            for n, sentence in re.findall(r"^(\d+)\. (.*)$", listed, flags=re.M)
        ]
        return json.dumps({"checks": checks})
