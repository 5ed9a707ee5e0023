"""Who may see what: a logged-in user sees only their own threads, turns and feedback, and the
collections that are shared or theirs. ``user=None`` is the local operator (no login), who sees all.

Refusals name nothing the user may not know: another user's thread reads as no thread at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import psycopg

from agent.records.users import User, get_user
from knowledge.embeddings import Embedder
from knowledge.errors import LadderError
from knowledge.store import check_collection_name, check_model, ensure_collection, get_collection

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase

Visibility = Literal["private", "shared"]


class AccessError(LadderError, PermissionError):
    """The user may not read or change this; the message is safe to show them."""


def _user_id(user: User | None) -> int | None:
    return user.id if user is not None else None


def check_thread(conn: psycopg.Connection, thread_id: str, user: User | None) -> None:
    """Refuse to continue or show a thread owned by anyone but ``user`` (the threads table, which
    retention never empties: a thread whose turns were pruned is still its owner's)."""
    if user is None:
        return
    row = conn.execute("SELECT user_id FROM threads WHERE thread_id = %s", (thread_id,)).fetchone()
    if row is not None and row[0] != user.id:
        raise AccessError(f"no thread {thread_id!r}")


def claim_thread(conn: psycopg.Connection, thread_id: str, user_id: int | None) -> None:
    """Record ``user_id`` as the owner of a new thread; refuse a logged-in user another's thread.

    Called in the transaction that logs the turn, so two users starting the same new thread id at
    once cannot both get it (the second one's insert finds the first's row)."""
    conn.execute(
        "INSERT INTO threads (thread_id, user_id) VALUES (%s, %s) ON CONFLICT (thread_id) DO NOTHING",
        (thread_id, user_id),
    )
    if user_id is None:
        return  # the local operator may add to any thread
    row = conn.execute("SELECT user_id FROM threads WHERE thread_id = %s", (thread_id,)).fetchone()
    if row is None or row[0] != user_id:
        raise AccessError(f"no thread {thread_id!r}")


def check_turn(conn: psycopg.Connection, turn_id: str, user: User | None) -> None:
    """Refuse feedback on a turn that is not ``user``'s (unknown turns are the caller's to report)."""
    if user is None:
        return
    row = conn.execute("SELECT user_id FROM turns WHERE turn_id = %s", (turn_id,)).fetchone()
    if row is not None and row[0] != user.id:
        raise AccessError(f"no turn {turn_id!r}")


def readable_collections(conn: psycopg.Connection, user: User | None) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM collections WHERE %(uid)s::int IS NULL OR visibility = 'shared' OR owner_id = %(uid)s",
        {"uid": _user_id(user)},
    )
    return {name for (name,) in rows}


def check_read(conn: psycopg.Connection, collection: str, user: User | None) -> None:
    """Refuse a private collection of someone else (a missing one is left to the search to report)."""
    if user is None:
        return
    row = conn.execute("SELECT visibility, owner_id FROM collections WHERE name = %s", (collection,)).fetchone()
    if row is not None and row[0] == "private" and row[1] != user.id:
        raise AccessError(f"no collection {collection!r}")


def prepare_write(conn: psycopg.Connection, collection: str, user: User | None, embedder: Embedder) -> None:
    """Let ``user`` ingest into ``collection``: their own, or a new one made theirs and private.

    The operator's collections (owner NULL) and other users' are written from the CLI or by their owner only.
    A user owns only a collection they create: one that the operator's ingest has just created, still
    empty, is not theirs to take (its documents would land in a private collection).
    """
    if user is None:
        return
    found = get_collection(conn, collection)
    if found is None:
        check_collection_name(collection)
        with conn.transaction():
            conn.execute(
                "INSERT INTO collections (name, embedding_model, dimension, owner_id, visibility)"
                " VALUES (%s, %s, %s, %s, 'private') ON CONFLICT (name) DO NOTHING",
                (collection, embedder.model_name, embedder.dimension, user.id),
            )
    else:
        check_model(found, embedder.model_name, embedder.dimension)
    row = conn.execute("SELECT owner_id, visibility FROM collections WHERE name = %s", (collection,)).fetchone()
    if row is None or row[0] != user.id:
        hidden = row is not None and row[1] == "private"
        raise AccessError(
            f"no collection {collection!r}" if hidden else f"collection {collection!r} is read-only for you"
        )


def claim_for_operator(kb: KnowledgeBase, collection: str, *, take_over: bool = False) -> str | None:
    """Let the operator (``ladder ingest``) write to ``collection``, made now (the operator's, shared) if new.

    A collection a user owns is refused with the owner's name: the operator's documents would be
    seen by that user only. ``take_over`` makes it the operator's and shared instead (its owner may
    then read it but no longer write to it); the sentence saying so is returned, else None.
    """
    with kb.db.connection() as conn:
        ensure_collection(conn, collection, kb.embedder.model_name, kb.embedder.dimension)
        with conn.transaction():
            row = conn.execute(
                "SELECT c.visibility, u.name FROM collections c JOIN users u ON u.id = c.owner_id"
                " WHERE c.name = %s FOR UPDATE OF c",
                (collection,),
            ).fetchone()
            if row is None:
                return None  # the operator's already
            visibility, owner = row
            if not take_over:
                raise AccessError(
                    f"collection {collection!r} belongs to user {owner!r} ({visibility}); ingest into another"
                    " collection, or pass --take-over to make it the operator's and shared"
                )
            conn.execute("UPDATE collections SET owner_id = NULL, visibility = 'shared' WHERE name = %s", (collection,))
    return f"took over collection {collection!r} from user {owner!r}: it is now the operator's, and shared"


def set_visibility(conn: psycopg.Connection, collection: str, visibility: Visibility, owner: str | None = None) -> None:
    """Make a collection private or shared, optionally giving it to a user (the operator's command)."""
    if visibility not in ("private", "shared"):
        raise AccessError("visibility must be 'private' or 'shared'")
    owner_id: int | None = None
    if owner is not None:
        found = get_user(conn, owner)
        if found is None:
            raise AccessError(f"no user {owner!r}")
        owner_id = found.id
    with conn.transaction():
        updated = conn.execute(
            "UPDATE collections SET visibility = %s, owner_id = COALESCE(%s, owner_id) WHERE name = %s",
            (visibility, owner_id, collection),
        ).rowcount
    if updated != 1:
        raise AccessError(f"no collection {collection!r}")


def collection_access(conn: psycopg.Connection) -> dict[str, tuple[str, str | None]]:
    """Every collection's visibility and owner name, for listings."""
    rows = conn.execute("SELECT c.name, c.visibility, u.name FROM collections c LEFT JOIN users u ON u.id = c.owner_id")
    return {name: (visibility, owner) for name, visibility, owner in rows}
