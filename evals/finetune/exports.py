"""The turn log as data: exporting turns as an evaluation set or as OpenAI chat fine-tuning examples
(listing and pruning turns is the records layer's: agent.records.turns).

An evaluation-set line is ``{"id", "question", "reference_answer"?, "reference_contexts"?,
"reference_doc_ids"?, "label"?}`` (the format evals/ reads). A fine-tuning example is the turn as
a tool-using conversation: the question, each ``search_knowledge`` (or ``query_database``) call
the agent made with its result, and the answer the user approved or corrected.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agent.core import prompts
from agent.records.redact import redact
from agent.records.turns import Feedback
from knowledge.search import SearchHit
from tools.knowledge import SCHEMA as SEARCH_SCHEMA
from tools.knowledge import format_passages
from tools.sql.tool import SCHEMAS as SQL_SCHEMAS


def _turns_with_feedback(conn: psycopg.Connection, feedback: Feedback) -> list[dict[str, Any]]:
    """Finished turns with their latest feedback; ``up`` also takes a turn the user corrected."""
    condition = {
        "up": "(f.rating = 'up' OR f.corrected_answer IS NOT NULL)",
        "down": "f.rating = 'down'",
        "any": "f.rating IS NOT NULL",
        "none": "TRUE",
    }[feedback]
    cur = conn.cursor(row_factory=dict_row).execute(
        "SELECT t.*, f.rating, f.comment, f.corrected_answer FROM turns t"
        " LEFT JOIN LATERAL (SELECT rating, comment, corrected_answer FROM feedback"
        "  WHERE feedback.turn_id = t.turn_id ORDER BY id DESC LIMIT 1) f ON TRUE"
        f" WHERE t.status = 'done' AND {condition} ORDER BY t.started_at",
    )
    return cur.fetchall()


def _cited_passages(turn: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {p["chunk_id"]: p for p in turn.get("passages") or []}
    return [by_id[c["chunk_id"]] for c in turn.get("citations") or [] if c.get("chunk_id") in by_id]


def reference_answer(turn: dict[str, Any]) -> str | None:
    """The answer a user vouched for: their correction, else the answer they approved."""
    if turn.get("corrected_answer"):
        return str(turn["corrected_answer"])
    if turn.get("rating") == "up" and turn.get("answer"):
        return str(turn["answer"])
    return None


def accepted_corrections(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """By turn id: the reference a reviewer accepted into a named set (its current item; the newest if in several)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (turn_id) turn_id, question, reference_answer, reference_contexts, reference_doc_ids"
        " FROM eval_set_items WHERE turn_id IS NOT NULL AND valid_to IS NULL ORDER BY turn_id, id DESC"
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for turn_id, question, reference, contexts, doc_ids in rows:
        record: dict[str, Any] = {"id": turn_id, "question": question, "reference_answer": reference}
        if contexts:
            record["reference_contexts"], record["reference_doc_ids"] = list(contexts), list(doc_ids)
        out[turn_id] = {**record, "label": "reviewed"}
    return out


def evalset_records(conn: psycopg.Connection, *, personal: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Turns with feedback as evaluation-set lines, a reviewer's accepted correction taking the place of the
    user's feedback (agent.records.review); also how many were left out (no reference)."""
    records, skipped = [], 0
    reviewed = accepted_corrections(conn)
    for turn in _turns_with_feedback(conn, "any"):
        if turn["turn_id"] in reviewed:
            continue
        reference = reference_answer(turn)
        if reference is None:  # a thumbs-down without a correction says what is wrong, not what is right
            skipped += 1
            continue
        cited = _cited_passages(turn)
        record: dict[str, Any] = {"id": turn["turn_id"], "question": turn["question"], "reference_answer": reference}
        if cited:
            record["reference_contexts"] = [p["text"] for p in cited]
            record["reference_doc_ids"] = list(dict.fromkeys(p["doc_id"] for p in cited))
        record["label"] = turn["rating"]
        records.append(redact(record, personal=personal))
    records += [redact(record, personal=personal) for record in reviewed.values()]
    return records, skipped


def _passages_text(passages: list[dict[str, Any]]) -> str:
    """Logged passages as the search tool shows them to a model (the same delimiting and escaping)."""
    hits = [
        SearchHit(p["chunk_id"], p.get("score", 0.0), doc_id=p["doc_id"], text=p["text"], title=p.get("title") or "")
        for p in passages
    ]
    return format_passages(hits)


def finetune_example(turn: dict[str, Any], *, system: bool = True, target: str | None = None) -> dict[str, Any] | None:
    """The turn as a chat fine-tuning example with its tool calls and results; None without a target.

    The target is ``target`` when given (a teacher's answer), else the answer the user vouched for.
    """
    target = target or reference_answer(turn)
    if target is None:
        return None
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": prompts.SYSTEM})
    messages.append({"role": "user", "content": turn["question"]})
    passages = turn.get("passages") or []
    calls = 0
    for event in turn.get("events") or []:
        if event.get("type") != "tool":
            continue
        calls += 1
        call_id = f"call_{calls}"
        name = event["name"]
        arguments = {k: v for k, v in event["arguments"].items() if k != "database"}
        if name == "query_database":
            result = json.dumps(event["result"], ensure_ascii=False, default=str)
        else:
            ids = [r["chunk_id"] for r in event["result"]]
            found = {p["chunk_id"]: p for p in passages if p["chunk_id"] in ids}
            result = _passages_text([found[i] for i in ids if i in found])
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
    messages.append({"role": "assistant", "content": target})
    used = {m["tool_calls"][0]["function"]["name"] for m in messages if m.get("tool_calls")}
    example: dict[str, Any] = {"messages": messages}
    if used:
        example["tools"] = [s for s in (SEARCH_SCHEMA, *SQL_SCHEMAS) if s["function"]["name"] in used]
    return example


def finetune_examples(
    conn: psycopg.Connection, *, min_feedback: Feedback = "up", system: bool = True, personal: bool = True
) -> list[dict[str, Any]]:
    """Every logged turn that qualifies, as fine-tuning examples (redacted)."""
    examples = []
    for turn in _turns_with_feedback(conn, "any" if min_feedback == "none" else min_feedback):
        example = finetune_example(turn, system=system)
        if example is not None:
            examples.append(redact(example, personal=personal))
    return examples


def logged_questions(conn: psycopg.Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Distinct questions of finished turns (with the collection and database they were asked of)."""
    cur = conn.execute(
        "SELECT DISTINCT ON (question) question, collection, data_source FROM turns"
        " WHERE status = 'done' AND face <> 'distill' ORDER BY question, started_at DESC LIMIT %s",
        (limit,),
    )
    return [{"question": q, "collection": c, "data_source": d} for q, c, d in cur.fetchall()]


def distilled_examples(
    agent: Any, conn: psycopg.Connection, *, system: bool = True, personal: bool = True, limit: int = 1000
) -> tuple[list[dict[str, Any]], int]:
    """Re-answer the logged questions with ``agent`` (a stronger teacher model); keep the answers whose
    every claim passed the fact-check, as targets. Returns the examples and how many were dropped."""
    from agent.core.turn import QuestionError, TurnRequest
    from tools.sql.database import DataSourceError

    examples, dropped = [], 0
    for item in logged_questions(conn, limit=limit):
        collection = item["collection"] or "default"
        request = TurnRequest(item["question"], collection, None, None, item["data_source"], face="distill")
        try:
            result = agent.ask(request)
        except (QuestionError, DataSourceError):  # e.g. the database it was asked of is gone: skip it
            dropped += 1
            continue
        verdicts = result.fact_check
        checked = bool(verdicts) and all(v["supported"] for v in verdicts)
        if result.error or not (checked or result.data):
            dropped += 1
            continue
        turn = (
            conn.cursor(row_factory=dict_row)
            .execute("SELECT * FROM turns WHERE turn_id = %s", (result.turn_id,))
            .fetchone()
        )
        if turn is None:  # the teacher's turn was not logged: nothing to rebuild the example from
            dropped += 1
            continue
        example = finetune_example(turn, system=system, target=result.answer)
        if example is not None:
            examples.append(redact(example, personal=personal))
    return examples, dropped


def training_pairs(
    conn: psycopg.Connection, *, min_feedback: Feedback = "up", collection: str | None = None
) -> list[dict[str, Any]]:
    """(question, cited passage) pairs from approved turns, for fine-tuning the embedding model."""
    pairs = []
    for turn in _turns_with_feedback(conn, "any" if min_feedback == "none" else min_feedback):
        if collection is not None and turn.get("collection") != collection:
            continue
        for passage in _cited_passages(turn):
            pairs.append({"question": turn["question"], "chunk_id": passage["chunk_id"], "text": passage["text"]})
    return pairs
