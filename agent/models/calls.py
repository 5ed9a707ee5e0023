"""Model calls for the graph's nodes: a hard budget, token accounting, JSON replies, streaming.

Every call goes through the ``openai`` client. JSON replies are constrained with a JSON schema
(OpenAI's ``json_schema`` format, or llama.cpp's ``json_object`` + ``schema``), validated with
pydantic, and re-asked once with the validation error before the caller's fallback takes over.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from openai import OpenAI
from pydantic import BaseModel, ValidationError

from knowledge.tokens import count_tokens

T = TypeVar("T", bound=BaseModel)
Writer = Callable[[dict[str, Any]], None]


class StreamInterrupted(RuntimeError):
    """A streamed reply ended without a finish reason: the connection dropped mid-answer."""


class BudgetExceeded(RuntimeError):
    """The turn used all the model calls it may make."""


class MalformedReply(ValueError):
    """The model's reply did not fit the requested JSON schema, even after one re-ask."""


@dataclass
class CallStats:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    estimated: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)


class ModelCaller:
    """Calls one model through the openai client, counting calls and tokens for the turn."""

    def __init__(
        self,
        client: OpenAI,
        model: str,
        *,
        max_calls: int,
        json_mode: Literal["json_schema", "json_object"] = "json_schema",
        max_tokens: int = 512,
    ) -> None:
        self.client = client
        self.model = model
        self.max_calls = max_calls
        self.json_mode = json_mode
        self.max_tokens = max_tokens
        self.stats = CallStats()
        self._lock = threading.Lock()

    def _reserve(self) -> None:
        with self._lock:
            if self.stats.calls >= self.max_calls:
                raise BudgetExceeded(f"the turn reached its limit of {self.max_calls} model calls")
            self.stats.calls += 1

    def _record(
        self,
        step: str,
        messages: list[dict[str, Any]],
        reply: str,
        usage: Any,
        started: float,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            prompt, completion, estimated = usage.prompt_tokens, usage.completion_tokens or 0, False
        else:  # servers that do not report usage (llama.cpp when streaming): count with tiktoken
            prompt = sum(count_tokens(str(m.get("content") or "")) for m in messages)
            completion, estimated = count_tokens(reply), True
        with self._lock:
            self.stats.prompt_tokens += prompt
            self.stats.completion_tokens += completion
            self.stats.seconds += time.perf_counter() - started
            self.stats.estimated = self.stats.estimated or estimated
            # Everything the turn log needs to rebuild the call as a fine-tuning example.
            self.stats.log.append(
                {
                    "step": step,
                    "model": self.model,
                    "messages": [dict(m) for m in messages],
                    "reply": reply,
                    "tool_calls": tool_calls or [],
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "estimated": estimated,
                    "seconds": round(time.perf_counter() - started, 3),
                }
            )

    def _complete(self, step: str, messages: list[dict[str, Any]], max_tokens: int | None, **extra: Any) -> Any:
        """One non-streamed call within the budget, recorded; returns the assistant message."""
        self._reserve()
        started = time.perf_counter()
        response = self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=max_tokens or self.max_tokens,
            **extra,
        )
        message = response.choices[0].message
        calls = [c.model_dump() for c in message.tool_calls or []]
        self._record(step, messages, message.content or "", response.usage, started, calls)
        return message

    def text(
        self,
        step: str,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> str:
        """A plain text reply; with ``on_token`` the reply is streamed piece by piece."""
        if on_token is None:
            return self._complete(step, messages, max_tokens).content or ""
        self._reserve()
        started = time.perf_counter()
        parts: list[str] = []
        usage = None
        finished = False
        stream = self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=max_tokens or self.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                finished = finished or choice.finish_reason is not None
                piece = choice.delta.content or ""
                if piece:
                    parts.append(piece)
                    on_token(piece)
        reply = "".join(parts)
        self._record(step, messages, reply, usage, started)
        if not finished:  # an SSE stream that just stops looks complete to the client: it is not
            raise StreamInterrupted(
                f"the model's answer was cut off mid-stream after {len(reply.split())} words"
                " (the connection dropped); ask again"
            )
        return reply

    def chat(self, step: str, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]]) -> Any:
        """One call offering native tools; returns the assistant message (content and tool_calls)."""
        return self._complete(step, messages, None, tools=tools)

    def json(self, step: str, messages: list[dict[str, Any]], model: type[T], *, max_tokens: int | None = None) -> T:
        """A reply parsed into ``model``; one re-ask with the error, then MalformedReply."""
        schema = model.model_json_schema()
        if self.json_mode == "json_schema":
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": model.__name__, "schema": schema},
            }
        else:
            response_format = {"type": "json_object", "schema": schema}
        attempt_messages = list(messages)
        error = ""
        for _ in range(2):
            reply = self._complete(step, attempt_messages, max_tokens, response_format=response_format).content or ""
            try:
                return model.model_validate(json.loads(_strip_fences(reply)))
            except (json.JSONDecodeError, ValidationError) as exc:
                error = str(exc).splitlines()[0]
                attempt_messages = [
                    *messages,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": f"That was not valid: {error}. Reply with JSON only, as specified."},
                ]
        raise MalformedReply(f"{step}: the model's reply was not valid JSON for {model.__name__} ({error})")

    def usage(self, prompt_cost_per_1m: float = 0.0, completion_cost_per_1m: float = 0.0) -> dict[str, Any]:
        """Tokens, calls and estimated cost so far."""
        stats = self.stats
        cost = (stats.prompt_tokens * prompt_cost_per_1m + stats.completion_tokens * completion_cost_per_1m) / 1e6
        return {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "model_calls": stats.calls,
            "estimated_tokens": stats.estimated,
            "estimated_cost_usd": round(cost, 6),
            "model_seconds": round(stats.seconds, 3),
        }


def _strip_fences(reply: str) -> str:
    """Models without constrained decoding sometimes wrap JSON in markdown fences."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()
