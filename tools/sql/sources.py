"""The registry of queryable databases: ``LADDER_DATA_SOURCES`` plus those added with ``ladder db add``."""

from __future__ import annotations

import re

import psycopg

from knowledge.db import redact_url
from tools.sql.database import DataSource, DataSourceError, PostgresSource, open_source

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def add_source(conn: psycopg.Connection, name: str, url: str) -> str | None:
    """Register (or re-point) a data source; the URL is checked by opening it.

    Returns a warning when a PostgreSQL URL's role could write (every query still runs READ ONLY).
    """
    if not _NAME.match(name):
        raise DataSourceError(f"data source name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    source = open_source(name, url)
    source.list_tables()  # fails clearly now rather than at the first question
    with conn.transaction():
        conn.execute(
            "INSERT INTO data_sources (name, url) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url",
            (name, url),
        )
    if isinstance(source, PostgresSource) and source.can_write():
        return (
            f"the role in {redact_url(url)} may write; Ladder runs every query in a READ ONLY transaction,"
            " but a role with only SELECT grants is a second wall (see `ladder db load` for one made for you)"
        )
    return None


def remove_source(conn: psycopg.Connection, name: str) -> bool:
    with conn.transaction():
        return conn.execute("DELETE FROM data_sources WHERE name = %s", (name,)).rowcount == 1


def registered_sources(conn: psycopg.Connection, configured: dict[str, str] | None = None) -> dict[str, str]:
    """name -> URL: the settings' sources, then the registered ones (which win on a clash)."""
    sources = dict(configured or {})
    sources.update({name: url for name, url in conn.execute("SELECT name, url FROM data_sources ORDER BY name")})
    return sources


def get_source(
    conn: psycopg.Connection, name: str, configured: dict[str, str] | None = None, **options: int
) -> DataSource:
    sources = registered_sources(conn, configured)
    if name not in sources:
        known = ", ".join(sources) or "none yet"
        raise DataSourceError(f"no data source named {name!r} (known: {known}); add one with `ladder db add NAME URL`")
    return open_source(name, sources[name], **options)


def describe_sources(conn: psycopg.Connection, configured: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Sources with their URLs redacted, for listing."""
    return [{"name": n, "url": redact_url(u)} for n, u in registered_sources(conn, configured).items()]
