"""The operator's console in the chat app: Turns, Review queue, Evaluations, Knowledge (agent/chat/console/pages.py)."""

from agent.chat.console.pages import add_console, console_link

__all__ = ["add_console", "console_link"]
