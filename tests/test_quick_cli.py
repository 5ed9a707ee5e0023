"""A quick `ladder`: `--help` loads none of the heavy stacks, and a search embeds its query without torch.

What is loaded is read from ``sys.modules`` in a process of its own, as a user runs the command;
how long it takes is `ladder bench cli`'s business (no timed assertion here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from evals.bench.cli_startup import Command, time_commands
from knowledge.db import Database
from knowledge.pgembed import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import reachable_tmpdir

# Each takes a second or more to import; none is needed to print help or to embed one query.
HEAVY = ("torch", "sentence_transformers", "transformers", "gradio", "langgraph", "openai", "scipy", "matplotlib")
# Loaded when a command runs, not when its help is printed.
RUN_TIME_ONLY = ("psycopg", "numpy", "pydantic_settings", "onnxruntime", "knowledge.db", "agent.core.config")

# Runs the CLI with ARGS (sys.argv[1:]) and, at exit, writes the names of the loaded modules to stderr's last line.
PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["ladder", *sys.argv[1:]]
runpy.run_module("agent.cli", run_name="__main__")
"""


def loaded_by(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``ladder ARGS`` in a fresh interpreter; the finished process and every module it had loaded."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_") and k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in reversed(done.stderr.splitlines()) if x.startswith("MODULES ")), None)
    assert line is not None, done.stderr
    names = set(json.loads(line.removeprefix("MODULES ")))
    return done, names | {name.split(".")[0] for name in names}


def test_help_loads_none_of_the_heavy_stacks() -> None:
    done, modules = loaded_by("--help")
    assert done.returncode == 0 and "search" in done.stdout, done.stderr
    assert "agent.cli.app" in modules  # the probe ran the real CLI
    assert sorted(modules & set(HEAVY)) == []
    assert sorted(modules & set(RUN_TIME_ONLY)) == []


def test_a_group_s_help_loads_no_heavy_stack_either() -> None:
    done, modules = loaded_by("bench", "--help")
    assert done.returncode == 0 and "cli" in done.stdout, done.stderr
    assert sorted(modules & set(HEAVY + RUN_TIME_ONLY)) == []


@pytest.mark.slow
def test_a_search_embeds_with_onnx_and_finds_what_the_torch_runtime_finds(
    embedded_db: Database, tmp_path: Path
) -> None:
    """The query runs on ONNX Runtime without importing torch, on a collection whose chunks the torch
    runtime embedded (an existing collection), and ranks the same chunks with the same scores."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "pg.md").write_text("# Database\n\nSet DATABASE_URL to use your own PostgreSQL server with pgvector.")
    (folder / "ui.md").write_text("# Chat\n\nThe chat opens in the browser and streams answers.")
    (folder / "evals.md").write_text("# Evaluations\n\nThe ladder measures each technique on PubMedQA.")
    env = {"LADDER_DATA_DIR": str(embedded_db.embedded.root)}
    torch_env = {**env, "LADDER_EMBEDDING_RUNTIME": "torch"}
    ingested, _ = loaded_by("ingest", str(folder), "-c", "quick-cli", "--json", env=torch_env)
    assert ingested.returncode == 0, ingested.stderr
    query = ("search", "use my own PostgreSQL database", "-c", "quick-cli", "--mode", "dense", "--json")

    fast, modules = loaded_by(*query, env=env)
    assert fast.returncode == 0, fast.stderr
    assert "onnxruntime" in modules and sorted(modules & set(HEAVY)) == []
    reference, torch_modules = loaded_by(*query, env=torch_env)
    assert reference.returncode == 0 and "torch" in torch_modules, reference.stderr

    hits = [json.loads(run.stdout)["results"] for run in (fast, reference)]
    assert [h["chunk_id"] for h in hits[0]] == [h["chunk_id"] for h in hits[1]]
    assert hits[0][0]["doc_id"].endswith("pg.md")
    assert (
        max(abs(a["score"] - b["score"]) for a, b in zip(*hits, strict=True)) < 0.01
    )  # bf16 torch and fp32 ONNX: cosine 0.9999


def test_the_benchmark_times_each_command_and_reports_a_failing_one() -> None:
    ok = Command("ok", (sys.executable, "-c", "pass"))
    failing = Command("failing", (sys.executable, "-c", "import sys; sys.exit(3)"))
    figures, problems = time_commands([ok, failing], 2, dict(os.environ))
    assert list(figures) == ["ok"]
    assert set(figures["ok"]) == {"median_s", "p90_s", "min_s", "max_s", "cpu_median_s"}
    assert 0 < figures["ok"]["min_s"] <= figures["ok"]["median_s"] <= figures["ok"]["p90_s"] <= figures["ok"]["max_s"]
    assert len(problems) == 3 and all(p.startswith("failing: exit status 3") for p in problems)  # warm-up + 2 runs


def fake_stopping_postmaster(server: EmbeddedPostgres, seconds: float) -> subprocess.Popen:
    """A process that holds the pid file as a postmaster in fast shutdown would, for ``seconds``."""
    owner = os.stat(server.pgdata)
    ids = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    holder = subprocess.Popen(["sleep", str(seconds)], **ids)  # type: ignore[call-overload]
    lines = [str(holder.pid), str(server.pgdata), "0", "5432", str(server.socket_dir), "", "0 0", "stopping"]
    (server.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        os.chown(server.pgdata / "postmaster.pid", owner.st_uid, owner.st_gid)
    return holder


def test_the_last_user_leaves_without_waiting_and_the_next_start_waits_for_the_shutdown() -> None:
    root = reachable_tmpdir("ladder-quick-stop-")
    try:
        server = EmbeddedPostgres(root)
        for _ in range(3):  # a command, then the next one at once: each finds a server it can use
            with psycopg.connect(server.start(), connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            server.release()
        server.stop()  # waits for the last shutdown, if one is still going

        holder = fake_stopping_postmaster(server, 1.0)
        with psycopg.connect(server.start(), connect_timeout=10) as conn:
            assert holder.poll() is not None  # the start waited for the old server to be gone
            assert conn.execute("SELECT 1").fetchone() == (1,)
        server.stop()

        holder = fake_stopping_postmaster(server, 60)
        try:
            with pytest.raises(EmbeddedPostgresError, match=r"shutting down for over 0\.3 s"):
                EmbeddedPostgres(root, stop_timeout_s=0.3).start()
        finally:
            holder.kill()
            holder.wait(timeout=10)
            (server.pgdata / "postmaster.pid").unlink(missing_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
