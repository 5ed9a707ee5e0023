"""Named eval sets in Postgres: items with a reference answer, and a version that goes up by one
whenever an item is added, edited or removed. Every version stays readable (``set_items(..., version=3)``),
so a run can name exactly what it was scored against (``ladder eval run set:NAME@3``).

Rows are never changed in place: an edit closes the item's current row (``valid_to``) and opens a new one.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from knowledge.errors import LadderError

SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SET_REF = re.compile(r"^set:(?P<name>[^@]+)(?:@(?P<version>\d{1,9}))?$")
MAX_TEXT_CHARS = 20_000
MAX_CONTEXTS = 50


class EvalSetStoreError(LadderError, ValueError):
    """A named-set operation that cannot be done as asked; the message says why."""


def check_set_name(name: str) -> str:
    if not SET_NAME.match(name or ""):
        raise EvalSetStoreError(
            f"set name {name!r} must be 1-64 letters, digits or _.- and start with one of the first"
        )
    return name


def parse_set_ref(text: str) -> tuple[str, int | None] | None:
    """``set:NAME`` or ``set:NAME@VERSION`` as (name, version or None); None when ``text`` is not one."""
    match = SET_REF.match(text)
    if not match:
        return None
    return check_set_name(match["name"]), int(match["version"]) if match["version"] else None


def _locked_set(conn: psycopg.Connection, name: str, *, create: bool) -> tuple[int, int]:
    """(id, version) of the set, locked for this transaction; created at version 0 if asked."""
    check_set_name(name)
    if create:
        conn.execute("INSERT INTO eval_sets (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
    row = conn.execute("SELECT id, version FROM eval_sets WHERE name = %s FOR UPDATE", (name,)).fetchone()
    if row is None:
        raise EvalSetStoreError(f"no eval set {name!r}")
    return int(row[0]), int(row[1])


def _bump(conn: psycopg.Connection, set_id: int, version: int) -> int:
    conn.execute("UPDATE eval_sets SET version = %s, updated_at = now() WHERE id = %s", (version + 1, set_id))
    return version + 1


def _check_item(item: dict[str, Any]) -> None:
    for key in ("item_id", "question", "reference_answer"):
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            raise EvalSetStoreError(f"an eval-set item needs a non-empty {key}")
        if len(value) > MAX_TEXT_CHARS:
            raise EvalSetStoreError(f"the {key} is {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    if len(item.get("reference_contexts") or []) > MAX_CONTEXTS:
        raise EvalSetStoreError(f"at most {MAX_CONTEXTS} relevant passages per item")


def put_item(conn: psycopg.Connection, name: str, item: dict[str, Any]) -> int:
    """Add the item, or replace the current item with its ``item_id`` (an edit); returns the new version.

    ``item``: item_id, question, reference_answer, and optionally reference_contexts, reference_doc_ids, turn_id.
    """
    _check_item(item)
    with conn.transaction():
        set_id, version = _locked_set(conn, name, create=True)
        new = version + 1
        conn.execute(
            "UPDATE eval_set_items SET valid_to = %s WHERE set_id = %s AND item_id = %s AND valid_to IS NULL",
            (new, set_id, item["item_id"]),
        )
        conn.execute(
            "INSERT INTO eval_set_items (set_id, item_id, question, reference_answer, reference_contexts,"
            " reference_doc_ids, turn_id, valid_from) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                set_id,
                item["item_id"],
                item["question"],
                item["reference_answer"],
                Jsonb(list(item.get("reference_contexts") or [])),
                Jsonb(list(item.get("reference_doc_ids") or [])),
                item.get("turn_id"),
                new,
            ),
        )
        return _bump(conn, set_id, version)


def remove_item(conn: psycopg.Connection, name: str, item_id: str) -> int:
    """Remove the item from the set; returns the new version."""
    with conn.transaction():
        set_id, version = _locked_set(conn, name, create=False)
        closed = conn.execute(
            "UPDATE eval_set_items SET valid_to = %s WHERE set_id = %s AND item_id = %s AND valid_to IS NULL",
            (version + 1, set_id, item_id),
        )
        if closed.rowcount != 1:
            raise EvalSetStoreError(f"no item {item_id!r} in eval set {name!r}")
        return _bump(conn, set_id, version)


def set_items(conn: psycopg.Connection, name: str, version: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """The set's items at ``version`` (default: the current one), in the order they were added; and that version."""
    check_set_name(name)
    row = conn.execute("SELECT id, version FROM eval_sets WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise EvalSetStoreError(f"no eval set {name!r}")
    set_id, current = int(row[0]), int(row[1])
    chosen = current if version is None else version
    if not 1 <= chosen <= current:
        raise EvalSetStoreError(f"eval set {name!r} has versions 1 to {current}, not {chosen}")
    items = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT item_id, question, reference_answer, reference_contexts, reference_doc_ids, turn_id, valid_from"
            " FROM eval_set_items WHERE set_id = %s AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
            " ORDER BY id",
            (set_id, chosen, chosen),
        )
        .fetchall()
    )
    return chosen, items


def list_sets(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every named set with its current version and item count."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT s.name, s.version, s.updated_at,"
            " (SELECT count(*) FROM eval_set_items i WHERE i.set_id = s.id AND i.valid_to IS NULL) AS items"
            " FROM eval_sets s ORDER BY s.name"
        )
        .fetchall()
    )
