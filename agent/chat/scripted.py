"""The real chat server on a loopback port, its agent on a scripted OpenAI-compatible model: what
the browser, API, MCP and load checks talk to (``loopback_chat`` serves any agent, the embedded
model's included, for `ladder bench load --embedded`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import openai

from agent.chat.app import ChatServices, build_app, launch
from agent.core.config import Settings
from agent.core.turn import Agent, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.models.local_server import free_port
from agent.models.queue import ModelQueue
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from knowledge.base import KnowledgeBase


@dataclass
class LoopbackChat:
    url: str
    agent: Agent
    services: ChatServices


@dataclass
class ScriptedChat(LoopbackChat):
    model_server: ScriptedOpenAI


@contextmanager
def loopback_chat(agent: Agent, model_name: str | None = None, *, login: bool = False) -> Iterator[LoopbackChat]:
    """Serve the chat for ``agent`` on a free loopback port until the block ends; yields where it is."""
    services = ChatServices(agent, model_name or agent.model, login=login)
    app = build_app(services)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, services=services, block=False)
    try:
        yield LoopbackChat(f"http://127.0.0.1:{port}/", agent, services)
    finally:
        app.close()


@contextmanager
def scripted_chat(
    settings: Settings,
    kb: KnowledgeBase,
    model: ScriptedModel,
    *,
    login: bool = False,
    delay_s: float = 0.0,
    token_delay_s: float = 0.0,
    max_retries: int = 0,
    queue: ModelQueue | None = None,
) -> Iterator[ScriptedChat]:
    """Serve the chat for ``kb`` with ``model`` answering (after ``delay_s`` per call); yields where it is.
    ``queue``: turns take the model one after another, as on the embedded model."""
    with ScriptedOpenAI(chat=model, delay_s=delay_s, token_delay_s=token_delay_s) as server:
        settings = settings.model_copy(update={"openai_base_url": server.base_url, "chat_model": "scripted"})
        client = openai.OpenAI(api_key="scripted", base_url=server.base_url, max_retries=max_retries, timeout=120)
        with open_checkpointer(kb.db) as checkpointer:
            agent = Agent(settings, kb, ChatEndpoint(client, "scripted", queue=queue), checkpointer)
            with loopback_chat(agent, "scripted", login=login) as served:
                yield ScriptedChat(served.url, agent, served.services, server)
