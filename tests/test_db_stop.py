"""`ladder db stop` stops the embedded server, as the user the server runs as (the tests run as root
here, where PostgreSQL's tools refuse to run), and says so only when it did; a stop that fails is an
error with pg_ctl's reason, never "stopped"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from knowledge.pgembed import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import reachable_tmpdir


@pytest.fixture
def root() -> Iterator[Path]:
    folder = reachable_tmpdir("ladder-stop-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def db_stop(root: Path) -> subprocess.CompletedProcess[str]:
    """`ladder db stop` in a process of its own, as an operator runs it: one that never started the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "db", "stop"],
        env={**env, "LADDER_DATA_DIR": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def alive(pid: int) -> bool:
    """Whether the process runs (an exited one its parent has not reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def owner_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_db_stop_stops_the_server_and_says_so(root: Path) -> None:
    server = EmbeddedPostgres(root)
    url = server.start()
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    if os.geteuid() == 0:  # the case that printed "stopped" and left the server running
        assert owner_of(pid) != 0 and os.stat(server.pgdata).st_uid == owner_of(pid)
    try:
        ran = db_stop(root)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == f"the embedded PostgreSQL in {server.pgdata} stopped"
        assert not server.running() and not alive(pid)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
        again = db_stop(root)
        assert again.returncode == 0 and again.stdout.strip().endswith("was not running"), again
    finally:
        server.stop()


def test_a_stop_that_fails_is_an_error_with_pg_ctls_reason(root: Path) -> None:
    """A "postmaster" that ignores the shutdown signal: pg_ctl gives up, and so does stop(), loudly."""
    server = EmbeddedPostgres(root)  # the real server gets the default time to stop (a busy machine is slow)
    server.start()
    server.stop()
    owner = os.stat(server.pgdata)
    ids = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    stubborn = subprocess.Popen(["/bin/sh", "-c", "trap '' INT; exec sleep 120"], **ids)  # type: ignore[call-overload]
    pid_file = server.pgdata / "postmaster.pid"
    try:
        pid_file.write_text(f"{stubborn.pid}\n{server.pgdata}\n")
        if os.geteuid() == 0:
            os.chown(pid_file, owner.st_uid, owner.st_gid)
        with pytest.raises(EmbeddedPostgresError, match=r"could not stop the embedded PostgreSQL .*shut down"):
            EmbeddedPostgres(root, stop_timeout_s=1).stop()
        assert stubborn.poll() is None  # it is still there, as the error says
    finally:
        stubborn.kill()
        stubborn.wait(timeout=10)
        pid_file.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a data folder owned by root only means something to root")
def test_db_stop_refuses_a_folder_no_server_of_ladders_can_run_in(root: Path) -> None:
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700)
    (pgdata / "PG_VERSION").write_text("18\n")
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n")  # a live pid: it looks running
    ran = db_stop(root)
    assert ran.returncode == 1 and "stopped" not in ran.stdout
    assert "belongs to root, and PostgreSQL never runs as root" in ran.stderr and "Traceback" not in ran.stderr
