"""What the chat shows of a turn: its steps as collapsible messages, the streamed answer, and the
passages it cites. Plain message dicts in the shape Gradio's Chatbot takes, built fresh on every
call so that each streamed update is a new object.

Every message leaves here as safe HTML (agent.chat.safe_html): the steps, answers and passages are
written as Markdown, which the server renders so that nothing in a passage, a table cell, a file
name or an answer makes the browser fetch anything.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from typing import Any

from agent.chat.safe_html import html_text, markdown_html, marked_html, text_html
from agent.core.events import QueueEvent, StepEvent, TokenEvent, ToolEvent, TurnEvent, VerdictEvent, event_from_dict
from agent.core.results import Citation, TurnResult

STEP_TITLES = {  # the steps the chat shows, each from its start (pending) to its end (done, with its duration)
    "condense": "Understand the follow-up",
    "decompose": "Split the question",
    "research": "Research",
    "query_data": "Query the database",
    "draft": "Write the answer",
    "fact_check": "Fact-check",
    "revise": "Revise the answer",
}
# Under the streamed answer while a step still works on it: the text above is not the last word yet
WORKING_ON_ANSWER = {
    "fact_check": "Checking the answer against the sources…",
    "revise": "Rewriting the answer to keep to the sources…",
}
CITED_CHARS = 1500  # of a passage shown under its citation
ANSWER_ID_PREFIX = "turn:"


class TurnView:
    """Accumulates a turn's events (agent.core.turn.Agent.ask's on_event) into chat messages."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key or uuid.uuid4().hex[:8]  # ids must be unique in the whole chat, not only in the turn
        self.steps: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.answer = ""
        self.ahead = 0  # turns that go first on the model (agent/models/queue.py)
        self.verdicts: list[VerdictEvent] = []
        self.started = time.perf_counter()

    def _step_id(self, event: StepEvent) -> str:
        sub = event.sub_question
        return f"{self.key}:{event.step}" + (f":{sub}" if sub is not None else "")

    def _add(self, message_id: str, message: dict[str, Any]) -> None:
        if message_id not in self.steps:
            self.order.append(message_id)
        self.steps[message_id] = message

    def add(self, event: TurnEvent) -> None:
        match event:
            case TokenEvent(text=text):
                self.answer += text
            case StepEvent(step=name, detail=detail) if name in STEP_TITLES and detail.get("needs_context", True):
                self._step(event)
            case ToolEvent():
                self._tool(event)
            case QueueEvent(ahead=ahead):
                self.ahead = ahead
            case VerdictEvent():
                self.verdicts.append(event)

    def _step(self, event: StepEvent) -> None:
        step_id = self._step_id(event)
        title = STEP_TITLES[event.step]
        if event.step == "research" and event.detail.get("question"):
            title = f"{title}: {event.detail['question']}"
        previous = self.steps.get(step_id, {})
        metadata: dict[str, Any] = {"title": title, "id": step_id}
        content = previous.get("content", "")
        if event.status == "start":
            metadata["status"] = "pending"
        else:
            metadata["status"] = "done"
            metadata["duration"] = float(event.seconds or 0.0)
            content = content or _step_summary(event.step, event.detail)
            if event.step == "fact_check":
                metadata["title"] = _checked_title(event.detail)
                content = _verdict_list(self.verdicts) or content
        self._add(step_id, {"role": "assistant", "content": content, "metadata": metadata})

    def _tool(self, event: ToolEvent) -> None:
        parent = f"{self.key}:query_data" if event.name == "query_database" else None
        if parent is None and event.sub_question is not None:
            parent = f"{self.key}:research:{event.sub_question}"
        tool_id = f"{self.key}:tool:{len(self.order)}"
        arguments = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in event.arguments.items())
        metadata: dict[str, Any] = {"title": f"{event.name}({arguments})", "id": tool_id, "status": "done"}
        if parent in self.steps:
            metadata["parent_id"] = parent
        self._add(tool_id, {"role": "assistant", "content": _tool_result(event.result), "metadata": metadata})

    def messages(self) -> list[dict[str, Any]]:
        """The turn so far: its place in the model's queue, its steps, then the answer as it streams
        (with a line under it while the answer is still being checked); new objects every call."""
        out = [waiting_message(self.ahead, self.key)] if self.ahead > 0 else []
        out += [shown(self.steps[i]) for i in self.order]
        if self.answer:
            working = [text for step, text in WORKING_ON_ANSWER.items() if self._pending(step)]
            note = "".join(markdown_html(f"*{text}*") for text in working)
            out.append({"role": "assistant", "content": markdown_html(self.answer) + note})
        return out

    def _pending(self, step: str) -> bool:
        message = self.steps.get(f"{self.key}:{step}")
        return message is not None and message["metadata"].get("status") == "pending"

    def finish(self, result: TurnResult) -> list[dict[str, Any]]:
        """The finished turn: steps (fact-check verdicts filled in), the final answer and its citations."""
        for message in self.steps.values():
            metadata = message["metadata"]
            if metadata.get("status") == "pending":  # a step cut short by an error
                metadata["status"] = "done"
        fact_check = self.steps.get(f"{self.key}:fact_check")
        if fact_check is not None and result.fact_check:
            verdicts = [VerdictEvent(v["claim"], v["supported"], v.get("evidence") or []) for v in result.fact_check]
            fact_check["content"] = _verdict_list(verdicts)
        out = [shown(self.steps[i]) for i in self.order]
        text = result.answer or self.answer
        if result.error and result.error not in text:
            text = f"{text}\n\n**Error:** {result.error}" if text else f"**Error:** {result.error}"
        out.append(answer_message(text, result.turn_id, result.fact_check))
        out += citation_messages(result.citations, list(result.passages), self.key, result.fact_check)
        return out


def logged_steps(events: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """A finished turn's steps again, from the events the turn log keeps (``to_dict()`` forms)."""
    view = TurnView(key)
    for data in events:
        event = event_from_dict(data)
        if event is not None:
            view.add(event)
    return [shown(view.steps[i]) for i in view.order]


def waiting_message(ahead: int, key: str) -> dict[str, Any]:
    """The turn's place in the model's queue, while other turns go first."""
    title = f"Waiting for the model: {ahead} question{'s' if ahead != 1 else ''} ahead"
    return {"role": "assistant", "content": "", "metadata": {"title": title, "id": f"{key}:queue", "status": "pending"}}


def queued_message(question: str) -> dict[str, Any]:
    """A question typed while an answer streams: shown as asked, marked as waiting its turn."""
    return {"role": "user", "content": f"{text_html(question)}<br><em>Queued: asked when the answer above ends</em>"}


def shown(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the chat shows it: a new object, its Markdown content and its title as safe HTML."""
    out = copy.deepcopy(message)
    out["content"] = markdown_html(out.get("content") or "")
    if (out.get("metadata") or {}).get("title"):
        out["metadata"]["title"] = text_html(out["metadata"]["title"])
    return out


def user_message(question: str) -> dict[str, Any]:
    """The question as asked, shown as text (never as Markdown or HTML)."""
    return {"role": "user", "content": text_html(question)}


def question_of(value: Any) -> str:
    """The question text of a user message the browser hands back (retry, undo)."""
    if isinstance(value, list):
        value = "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text")
    return html_text(value if isinstance(value, str) else "")


def answer_message(text: str, turn_id: str, verdicts: list[Any] | None = None) -> dict[str, Any]:
    """A finished turn's answer (its id in the metadata, for feedback), with its checked claims under it:
    each supported one with the passages [n] that back it, each unsupported one marked."""
    content = markdown_html(text) + claims_html(verdicts or [])
    return {"role": "assistant", "content": content, "metadata": {"id": ANSWER_ID_PREFIX + turn_id}}


def claims_html(verdicts: list[Any]) -> str:
    """The fact-check's verdicts as a list under the answer: "✓ claim [2]" or "✗ NOT supported: claim"."""
    if not verdicts:
        return ""
    lines = []
    for verdict in verdicts:
        numbers = sorted({s["passage"] for s in verdict.get("support") or [] if s.get("passage")})
        cited = " " + "".join(f"[{n}]" for n in numbers) if numbers else ""
        if verdict.get("supported"):
            lines.append(f"- ✓ {_escaped(verdict['claim'])}{cited}")
        else:
            lines.append(f"- ✗ **NOT supported:** {_escaped(verdict['claim'])}")
    return markdown_html("**Claims, checked against the passages:**\n" + "\n".join(lines))


def _escaped(text: str) -> str:
    """A claim as literal text inside Markdown (its own asterisks and brackets shown, not read)."""
    return re.sub(r"([\\`*_\[\]#<>!|~])", r"\\\1", " ".join(text.split()))


def error_message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": markdown_html(f"**Error:** {text}")}


def citation_messages(
    citations: list[Citation], passages: list[Any], key: str, verdicts: list[Any] | None = None
) -> list[dict[str, Any]]:
    """One collapsed message per cited passage: its number and title as the title; inside, its section and
    page, the text with the sentences that support the answer's claims highlighted, and its source."""
    by_id = {p["chunk_id"]: p for p in passages}
    messages = []
    for position, citation in enumerate(citations, start=1):
        passage = by_id.get(citation.chunk_id)
        if passage is None:
            continue
        number = citation.number or position
        spans = supporting_spans(verdicts or [], citation.chunk_id)
        # cited by the answer, but the fact-check found no claim it backs: say so where the reader looks first
        unbacked = " (backs no checked claim)" if verdicts and not spans else ""
        messages.append(
            {
                "role": "assistant",
                "content": _citation_html(passage, spans),
                "metadata": {
                    "title": text_html(f"[{number}] {passage.get('title') or passage['doc_id']}{unbacked}"),
                    "id": f"{key}:cite:{citation.chunk_id}",
                    "status": "done",
                    "log": passage["doc_id"],
                },
            }
        )
    return messages


def supporting_spans(verdicts: list[Any], chunk_id: int) -> list[tuple[int, int]]:
    """The (start, end) of each sentence of the passage that the fact-check found backing a supported claim."""
    return [
        (int(s["start"]), int(s["end"]))
        for v in verdicts
        if v.get("supported")
        for s in v.get("support") or []
        if s.get("chunk_id") == chunk_id
    ]


def _citation_html(passage: dict[str, Any], spans: list[tuple[int, int]]) -> str:
    text = passage["text"]
    start = 0
    if len(text) > CITED_CHARS:  # the shown stretch starts a little before the first highlighted sentence
        start = max(0, min((s for s, _ in spans), default=0) - CITED_CHARS // 5)
    prefix = "… " if start else ""
    shown = prefix + text[start : start + CITED_CHARS] + (" …" if start + CITED_CHARS < len(text) else "")
    body = marked_html(shown, [(s - start + len(prefix), e - start + len(prefix)) for s, e in spans])
    # the passage is Markdown (documents often are); its title, section, page and file name are plain text
    where = [f"Section: {passage['heading']}"] if passage.get("heading") else []
    where += [f"Page {passage['page']}"] if passage.get("page") else []
    heading = f"<p><strong>{text_html(' · '.join(where))}</strong></p>" if where else ""
    source = f"<p><em>Source: {text_html(passage['source'])} (chunk {passage['chunk_id']})</em></p>"
    return heading + body + source


def turn_id_of(history: list[dict[str, Any]], index: int) -> str | None:
    """The turn an answer bubble belongs to: the answer message at or after ``index``, before the next question."""
    for message in history[index:]:
        if message.get("role") == "user":
            break
        found = (message.get("metadata") or {}).get("id")
        if isinstance(found, str) and found.startswith(ANSWER_ID_PREFIX):
            return found[len(ANSWER_ID_PREFIX) :]
    for message in reversed(history[:index]):  # a click on a citation below the answer
        if message.get("role") == "user":
            break
        found = (message.get("metadata") or {}).get("id")
        if isinstance(found, str) and found.startswith(ANSWER_ID_PREFIX):
            return found[len(ANSWER_ID_PREFIX) :]
    return None


def _step_summary(step: str, detail: dict[str, Any]) -> str:
    if step == "condense":
        fallback = f" ({detail['fallback']})" if detail.get("fallback") else ""
        return f"Asked as: {detail['standalone']}{fallback}" if detail.get("standalone") else ""
    if step == "decompose":
        subs = detail.get("sub_questions") or []
        return "\n".join(f"- {s}" for s in subs) if len(subs) > 1 else "One question: no split needed."
    if step == "research":
        return f"{len(detail.get('passages') or [])} passages kept"
    if step == "query_data":
        return f"{detail.get('rows', 0)} rows after {detail.get('attempts', 1)} attempt(s)"
    if step == "draft":
        return f"from {detail['passages']} passages" if detail.get("passages") else ""
    if step == "fact_check":
        if detail.get("error"):
            return f"could not check: {detail['error']}"
        return f"{detail.get('claims', 0)} claims, {detail.get('unsupported', 0)} unsupported"
    return ""


def _checked_title(detail: dict[str, Any]) -> str:
    if detail.get("error") or not detail.get("claims"):
        return STEP_TITLES["fact_check"]
    claims = int(detail["claims"])
    supported = claims - int(detail.get("unsupported") or 0)
    return f"{STEP_TITLES['fact_check']}: {supported} of {claims} sentence{'s' if claims != 1 else ''} supported"


def _verdict_list(verdicts: list[VerdictEvent]) -> str:
    return "\n".join(f"- {'supported' if v.supported else 'NOT supported'}: {v.claim}" for v in verdicts)


def _tool_result(result: Any) -> str:
    if isinstance(result, list):
        if not result:
            return "no passages found"
        return "\n".join(f"- chunk {r['chunk_id']} · {r['doc_id']} (score {r['score']})" for r in result)
    if result.get("error"):
        sql = f"\n\n```sql\n{result['sql']}\n```" if result.get("sql") else ""
        return f"error: {result['error']}{sql}"
    return f"```sql\n{result.get('sql', '')}\n```\n{len(result.get('rows') or [])} rows"
