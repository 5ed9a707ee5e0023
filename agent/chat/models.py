"""The chat's model picker: the embedded model, and each LoRA adapter trained for it, started on first use.

An adapter is served by its own llama.cpp server (llama.cpp applies an adapter to the whole server);
it starts when a turn first asks for it and stops with the chat. Turns on different models do not
wait for each other, so two at once share the cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING

from agent.models.adapters import list_adapters

if TYPE_CHECKING:
    from agent.core.turn import Agent


class ModelChoices:
    """The models a chat user may pick, by the name the turn log records (``base+adapter``)."""

    def __init__(self, base: Agent, open_adapter: Callable[[str], AbstractContextManager[Agent]] | None) -> None:
        self.base = base
        self._open = open_adapter
        self._agents: dict[str, Agent] = {}
        self._stack = ExitStack()
        self._lock = threading.Lock()

    def adapters(self) -> list[str]:
        """Adapters trained for the embedded model being served (none when the model is remote)."""
        if self._open is None or not self.base.endpoint.embedded:
            return []
        settings = self.base.settings
        return [a.name for a in list_adapters(settings.data_dir) if a.base_model == settings.local_model]

    def names(self) -> list[str]:
        return [self.base.model, *(f"{self.base.model}+{name}" for name in self.adapters())]

    def agent(self, name: str | None) -> Agent:
        """The agent for a picked name; the base for none or the base's own name."""
        if not name or name == self.base.model:
            return self.base
        adapter = name.removeprefix(f"{self.base.model}+")
        if self._open is None or adapter == name or adapter not in self.adapters():
            raise ValueError(f"no model {name!r} here; pick one of {', '.join(self.names())}")
        with self._lock:  # one server per adapter, even when two tabs pick it at once
            if adapter not in self._agents:
                self._agents[adapter] = self._stack.enter_context(self._open(adapter))
            return self._agents[adapter]

    def close(self) -> None:
        """Stop every adapter's server."""
        self._stack.close()

    def __enter__(self) -> ModelChoices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
