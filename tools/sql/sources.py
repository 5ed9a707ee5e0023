"""The registry of queryable databases: ``LADDER_DATA_SOURCES`` plus those added with ``ladder db add``.

A PostgreSQL source whose role could do more than read (write, own tables, read server files,
create roles or databases) is refused, at registration and again each time it is opened, unless
it was registered with ``allow_privileged`` (``ladder db add --allow-privileged``). Even then every
query runs in a READ ONLY transaction and passes the SQL allowlist; the refusal is the second wall
that a role with only SELECT grants gives for free.
"""

from __future__ import annotations

import re

import psycopg

from knowledge.db import redact_url
from tools.sql.database import DataSource, DataSourceError, PostgresSource, open_source

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_READER_HINT = (
    "register a role that may only SELECT (`ladder db load` makes one for the databases it loads),"
    " or pass --allow-privileged to accept it (every query still runs in a READ ONLY transaction)"
)


class PrivilegedSource(DataSourceError):
    """The source's role may do more than read, and it was not registered with allow_privileged."""


def privileged_refusal(name: str, url: str, found: list[str]) -> str:
    """Why a source is refused: what its role may do, and what to do instead."""
    return (
        f"the role of data source {name} ({redact_url(url)}) may write or do more than read:"
        f" {'; '.join(found)}. {_READER_HINT}"
    )


def _privileges(source: DataSource) -> list[str]:
    return source.privileges() if isinstance(source, PostgresSource) else []


def add_source(conn: psycopg.Connection, name: str, url: str, *, allow_privileged: bool = False) -> str | None:
    """Register (or re-point) a data source; the URL is checked by opening it.

    A PostgreSQL role that may do more than read is refused (PrivilegedSource) unless
    ``allow_privileged``; then it is registered and a warning saying what it may do is returned.
    """
    if not _NAME.match(name):
        raise DataSourceError(f"data source name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    source = open_source(name, url)
    source.list_tables()  # fails clearly now rather than at the first question
    found = _privileges(source)
    if found and not allow_privileged:
        raise PrivilegedSource(privileged_refusal(name, url, found))
    with conn.transaction():
        conn.execute(
            "INSERT INTO data_sources (name, url, allow_privileged) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, allow_privileged = EXCLUDED.allow_privileged",
            (name, url, bool(found)),
        )
    if found:
        return (
            f"the role in {redact_url(url)} may write or do more than read ({'; '.join(found)}); registered because"
            " --allow-privileged was given. Ladder runs every query in a READ ONLY transaction, but a role"
            " with only SELECT grants is a second wall (see `ladder db load` for one made for you)"
        )
    return None


def remove_source(conn: psycopg.Connection, name: str) -> bool:
    with conn.transaction():
        return conn.execute("DELETE FROM data_sources WHERE name = %s", (name,)).rowcount == 1


def _entries(conn: psycopg.Connection, configured: dict[str, str] | None) -> dict[str, tuple[str, bool]]:
    """name -> (URL, allow_privileged): the settings' sources, then the registered ones (which win)."""
    entries = {name: (url, False) for name, url in (configured or {}).items()}
    rows = conn.execute("SELECT name, url, allow_privileged FROM data_sources ORDER BY name")
    entries.update({name: (url, bool(allowed)) for name, url, allowed in rows})
    return entries


def registered_sources(conn: psycopg.Connection, configured: dict[str, str] | None = None) -> dict[str, str]:
    """name -> URL: the settings' sources, then the registered ones (which win on a clash)."""
    return {name: url for name, (url, _) in _entries(conn, configured).items()}


def get_source(
    conn: psycopg.Connection, name: str, configured: dict[str, str] | None = None, **options: int
) -> DataSource:
    """The named source, opened; a privileged role is refused here too (grants change after registration)."""
    entries = _entries(conn, configured)
    if name not in entries:
        known = ", ".join(entries) or "none yet"
        raise DataSourceError(f"no data source named {name!r} (known: {known}); add one with `ladder db add NAME URL`")
    url, allowed = entries[name]
    source = open_source(name, url, **options)
    if not allowed:
        found = _privileges(source)
        if found:
            raise PrivilegedSource(privileged_refusal(name, url, found))
    return source


def describe_sources(conn: psycopg.Connection, configured: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Sources with their URLs redacted, for listing."""
    return [{"name": n, "url": redact_url(u)} for n, u in registered_sources(conn, configured).items()]
