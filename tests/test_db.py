"""The database: embedded and by URL, migrations, and safety of the embedded server's folders."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest

from knowledge.db import Database, DatabaseConfig, DatabaseError, load_migrations, migrate, redact_url
from knowledge.pgembed import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import reachable_tmpdir


def test_both_paths_have_pgvector_and_all_migrations(any_db: Database) -> None:
    with any_db.connection() as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        server = conn.execute("SHOW server_version_num").fetchone()[0]
    assert version is not None and tuple(int(x) for x in version[0].split(".")[:2]) >= (0, 8)
    assert applied == [m.version for m in load_migrations()]
    assert int(server) >= 180000


def test_migrations_are_idempotent(embedded_db: Database) -> None:
    with psycopg.connect(embedded_db.url) as conn:
        assert migrate(conn) == []


def test_tsvector_is_a_generated_column_in_the_table(embedded_db: Database) -> None:
    with embedded_db.connection() as conn:
        generated = conn.execute(
            "SELECT is_generated FROM information_schema.columns WHERE table_name = 'chunks' AND column_name = 'tsv'"
        ).fetchone()
    assert generated == ("ALWAYS",)


def test_the_embedded_server_keeps_data_across_restarts() -> None:
    root = reachable_tmpdir("ladder-restart-")
    server = EmbeddedPostgres(root)
    url = server.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    again = EmbeddedPostgres(root)
    with psycopg.connect(again.start()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    again.stop()


def test_two_users_in_one_process_share_the_server(embedded_db: Database) -> None:
    assert embedded_db.embedded is not None
    second = Database(DatabaseConfig(data_dir=embedded_db.embedded.root, pool_max=1))
    second.close()  # the first still holds the server: closing the second must not stop it
    with embedded_db.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_embedded_server_is_socket_only(embedded_db: Database) -> None:
    with embedded_db.connection() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as a separate system user")
def test_root_refuses_a_data_folder_others_cannot_enter() -> None:
    private = reachable_tmpdir("ladder-private-")
    private.chmod(0o700)
    before = stat.S_IMODE(private.stat().st_mode)
    with pytest.raises(EmbeddedPostgresError, match="will not open"):
        EmbeddedPostgres(private / "data").start()
    assert stat.S_IMODE(private.stat().st_mode) == before  # nothing was opened up


def test_an_unwritable_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EmbeddedPostgresError, match="not writable"):
        EmbeddedPostgres(blocker / "data").start()


def test_a_full_disk_is_a_clear_error_naming_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / f".write-probe-{os.getpid()}").symlink_to("/dev/full")  # the kernel answers ENOSPC to writes here
    with pytest.raises(EmbeddedPostgresError, match="No space left on device") as info:
        EmbeddedPostgres(data).start()
    assert str(data) in str(info.value) and "LADDER_DATA_DIR" in str(info.value)


def test_a_read_only_data_folder_is_a_clear_error() -> None:
    """Checked in a child that drops root, which writes through any permission bits."""
    import pwd

    folder = Path(tempfile.mkdtemp(prefix="ladder-ro-", dir="/tmp"))
    folder.chmod(0o555)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just the check, then out
        message = "started"
        try:
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            EmbeddedPostgres(folder / "data").start()
        except BaseException as exc:  # reported to the parent, whatever it is
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode()[:4000])
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)
    assert message.startswith("EmbeddedPostgresError: ")
    assert f"Ladder's data folder {folder / 'data'} is not writable (Permission denied)" in message


def test_a_bad_url_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(DatabaseError) as info:
        Database(DatabaseConfig(url="postgresql://bob:hunter2@127.0.0.1:1/nope?connect_timeout=2"))
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_mirrored_binaries_run_for_other_users(tmp_path: Path) -> None:
    from knowledge.pgembed import _mirror_binaries, pg_bin_dir

    target = reachable_tmpdir("ladder-mirror-")
    copied = _mirror_binaries(pg_bin_dir(), target)
    assert copied.parent.parent == target
    assert (copied / "postgres").stat().st_mode & stat.S_IXOTH
    assert _mirror_binaries(pg_bin_dir(), target) == copied  # once per version
    import subprocess

    out = subprocess.run([str(copied / "postgres"), "--version"], capture_output=True, text=True, check=True)
    assert "PostgreSQL) 18" in out.stdout
