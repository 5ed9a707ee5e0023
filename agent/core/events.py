"""What a turn streams while it runs: typed events, one class per kind.

Steps write them with LangGraph's custom stream mode; the CLI, the chat and the benchmarks read the
same objects (``isinstance`` or ``match``), and the turn log keeps each as ``to_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class StepEvent:
    """A step started or ended; an end carries its duration and what the step found (``detail``)."""

    step: str
    status: Literal["start", "end"]
    seconds: float | None = None
    sub_question: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "step", "step": self.step, "status": self.status}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.sub_question is not None:
            out["sub_question"] = self.sub_question
        return {**out, **self.detail}


@dataclass(frozen=True)
class ToolEvent:
    """A tool call with its arguments and (summarised) result."""

    name: str
    arguments: dict[str, Any]
    result: Any
    sub_question: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"type": "tool", "name": self.name, "arguments": self.arguments, "result": self.result}
        return out if self.sub_question is None else {**out, "sub_question": self.sub_question}


@dataclass(frozen=True)
class TokenEvent:
    """A piece of the answer as it streams."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "token", "text": self.text}


@dataclass(frozen=True)
class VerdictEvent:
    """The fact-check's judgement of one claim, with the chunk ids that support it."""

    claim: str
    supported: bool
    evidence: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "verdict", "claim": self.claim, "supported": self.supported, "evidence": self.evidence}


@dataclass(frozen=True)
class QueueEvent:
    """The turn waits for the model: ``ahead`` turns go first; 0 when it starts."""

    ahead: int
    seconds: float = 0.0  # waited so far

    def to_dict(self) -> dict[str, Any]:
        return {"type": "queue", "ahead": self.ahead, "seconds": self.seconds}


TurnEvent = StepEvent | ToolEvent | TokenEvent | VerdictEvent | QueueEvent


def event_from_dict(data: dict[str, Any]) -> TurnEvent | None:
    """A turn event from its ``to_dict()`` form (as the turn log keeps it); None for a kind not known."""
    fields = {k: v for k, v in data.items() if k != "type"}
    match data.get("type"):
        case "step" if "step" in fields and fields.get("status") in ("start", "end"):
            known = {"step", "status", "seconds", "sub_question"}
            detail = {k: v for k, v in fields.items() if k not in known}
            seconds, sub = fields.get("seconds"), fields.get("sub_question")
            return StepEvent(fields["step"], fields["status"], seconds, sub, detail)
        case "tool" if "name" in fields:
            arguments = fields.get("arguments") or {}
            return ToolEvent(fields["name"], arguments, fields.get("result"), fields.get("sub_question"))
        case "verdict" if "claim" in fields:
            return VerdictEvent(fields["claim"], bool(fields.get("supported")), list(fields.get("evidence") or []))
        case "token" if "text" in fields:
            return TokenEvent(str(fields["text"]))
        case "queue":
            return QueueEvent(int(fields.get("ahead") or 0), float(fields.get("seconds") or 0.0))
    return None
