"""Validate OpenAI chat fine-tuning JSONL before upload, as pure functions.

Follows OpenAI's cookbook "Data preparation and analysis for chat model fine-tuning"
(https://cookbook.openai.com/examples/chat_finetuning_data_prep): its format error names, its token
count (3 tokens per message, 1 per name, 3 to prime the reply) and its billing estimate
(sum of min(tokens, limit) per example, times epochs). Extended for tool calls, which the notebook
predates, after the fine-tuning request schema (``tools``, ``parallel_tool_calls``, tool messages).
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from knowledge.tokens import count_tokens as _text_tokens

FORMAT_ERRORS = (
    "invalid_json",  # the line is not JSON (or not UTF-8)
    "data_type",  # the example, or one of its messages, is not a JSON object
    "example_unrecognized_key",  # a top-level key other than messages / tools / parallel_tool_calls
    "bad_tools",  # tools is not a list of objects, or parallel_tool_calls is not a boolean
    "missing_messages_list",  # messages absent, not a list, or empty
    "message_missing_key",  # no role; no content (outside tool-call turns); tool message without tool_call_id
    "message_unrecognized_key",  # a key this role does not accept
    "unrecognized_role",
    "missing_content",  # content empty or not a string (null only beside tool_calls)
    "invalid_weight",  # weight other than 0 or 1
    "bad_tool_calls",  # tool_calls entry lacking id, type "function", function.name or JSON-object arguments
    "unmatched_tool_call_id",  # a tool message answering no earlier assistant tool call
    "example_missing_assistant_message",
    "assistant_not_last",  # Ladder's own rule: the example must end on the assistant's turn
)
EXAMPLE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "weight", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING = 3, 1, 3
MAX_ERROR_LINES = 5


def _tool_call_ok(call: Any) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
        return False
    function = call.get("function")
    if call.get("type") != "function" or not isinstance(function, dict):
        return False
    if not isinstance(function.get("name"), str) or not function["name"]:
        return False
    try:
        return isinstance(json.loads(function.get("arguments")), dict)
    except (TypeError, ValueError, RecursionError):
        return False


def check_example(example: Any) -> list[str]:
    """The format errors of one parsed example, each key at most once, in FORMAT_ERRORS terms."""
    if not isinstance(example, dict):
        return ["data_type"]
    errors: list[str] = []
    if set(example) - EXAMPLE_KEYS:
        errors.append("example_unrecognized_key")
    tools = example.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        errors.append("bad_tools")
    if not isinstance(example.get("parallel_tool_calls", True), bool):
        errors.append("bad_tools")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*dict.fromkeys([*errors, "missing_messages_list"])]
    call_ids: set[str] = set()
    for message in messages:
        if not isinstance(message, dict):
            errors.append("data_type")
            continue
        role = message.get("role")
        role = role if isinstance(role, str) and role in MESSAGE_KEYS else None
        calls = message.get("tool_calls") if role == "assistant" else None
        if role is None:
            errors.append("unrecognized_role")
        if "role" not in message or ("content" not in message and not calls):
            errors.append("message_missing_key")
        if set(message) - MESSAGE_KEYS.get(role or "user", frozenset()):
            errors.append("message_unrecognized_key")
        content = message.get("content")
        content_ok = (isinstance(content, str) and content) or (calls and (content is None or content == ""))
        if "content" in message and not content_ok:
            errors.append("missing_content")
        if "weight" in message and (message["weight"] not in (0, 1) or isinstance(message["weight"], bool)):
            errors.append("invalid_weight")
        if "tool_calls" in message and role == "assistant":
            if not isinstance(calls, list) or not calls or not all(_tool_call_ok(c) for c in calls):
                errors.append("bad_tool_calls")
            else:
                call_ids.update(c["id"] for c in calls)
        if role == "tool":
            if "tool_call_id" not in message:
                errors.append("message_missing_key")
            elif not isinstance(message["tool_call_id"], str) or message["tool_call_id"] not in call_ids:
                errors.append("unmatched_tool_call_id")
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        errors.append("example_missing_assistant_message")
    elif not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        errors.append("assistant_not_last")
    return list(dict.fromkeys(errors))


def _message_tokens(message: dict[str, Any], encoding_name: str, *, fields: bool) -> int:
    total = 0
    for key, value in message.items():
        if isinstance(value, str) and (fields or key == "content"):
            total += _text_tokens(value, encoding_name) + (TOKENS_PER_NAME if key == "name" else 0)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        for part in (function.get("name"), function.get("arguments")):
            total += _text_tokens(part, encoding_name) if isinstance(part, str) else 0
    return total


def count_tokens(example: dict[str, Any], encoding_name: str = "cl100k_base") -> int:
    """Tokens of an example as the cookbook counts them: every string field of each message (role,
    content, name, ...) plus tool call names and arguments, 3 per message, 1 per name, 3 for the reply.
    The ``tools`` definitions are not counted (nor does the cookbook count them)."""
    messages = [m for m in example.get("messages", []) if isinstance(m, dict)]
    body = sum(TOKENS_PER_MESSAGE + _message_tokens(m, encoding_name, fields=True) for m in messages)
    return body + REPLY_PRIMING


def assistant_tokens(example: dict[str, Any], encoding_name: str = "cl100k_base") -> int:
    """Tokens of the assistant's content and tool calls (what the model is trained to produce)."""
    messages = example.get("messages", [])
    return sum(
        _message_tokens(m, encoding_name, fields=False)
        for m in messages
        if isinstance(m, dict) and m.get("role") == "assistant"
    )


def distribution(values: list[int]) -> dict[str, float]:
    """min, max, mean, median, p5 and p95 (inclusive quantiles); empty for no values."""
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else [values[0]] * 19
    return {
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p5": cuts[0],
        "p95": cuts[-1],
    }


def default_epochs(n_examples: int) -> int:
    """The cookbook's estimate of the epochs OpenAI picks by default: 3, raised toward 100 example
    passes for small sets (at most 25 epochs) and lowered toward 25,000 for large ones (at least 1)."""
    if n_examples <= 0:
        return 0
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


@dataclass
class ValidationReport:
    """What validate_jsonl found; line numbers are 1-based."""

    examples: int = 0  # non-empty lines
    valid: int = 0  # examples without format errors (kept ones plus too-long ones)
    errors: Counter[str] = field(default_factory=Counter)  # lines per error key (the cookbook counts messages)
    error_lines: dict[str, list[int]] = field(default_factory=dict)  # first MAX_ERROR_LINES per key
    too_long: list[int] = field(default_factory=list)  # valid but over max_tokens, dropped
    warnings: Counter[str] = field(default_factory=Counter)  # missing_system_message, missing_user_message
    token_stats: dict[str, float] = field(default_factory=dict)  # tokens per kept example
    assistant_token_stats: dict[str, float] = field(default_factory=dict)
    billed_tokens_per_epoch: int = 0
    max_tokens: int = 0

    @property
    def kept(self) -> int:
        """Examples returned for training: valid and within the token limit."""
        return self.valid - len(self.too_long)

    def estimate_cost(self, epochs: int, price_per_1m_training_tokens: float) -> float:
        """billed tokens per epoch × epochs × price per million training tokens / 1e6."""
        if epochs < 0 or price_per_1m_training_tokens < 0:
            raise ValueError("epochs and price must not be negative")
        return self.billed_tokens_per_epoch * epochs * price_per_1m_training_tokens / 1_000_000

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        data = asdict(self)
        data["errors"], data["warnings"], data["kept"] = dict(self.errors), dict(self.warnings), self.kept
        return data


_NOT_JSON = object()  # a line that did not parse


def _parsed_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or _NOT_JSON) for every non-empty line."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except (ValueError, RecursionError):
                yield number, _NOT_JSON


def validate_examples(
    numbered: Iterable[tuple[int, Any]], *, max_tokens: int = 65536, encoding_name: str = "cl100k_base"
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Check (line number, example) pairs; return the valid examples within max_tokens and a report.

    Nothing raises on bad data: every problem is counted with its line number.
    """
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    report = ValidationReport(max_tokens=max_tokens)
    kept: list[dict[str, Any]] = []
    lengths: list[int] = []
    assistant_lengths: list[int] = []
    for number, example in numbered:
        report.examples += 1
        errors = ["invalid_json"] if example is _NOT_JSON else check_example(example)
        for error in errors:
            report.errors[error] += 1
            lines = report.error_lines.setdefault(error, [])
            if len(lines) < MAX_ERROR_LINES:
                lines.append(number)
        if errors:
            continue
        report.valid += 1
        tokens = count_tokens(example, encoding_name)
        if tokens > max_tokens:
            report.too_long.append(number)
            continue
        roles = {m["role"] for m in example["messages"]}
        report.warnings.update(f"missing_{r}_message" for r in ("system", "user") if r not in roles)
        kept.append(example)
        lengths.append(tokens)
        assistant_lengths.append(assistant_tokens(example, encoding_name))
    report.token_stats = distribution(lengths)
    report.assistant_token_stats = distribution(assistant_lengths)
    report.billed_tokens_per_epoch = sum(min(n, max_tokens) for n in lengths)
    return kept, report


def validate_jsonl(
    path: Path, *, max_tokens: int = 65536, encoding_name: str = "cl100k_base"
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Check every line of a JSONL file (empty lines skipped, unparsable ones counted as ``invalid_json``)."""
    return validate_examples(_parsed_lines(path), max_tokens=max_tokens, encoding_name=encoding_name)


def _canonical(example: Any) -> str:
    return json.dumps(example, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def dedupe(examples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop exact duplicates (same canonical JSON), keeping first occurrences in order; also the count dropped."""
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for example in examples:
        key = _canonical(example)
        if key not in seen:
            seen.add(key)
            unique.append(example)
    return unique, len(examples) - len(unique)


def split_train_validation(
    examples: list[dict[str, Any]], fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle with ``seed`` and hold out ``fraction`` (0 to 0.5) for validation, at least one example
    when fraction > 0 and never more than half; returns (train, validation)."""
    if not 0 <= fraction <= 0.5:
        raise ValueError(f"validation fraction must be between 0 and 0.5, got {fraction!r}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_validation = min(len(shuffled) // 2, max(1, int(len(shuffled) * fraction + 0.5))) if fraction > 0 else 0
    return shuffled[n_validation:], shuffled[:n_validation]


def write_jsonl(path: Path, examples: list[dict[str, Any]]) -> int:
    """Write one compact JSON object per line (UTF-8); returns the number written.

    Written beside the target and renamed into place: a failed export never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(path.suffix + ".tmp")
    with staging.open("w", encoding="utf-8", newline="\n") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    staging.replace(path)
    return len(examples)
