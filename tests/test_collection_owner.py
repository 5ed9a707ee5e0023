"""Collections a user owns: the operator's `ladder ingest` does not write into one silently, and a
user cannot take a collection that the operator has just made (collection squatting)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agent.records.access import AccessError, claim_for_operator, collection_access, prepare_write, readable_collections
from agent.records.users import add_user
from knowledge.base import KnowledgeBase
from tests.test_cli import ladder

PASSWORD = "correct horse battery"


def test_an_operator_ingest_into_a_users_collection_is_refused_unless_taken_over(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    name = f"squat-{uuid.uuid4().hex[:8]}"
    with kb.db.connection() as conn:
        ann = add_user(conn, f"ann-{uuid.uuid4().hex[:6]}", PASSWORD)
        prepare_write(conn, name, ann, kb.embedder)  # what the chat does for her first upload: hers, private
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text("# Handbook\n\nThe team's travel policy: book trains over flights.")
    env = {"LADDER_DATA_DIR": str(kb.db.embedded.root)}  # type: ignore[union-attr]

    refused = ladder("ingest", str(docs), "-c", name, env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"error: collection {name!r} belongs to user {ann.name!r} (private)" in refused.stderr
    assert "pass --take-over to make it the operator's and shared" in refused.stderr
    with kb.db.connection() as conn:
        assert collection_access(conn)[name] == ("private", ann.name)
        assert conn.execute(
            "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id WHERE c.name = %s", (name,)
        ).fetchone() == (0,)  # nothing was written

    taken = ladder("ingest", str(docs), "-c", name, "--take-over", "--json", env=env)
    assert taken.returncode == 0, taken.stderr
    assert f"took over collection {name!r} from user {ann.name!r}: it is now the operator's, and shared" in taken.stderr
    assert json.loads(taken.stdout)["documents_added"] == 1
    with kb.db.connection() as conn:
        assert collection_access(conn)[name] == ("shared", None)
        assert name in readable_collections(conn, ann)  # she still reads it, the team too
        with pytest.raises(AccessError, match="read-only for you"):
            prepare_write(conn, name, ann, kb.embedder)  # but writes to it no more
    again = ladder("ingest", str(docs), "-c", name, "--json", env=env)  # the operator's now: no flag needed
    assert again.returncode == 0 and json.loads(again.stdout)["documents_unchanged"] == 1


def test_a_user_cannot_take_a_collection_the_operator_has_just_made(kb: KnowledgeBase) -> None:
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    with kb.db.connection() as conn:
        bob = add_user(conn, f"bob-{uuid.uuid4().hex[:6]}", PASSWORD)
    assert claim_for_operator(kb, name) is None  # made now, the operator's and shared, still empty
    with kb.db.connection() as conn:
        with pytest.raises(AccessError, match="read-only for you"):
            prepare_write(conn, name, bob, kb.embedder)  # before this change: an empty one became his
        assert collection_access(conn)[name] == ("shared", None)
        mine = f"{name}-bob"
        prepare_write(conn, mine, bob, kb.embedder)  # one he creates is his
        assert collection_access(conn)[mine] == ("private", bob.name)
    assert claim_for_operator(kb, name) is None  # the operator's own: allowed, nothing to say
