"""Load a PostgreSQL script (a pg_dump or a sample-database script) into a fresh database.

The loader owns the target database's name and lifecycle: it drops and creates the database
itself, so the script's own ``DROP/CREATE DATABASE`` and ``\\c`` lines are left out, as are
``OWNER TO`` lines (they name roles this server need not have). The script runs with the wheel's
``psql`` in one transaction, so a failure leaves an empty database, never a half-loaded one.

Then a login role that can only read (``SELECT`` grants, ``default_transaction_read_only``) is
made for the database where the connecting user may create roles: the registered URL uses it, so
even a query that slipped past the parser could not write.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from knowledge.db import redact_url
from knowledge.pgembed import pg_bin_dir
from tools.sql.database import DataSourceError

# Lines the loader handles itself (see the module docstring); each is one whole line in the
# scripts Ladder loads (pg_dump output and the Chinook script).
_SKIPPED = re.compile(r"^\s*(DROP DATABASE\b|CREATE DATABASE\b|\\c(onnect)?\b|ALTER\s+.*\bOWNER TO\b)", re.IGNORECASE)
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class LoadedDatabase:
    name: str
    url: str  # what to register: the read-only role where one could be made
    read_only_role: str | None
    note: str = ""


def with_database(url: str, database: str, **changes: str) -> str:
    """The same server and credentials as a ``postgresql://`` URL for another database (and user)."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    params.update(dbname=database, **changes)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    host, port = params.pop("host", ""), params.pop("port", "")
    path = quote(params.pop("dbname"), safe="")
    if host.startswith("/"):  # a socket folder travels as a parameter, as libpq reads it
        params["host"], host = host, ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = host + (f":{port}" if port else "")
    return f"postgresql://{auth}{netloc}/{path}" + (f"?{urlencode(params)}" if params else "")


def filtered_script(script: Path) -> str:
    """The script without the lines the loader handles itself."""
    try:
        text = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"cannot read {script}: {exc}") from exc
    return "".join(line for line in text.splitlines(keepends=True) if not _SKIPPED.match(line))


def load_script(server_url: str, database: str, script: Path, *, timeout_s: float = 600) -> LoadedDatabase:
    """Replace ``database`` on the server of ``server_url`` with what ``script`` creates."""
    if not _DB_NAME.match(database):
        raise DataSourceError(f"database name {database!r} must be lower-case letters, digits and '_'")
    body = filtered_script(script)
    admin = with_database(server_url, "postgres")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(database)))
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(database)))
    except psycopg.Error as exc:
        raise DataSourceError(f"cannot create database {database} on {redact_url(server_url)}: {exc}") from exc
    target = with_database(server_url, database)
    done = subprocess.run(
        [str(pg_bin_dir() / "psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "-"],
        input=body,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise DataSourceError(f"loading {script.name} into {database} failed: {done.stderr.strip()[-1500:]}")
    role, note = reader_role(target, database)
    if role is None:
        return LoadedDatabase(database, target, None, note)
    return LoadedDatabase(database, with_database(target, database, user=role[0], **role[1]), role[0], note)


def reader_role(url: str, database: str) -> tuple[tuple[str, dict[str, str]] | None, str]:
    """Create (or reset) ``<database>_reader``, able to connect and SELECT only.

    Returns ((role, extra URL params), note); (None, reason) when the user may not create roles.
    """
    role = f"{database}_reader"[:63]
    password = secrets.token_urlsafe(24) if conninfo_to_dict(url).get("password") else None
    ident = pgsql.Identifier(role)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            options = pgsql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS")
            if password:
                options = pgsql.SQL("{} PASSWORD {}").format(options, pgsql.Literal(password))
            conn.execute(pgsql.SQL(verb + " ROLE {} {}").format(ident, options))
            conn.execute(pgsql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
            conn.execute(pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(pgsql.Identifier(database), ident))
            schemas = [
                row[0]
                for row in conn.execute(
                    "SELECT nspname FROM pg_namespace"
                    " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
                )
            ]
            for schema in schemas:
                name = pgsql.Identifier(schema)
                conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, ident))
                conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, ident))
                conn.execute(pgsql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(name, ident))
                # Dumps often GRANT ALL ON SCHEMA public TO PUBLIC: the reader would inherit CREATE.
                conn.execute(pgsql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(name))
    except psycopg.errors.InsufficientPrivilege as exc:
        return None, f"no read-only role (the user may not create roles: {exc}); the READ ONLY transaction still holds"
    except psycopg.Error as exc:
        raise DataSourceError(f"cannot set up a read-only role for {database}: {exc}") from exc
    return (role, {"password": password} if password else {}), f"queries run as the read-only role {role}"
