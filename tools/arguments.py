"""Decoding a tool call's arguments, shared by every tool a model or an agent can call."""

from __future__ import annotations

import json
from typing import Any

from knowledge.errors import LadderError


class ToolArgumentError(LadderError, ValueError):
    """A model called a tool with arguments it cannot use; the message goes back to the model."""


def decode_arguments(raw: str | dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a dict: a JSON object string (empty means none) or a dict."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(f"arguments are not valid JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    return raw
