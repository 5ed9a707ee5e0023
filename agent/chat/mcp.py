"""The chat's public API for other agents: ``ask`` and ``search_knowledge`` (also MCP tools).

Plain typed functions whose docstrings become the schema. Each returns JSON text, not a dict:
Gradio's MCP server would send a dict as Python's repr. The same per-user checks as the chat apply.
"""

from __future__ import annotations

import json

import gradio as gr

from agent.chat.handlers import ChatHandlers
from agent.core.turn import TurnRequest
from agent.records.access import check_read
from knowledge.errors import user_errors
from tools.knowledge import passage_of, search_knowledge

PUBLIC_KEYS = ("answer", "citations", "fact_check", "thread_id", "turn_id", "error")


class AgentTools:
    """The two tools, bound to the chat's handlers (for the user of each request) and agent."""

    def __init__(self, handlers: ChatHandlers) -> None:
        self.handlers = handlers
        self.agent = handlers.agent
        self.default_collection = handlers.services.settings.collection

    def ask(self, question: str, collection: str = "", thread_id: str = "", request: gr.Request | None = None) -> str:
        """Ask Ladder a question about the team's documents and get a checked answer with citations.

        Args:
            question: The question, in plain words.
            collection: The collection to search; empty for the configured default.
            thread_id: Continue this conversation; empty to start a new one.
        Returns:
            JSON: the answer, its citations (number, doc_id, chunk_id), the fact-check verdicts, the thread id.
        """
        try:
            turn = TurnRequest(
                question,
                collection or self.default_collection,
                thread_id or None,
                face="mcp",
                user=self.handlers.user(request),
            )
            result = self.agent.ask(turn).to_dict()
        except user_errors() as exc:
            return json.dumps({"error": str(exc)})
        return json.dumps({k: result[k] for k in PUBLIC_KEYS if k in result}, ensure_ascii=False)

    def search_knowledge(self, query: str, k: int = 5, collection: str = "", request: gr.Request | None = None) -> str:
        """Search the team's documents and return the best passages, best first.

        Args:
            query: What to look for, in plain words.
            k: How many passages (1 to 20).
            collection: The collection to search; empty for the configured default.
        Returns:
            JSON: a list of passages with chunk_id, doc_id, title, text and score.
        """
        kb = self.agent.kb
        name = collection or self.default_collection
        try:
            with kb.db.connection() as conn:
                check_read(conn, name, self.handlers.user(request))
            hits, _ = search_knowledge(kb, name, {"query": query, "k": int(k)})
        except user_errors() as exc:
            return json.dumps({"error": str(exc)})
        shown = ("chunk_id", "doc_id", "title", "text", "score")
        passages = [passage_of(hit) for hit in hits]
        return json.dumps([{key: p[key] for key in shown} for p in passages], ensure_ascii=False)
