"""Chat models through the ``openai`` client: any OpenAI-compatible endpoint, or the embedded one.

With ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` set, Ladder talks to that endpoint (OpenAI, vLLM,
Ollama, a llama.cpp server) unchanged. With neither, it starts the embedded llama.cpp server
with the local model and talks to it the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from openai import OpenAI
from pydantic import SecretStr

from agent.models.local_server import LocalModelServer, resolve_model_file
from agent.models.queue import ModelQueue
from knowledge.errors import LadderError

DEFAULT_OPENAI_CHAT_MODEL = "gpt-4o-mini"


class EndpointSettings(Protocol):
    """The settings a chat endpoint is opened from (agent.core.config.Settings has them all)."""

    openai_base_url: str | None
    openai_api_key: SecretStr | None
    chat_model: str | None
    local_model: str
    local_model_path: Path | None
    llm_threads: int
    llm_context_tokens: int
    llm_timeout_s: float
    llm_max_retries: int
    llm_json_mode: str
    llm_queue_timeout_s: float


class ModelConfigError(LadderError, ValueError):
    """The chat model settings do not name a usable model."""


@dataclass
class ChatEndpoint:
    """An OpenAI client and the model name to send with it."""

    client: OpenAI
    model: str
    embedded: bool = False
    base_url: str = ""
    json_mode: str = "json_schema"  # how JSON replies are constrained at this endpoint
    queue: ModelQueue | None = None  # turns wait here in order when the model serves one at a time


def local_threads(settings: EndpointSettings) -> int:
    """Threads for the embedded model: the setting, else 1 under CI and tests, else 2.

    Measured: with another process busy, 2 threads collapsed to 0.7-3 tokens/s while 1 thread
    held about 7 (1.5B), and CI and the test suite always have other processes busy.
    """
    if settings.llm_threads:
        return settings.llm_threads
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST") or "PYTEST_XDIST_WORKER" in os.environ:
        return 1
    return min(2, os.cpu_count() or 1)


def endpoint_is_configured(settings: EndpointSettings) -> bool:
    return bool(settings.openai_base_url or settings.openai_api_key)


def remote_model_name(settings: EndpointSettings, model: str | None) -> str:
    name = model or settings.chat_model
    if name:
        return name
    if not settings.openai_base_url:
        return DEFAULT_OPENAI_CHAT_MODEL
    raise ModelConfigError(
        "OPENAI_BASE_URL is set but no chat model is named: set LADDER_CHAT_MODEL to a model that endpoint serves"
    )


@contextmanager
def open_chat_endpoint(settings: EndpointSettings, model: str | None = None) -> Iterator[ChatEndpoint]:
    """A chat endpoint for ``model`` (default: the chat model); the embedded server stops on exit."""
    if endpoint_is_configured(settings):
        client = OpenAI(
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed",
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        mode = "json_schema" if settings.llm_json_mode == "auto" else settings.llm_json_mode
        yield ChatEndpoint(client, remote_model_name(settings, model), False, str(client.base_url), mode)
        return
    alias = model or settings.local_model
    server = LocalModelServer(
        resolve_model_file(alias, settings.local_model_path),
        alias=alias,
        threads=local_threads(settings),
        context_tokens=settings.llm_context_tokens,
    )
    base_url = server.start()
    try:
        client = OpenAI(
            api_key="not-needed",
            base_url=base_url,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        # llama.cpp's server takes a schema inside json_object; OpenAI-style servers take json_schema.
        mode = "json_object" if settings.llm_json_mode == "auto" else settings.llm_json_mode
        # One request at a time: whole turns take the model in arrival order (agent/models/queue.py).
        yield ChatEndpoint(client, alias, True, base_url, mode, ModelQueue(1, settings.llm_queue_timeout_s))
    finally:
        server.stop()
