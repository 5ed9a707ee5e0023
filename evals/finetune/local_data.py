"""Chat examples as the embedded model reads them: token ids, with the loss only on the assistant's turns.

Each example is rendered with the model's own chat template, one segment at a time: what comes
before an assistant turn (up to and including the template's ``assistant`` header) is context, the
assistant turn itself (its text or tool call and the end-of-turn token) is what is learned. Segments
are tokenized separately, as the server tokenizes a prompt and then generates after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

IGNORED = -100  # the label PyTorch's cross-entropy skips


class ExampleError(ValueError):
    """An example that cannot be trained on (no assistant turn, over the token limit, a template that
    does not extend its own prefix)."""


@dataclass(frozen=True)
class Tokenized:
    """One training example: the token ids and, per token, the id to learn or IGNORED."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORED)


def _template_ready(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call arguments as objects: the chat template writes them as JSON itself."""
    ready = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call["function"])
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = json.loads(function["arguments"])
                calls.append({**call, "function": function})
            message["tool_calls"] = calls
        if message.get("content") is None:
            message["content"] = ""
        ready.append(message)
    return ready


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, *, generation: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation))


def segments(tokenizer: Any, example: dict[str, Any]) -> list[tuple[str, bool]]:
    """The rendered example as (text, learned) pieces in order."""
    messages = _template_ready(example["messages"])
    tools = example.get("tools")
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], tools, generation=True)
        whole = _render(tokenizer, messages[: i + 1], tools, generation=False)
        if not (prompt.startswith(done) and whole.startswith(prompt)):
            raise ExampleError("the chat template does not render this conversation as a growing prefix")
        pieces += [(prompt[len(done) :], False), (whole[len(prompt) :], True)]
        done = whole
    if not pieces:
        raise ExampleError("no assistant turn to learn")
    return pieces


def tokenize(tokenizer: Any, example: dict[str, Any], max_tokens: int) -> Tokenized:
    """The example's token ids and labels; ExampleError when it has no assistant turn or is too long."""
    ids: list[int] = []
    labels: list[int] = []
    for text, learned in segments(tokenizer, example):
        piece = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids += piece
        labels += piece if learned else [IGNORED] * len(piece)
    if len(ids) > max_tokens:
        raise ExampleError(f"{len(ids)} tokens, over the limit of {max_tokens} (--max-tokens)")
    return Tokenized(ids, labels)


def tokenize_all(
    tokenizer: Any, examples: list[tuple[int, dict[str, Any]]], max_tokens: int
) -> tuple[list[Tokenized], dict[int, str]]:
    """Every (line, example) tokenized; the ones that cannot be trained on by line, with the reason."""
    kept: list[Tokenized] = []
    refused: dict[int, str] = {}
    for line, example in examples:
        try:
            kept.append(tokenize(tokenizer, example, max_tokens))
        except ExampleError as exc:
            refused[line] = str(exc)
    return kept, refused
