"""The console's records: roles, the review queue, named eval sets with versions, `ladder logs show`,
and `ladder export evalset` / `ladder eval run set:NAME@V` reading what a reviewer accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from agent.records.access import AccessError
from agent.records.evalsets import EvalSetStoreError, list_sets, parse_set_ref, put_item, remove_item, set_items
from agent.records.review import accept, dismiss, review_queue
from agent.records.roles import is_operator, require_operator, set_role
from agent.records.turn_detail import TurnFilter, find_turns, render_turn, turn_detail
from agent.records.turns import TurnCompletion, add_feedback, finish_turn, start_turn
from agent.records.users import UserError, add_user, list_users
from evals.eval_sets import named_set
from evals.finetune.exports import evalset_records
from knowledge.db import Database

PASSWORD = "correct horse battery"
SECRET = "sk-live0123456789abcdefghijklmnop"
PASSAGES = [
    {"chunk_id": 11, "doc_id": "refunds", "rank": 1, "score": 0.91, "text": "Refunds are paid within 14 days."},
    {"chunk_id": 12, "doc_id": "shipping", "rank": 2, "score": 0.42, "text": "Parcels ship from Rotterdam."},
]


def _turn(conn: Any, question: str, *, fact_check: list[dict[str, Any]] | None = None, face: str = "ui") -> str:
    turn_id = f"t-{uuid.uuid4().hex}"
    start_turn(conn, turn_id, f"th-{turn_id}", question, face=face, collection="docs", data_source=None, switches={})
    done = TurnCompletion(
        answer=f"Answer to {question} [1]",
        citations=[{"number": 1, "doc_id": "refunds", "chunk_id": 11}],
        model="scripted",
        draft="a first draft",
        fact_check=fact_check or [],
        passages=PASSAGES,
        events=[
            {"type": "step", "step": "retrieve", "status": "start"},
            {"type": "step", "step": "retrieve", "status": "end", "seconds": 0.25},
            {"type": "step", "step": "answer", "status": "end", "seconds": 1.5},
        ],
        model_calls=[
            {
                "step": "answer",
                "model": "scripted",
                "messages": [{"role": "user", "content": f"{question} key {SECRET}"}],
                "reply": "Refunds take 14 days [1]",
                "prompt_tokens": 40,
                "completion_tokens": 7,
                "seconds": 1.4,
            }
        ],
    )
    finish_turn(conn, turn_id, done)
    return turn_id


def test_roles_operator_flag_and_server_check(embedded_db: Database) -> None:
    tag = uuid.uuid4().hex[:6]
    with embedded_db.connection() as conn:
        op = add_user(conn, f"op-{tag}", PASSWORD, operator=True)
        plain = add_user(conn, f"ann-{tag}", PASSWORD)
        roles = {u["name"]: u["role"] for u in list_users(conn)}
        assert roles[op.name] == "operator" and roles[plain.name] == "user"
        assert is_operator(conn, None)  # the local no-login mode is the operator
        require_operator(conn, op)
        with pytest.raises(AccessError, match="operators"):
            require_operator(conn, plain)
        set_role(conn, plain.name, "operator")
        require_operator(conn, plain)
        set_role(conn, op.name, "user")  # a demotion counts at the next check, not the next login
        with pytest.raises(AccessError):
            require_operator(conn, op)
        with pytest.raises(UserError, match="role"):
            set_role(conn, plain.name, "admin")  # type: ignore[arg-type]
        with pytest.raises(UserError, match="no user"):
            set_role(conn, f"ghost-{tag}", "operator")


def test_set_versions_add_edit_remove_and_read_back(embedded_db: Database) -> None:
    name = f"golden-{uuid.uuid4().hex[:6]}"
    with embedded_db.connection() as conn:
        assert put_item(conn, name, {"item_id": "a", "question": "Q a?", "reference_answer": "A1"}) == 1
        assert put_item(conn, name, {"item_id": "b", "question": "Q b?", "reference_answer": "B"}) == 2
        assert put_item(conn, name, {"item_id": "a", "question": "Q a?", "reference_answer": "A2"}) == 3  # an edit
        assert remove_item(conn, name, "b") == 4
        answers = {v: {i["item_id"]: i["reference_answer"] for i in set_items(conn, name, v)[1]} for v in range(1, 5)}
        assert answers == {1: {"a": "A1"}, 2: {"a": "A1", "b": "B"}, 3: {"a": "A2", "b": "B"}, 4: {"a": "A2"}}
        assert set_items(conn, name)[0] == 4
        with pytest.raises(EvalSetStoreError, match="versions 1 to 4"):
            set_items(conn, name, 5)
        with pytest.raises(EvalSetStoreError, match="no item"):
            remove_item(conn, name, "b")
        with pytest.raises(EvalSetStoreError, match="reference_answer"):
            put_item(conn, name, {"item_id": "c", "question": "Q?", "reference_answer": "  "})
        assert set_items(conn, name)[0] == 4, "a refused change must not bump the version"
        evalset = named_set(conn, name, 2)
        assert evalset.name == f"set:{name}@2" and [e.id for e in evalset.examples] == ["a", "b"]
        assert {s["name"]: (s["version"], s["items"]) for s in list_sets(conn)}[name] == (4, 1)
    assert parse_set_ref(f"set:{name}@3") == (name, 3) and parse_set_ref(f"set:{name}") == (name, None)
    assert parse_set_ref("pubmedqa") is None
    with pytest.raises(EvalSetStoreError):
        parse_set_ref("set:bad name")


def test_the_queue_accept_and_dismiss(embedded_db: Database) -> None:
    name = f"reviewed-{uuid.uuid4().hex[:6]}"
    unsupported = [{"claim": "Parcels fly.", "supported": False, "evidence": [], "reason": "no passage"}]
    with embedded_db.connection() as conn:
        down = _turn(conn, "How long do refunds take?")
        add_feedback(conn, down, "down", "wrong number")
        flagged = _turn(conn, "Where do parcels ship from?", fact_check=unsupported)
        liked = _turn(conn, "Liked?")
        add_feedback(conn, liked, "up")
        changed = _turn(conn, "Changed their mind?")
        add_feedback(conn, changed, "down")
        add_feedback(conn, changed, "up")  # the newest feedback counts
        conn.execute("UPDATE turns SET started_at = now() - interval '1 hour' WHERE turn_id = %s", (flagged,))
        mine = {down, flagged, liked, changed}
        queued = [q for q in review_queue(conn) if q["turn_id"] in mine]
        assert [q["turn_id"] for q in queued] == [flagged, down], "oldest first, only thumbs-down or unsupported"
        assert queued[0]["reasons"] == ["unsupported claim"] and queued[1]["reasons"] == ["thumbs-down"]
        assert queued[1]["comment"] == "wrong number"

        with pytest.raises(EvalSetStoreError, match="did not retrieve"):
            accept(conn, down, name, "Refunds take 14 days.", [11, 999])
        assert down in {q["turn_id"] for q in review_queue(conn)}, "a refused accept leaves the turn queued"
        assert accept(conn, down, name, "Refunds take 14 days.", [11], reviewer="op") == 1
        version, items = set_items(conn, name)
        assert version == 1 and items[0]["reference_answer"] == "Refunds take 14 days."
        assert items[0]["reference_contexts"] == ["Refunds are paid within 14 days."]
        assert items[0]["reference_doc_ids"] == ["refunds"]
        with pytest.raises(EvalSetStoreError, match="why"):
            dismiss(conn, flagged, "   ")
        dismiss(conn, flagged, "the claim is a joke", reviewer="op")
        assert not mine & {q["turn_id"] for q in review_queue(conn)}
        assert accept(conn, down, name, "Refunds take 14 days at most.", [11, 12]) == 2  # editing bumps it

        records, _ = evalset_records(conn, personal=False)
        mine_out = [r for r in records if r["id"] == down]
        assert len(mine_out) == 1 and mine_out[0]["reference_answer"] == "Refunds take 14 days at most."
        assert mine_out[0]["reference_doc_ids"] == ["refunds", "shipping"]


def test_turn_detail_and_filters(embedded_db: Database) -> None:
    unsupported = [{"claim": "Parcels fly.", "supported": False, "evidence": [], "reason": "no passage"}]
    with embedded_db.connection() as conn:
        turn_id = _turn(conn, "Detail question?", fact_check=unsupported, face="openai")
        add_feedback(conn, turn_id, "down", "bad")
        turn = turn_detail(conn, turn_id)
        other = _turn(conn, "Other question?", face="cli")
        found = {t["turn_id"] for t in find_turns(conn, TurnFilter(face="openai", fact_check_failed=True))}
        downs = {t["turn_id"] for t in find_turns(conn, TurnFilter(feedback="down"))}
        plain = {t["turn_id"] for t in find_turns(conn, TurnFilter(feedback="none", face="cli"))}
    assert turn is not None
    assert [(s["step"], s["seconds"]) for s in turn["steps"]] == [("retrieve", 0.25), ("answer", 1.5)]
    assert turn["model_calls"][0]["prompt_tokens"] == 40
    assert SECRET not in json.dumps(turn, default=str), "secrets are redacted"
    text = render_turn(turn)
    for expected in (
        "== steps ==",
        "retrieve: 0.250 s",
        "#1 score 0.9100 chunk 11",
        "UNSUPPORTED: Parcels fly.",
        "a first draft",
        "[1] refunds (chunk 11)",
        "down: bad",
        "40 in, 7 out",
    ):
        assert expected in text, expected
    assert turn_id in found and other not in found
    assert turn_id in downs and other not in downs
    assert other in plain and turn_id not in plain
    with embedded_db.connection() as conn:
        assert turn_detail(conn, "no-such-turn") is None


def _cli(db: Database, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env["LADDER_DATA_DIR"] = str(db.embedded.root)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
    )


def test_cli_logs_show_and_users_add_operator(embedded_db: Database, tmp_path: Any) -> None:
    with embedded_db.connection() as conn:
        turn_id = _turn(conn, "Shown by the CLI?")
        add_feedback(conn, turn_id, "down", "too vague")
        accept(conn, turn_id, "cli-set", "The CLI shows it whole.", [12])
    shown = _cli(embedded_db, "logs", "show", turn_id)
    assert shown.returncode == 0, shown.stderr
    assert "#2 score 0.4200 chunk 12" in shown.stdout and "answer: 1.500 s" in shown.stdout
    assert "accepted: into cli-set@" in shown.stdout
    as_json = json.loads(_cli(embedded_db, "logs", "show", turn_id, "--json").stdout)
    assert as_json["passages"][1]["score"] == 0.42 and as_json["feedback"][0]["comment"] == "too vague"
    missing = _cli(embedded_db, "logs", "show", "nope")
    assert missing.returncode == 1 and "no turn 'nope'" in missing.stderr
    out = tmp_path / "set.jsonl"
    exported = _cli(embedded_db, "export", "evalset", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    line = next(json.loads(x) for x in out.read_text().splitlines() if json.loads(x)["id"] == turn_id)
    assert line["reference_answer"] == "The CLI shows it whole." and line["reference_doc_ids"] == ["shipping"]
    name = f"cliop-{uuid.uuid4().hex[:6]}"
    added = _cli(embedded_db, "users", "add", name, "--operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0 and "added operator" in added.stdout, added.stderr
    with embedded_db.connection() as conn:
        assert {u["name"]: u["role"] for u in list_users(conn)}[name] == "operator"
        conn.execute("DELETE FROM users WHERE name = %s", (name,))  # logins stay off for the rest of the session


def test_cli_eval_run_reads_named_sets_and_refuses_bad_ones(embedded_db: Database) -> None:
    missing = _cli(embedded_db, "eval", "run", f"set:nothing-{uuid.uuid4().hex[:6]}", "--ladder", "baseline")
    assert missing.returncode != 0 and "no eval set" in missing.stderr, missing.stderr
    name = f"cli-run-{uuid.uuid4().hex[:6]}"
    with embedded_db.connection() as conn:
        put_item(conn, name, {"item_id": "a", "question": "Q?", "reference_answer": "A"})
    too_new = _cli(embedded_db, "eval", "run", f"set:{name}@7", "--ladder", "baseline")
    assert too_new.returncode != 0 and "versions 1 to 1, not 7" in too_new.stderr, too_new.stderr
    not_named = _cli(embedded_db, "eval", "run", "pubmedqa", "--version", "2")
    assert not_named.returncode != 0 and "needs a named set" in not_named.stderr, not_named.stderr
    listed = _cli(embedded_db, "eval", "sets", "--json")
    assert {json.loads(line)["name"]: json.loads(line)["version"] for line in listed.stdout.splitlines()}[name] == 1
    items = _cli(embedded_db, "eval", "sets", f"{name}@1", "--json")
    assert [json.loads(line)["reference_answer"] for line in items.stdout.splitlines()] == ["A"], items.stderr
