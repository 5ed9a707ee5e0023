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

from agent.models.adapters import AdapterError, resolve_adapter
from agent.models.local_server import KNOWN_MODELS, LocalModelServer, file_sha256, resolve_model_file
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
    chat_adapter: str | None
    data_dir: Path


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


def _adapter_file(settings: EndpointSettings, base: str, model_file: Path) -> Path | None:
    """The checked GGUF of ``settings.chat_adapter`` for the embedded ``base`` model, or None without one."""
    if not settings.chat_adapter:
        return None
    known = KNOWN_MODELS.get(base)
    sha256 = known.sha256 if known and settings.local_model_path is None else file_sha256(model_file)
    try:
        return resolve_adapter(
            settings.data_dir, settings.chat_adapter, base_model=base, base_sha256=sha256, model_file=model_file
        ).path
    except AdapterError as exc:
        raise ModelConfigError(f"LADDER_CHAT_ADAPTER: {exc}") from None


@contextmanager
def open_chat_endpoint(settings: EndpointSettings, model: str | None = None) -> Iterator[ChatEndpoint]:
    """A chat endpoint for ``model`` (default: the chat model); the embedded server stops on exit."""
    if endpoint_is_configured(settings):
        if settings.chat_adapter:
            raise ModelConfigError(
                "LADDER_CHAT_ADAPTER serves an adapter on the embedded model; "
                "OPENAI_BASE_URL or OPENAI_API_KEY is set, so Ladder talks to that endpoint instead: unset one"
            )
        client = OpenAI(
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed",
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        mode = "json_schema" if settings.llm_json_mode == "auto" else settings.llm_json_mode
        yield ChatEndpoint(client, remote_model_name(settings, model), False, str(client.base_url), mode)
        return
    base = model or settings.local_model
    model_file = resolve_model_file(base, settings.local_model_path)
    lora = _adapter_file(settings, base, model_file)
    alias = f"{base}+{settings.chat_adapter}" if lora else base  # the turn log and the chat name the adapter
    server = LocalModelServer(
        model_file,
        alias=alias,
        threads=local_threads(settings),
        context_tokens=settings.llm_context_tokens,
        lora_path=lora,
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
