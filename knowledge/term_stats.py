"""BM25's statistics per collection, kept at write time (migration 0017): read, compact, recount.

Triggers on ``chunks`` append deltas (a lexeme's change in document frequency, and under the lexeme
'' the change in chunk count and token total); ``compact`` folds them into ``term_stats``. A reader
sums both, so what it sees is exact at its snapshot whether or not a compaction has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

TOTAL = ""  # the lexeme whose row holds the collection's chunk count (df) and token total (tokens)
_LOCK_SPACE = 0x7E57  # advisory lock namespace: (this, collection id) is a collection's compactor


@dataclass(frozen=True)
class TermStats:
    """A collection's chunk count, average chunk length, and the document frequency of some lexemes."""

    chunks: int
    avg_tokens: float
    df: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StatsCheck:
    """Stored statistics against a full recount: equal when ``differences`` is empty."""

    chunks: int
    lexemes: int
    pending_deltas: int
    differences: dict[str, tuple[int, int]]  # lexeme, '(chunks)' or '(tokens)' -> (stored, recounted)


def read(conn: psycopg.Connection, collection_id: int, lexemes: Sequence[str]) -> TermStats:
    """The statistics of ``lexemes`` in the collection, compacted and pending deltas summed."""
    wanted = [TOTAL, *lexemes]
    rows = conn.execute(
        """
        SELECT lexeme, sum(df)::bigint, sum(tokens)::bigint FROM (
            SELECT lexeme, df, tokens FROM term_stats WHERE collection_id = %(c)s AND lexeme = ANY(%(l)s)
            UNION ALL
            SELECT lexeme, df, tokens FROM term_stat_deltas WHERE collection_id = %(c)s AND lexeme = ANY(%(l)s)
        ) s GROUP BY lexeme
        """,
        {"c": collection_id, "l": wanted},
    ).fetchall()
    found = {lexeme: (int(df), int(tokens)) for lexeme, df, tokens in rows}
    chunks, tokens = found.pop(TOTAL, (0, 0))
    return TermStats(chunks, max(tokens / chunks, 1.0) if chunks else 1.0, {k: v[0] for k, v in found.items() if v[0]})


def compact(conn: psycopg.Connection, collection_id: int, *, wait: bool = False) -> bool:
    """Fold the collection's pending deltas into ``term_stats``; False when another compactor holds the
    collection (its work covers ours) unless ``wait``. One statement moves the deltas, so deltas that
    commit meanwhile stay for the next compaction and none is counted twice."""
    with conn.transaction():
        lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        got = conn.execute(f"SELECT {lock}(%s, %s)::text", (_LOCK_SPACE, collection_id)).fetchone()
        if got is not None and got[0] == "false":
            return False
        emptied = conn.execute(
            """
            WITH moved AS (
                DELETE FROM term_stat_deltas WHERE collection_id = %(c)s RETURNING lexeme, df, tokens
            )
            INSERT INTO term_stats AS s (collection_id, lexeme, df, tokens)
            SELECT %(c)s, lexeme, sum(df), sum(tokens) FROM moved GROUP BY lexeme
            ON CONFLICT (collection_id, lexeme)
            DO UPDATE SET df = s.df + EXCLUDED.df, tokens = s.tokens + EXCLUDED.tokens
            RETURNING lexeme, df
            """,
            {"c": collection_id},
        ).fetchall()
        gone = [lexeme for lexeme, df in emptied if df == 0 and lexeme != TOTAL]
        if gone:
            conn.execute("DELETE FROM term_stats WHERE collection_id = %s AND lexeme = ANY(%s)", (collection_id, gone))
    return True


_RECOUNT = """
SELECT %(c)s AS collection_id, '' AS lexeme, count(*) AS df, coalesce(sum(n_tokens), 0) AS tokens
FROM chunks WHERE collection_id = %(c)s
UNION ALL
SELECT %(c)s, t.lexeme, count(*), 0 FROM chunks c, unnest(c.tsv) t WHERE c.collection_id = %(c)s GROUP BY t.lexeme
"""


def rebuild(conn: psycopg.Connection, collection_id: int) -> int:
    """Recount the collection's statistics from its chunks (if they are ever in doubt); the lexemes counted.

    One snapshot (REPEATABLE READ) both recounts and clears: deltas of writes that commit after it
    are not cleared and their chunks were not counted, so concurrent ingests stay exact."""
    conn.commit()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL statement_timeout = 0")  # a recount of a large collection takes a while
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, collection_id))
        conn.execute("DELETE FROM term_stat_deltas WHERE collection_id = %s", (collection_id,))
        conn.execute("DELETE FROM term_stats WHERE collection_id = %s", (collection_id,))
        cur = conn.execute(
            f"INSERT INTO term_stats (collection_id, lexeme, df, tokens) {_RECOUNT}", {"c": collection_id}
        )
        return max(cur.rowcount - 1, 0)


def check(conn: psycopg.Connection, collection_id: int) -> StatsCheck:
    """Compare the stored statistics with a full recount from the chunks, in one snapshot."""
    conn.commit()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL statement_timeout = 0")
        pending = conn.execute(
            "SELECT count(*) FROM term_stat_deltas WHERE collection_id = %s", (collection_id,)
        ).fetchone()
        rows = conn.execute(
            f"""
            WITH stored AS (
                SELECT lexeme, sum(df) AS df, sum(tokens) AS tokens FROM (
                    SELECT lexeme, df, tokens FROM term_stats WHERE collection_id = %(c)s
                    UNION ALL
                    SELECT lexeme, df, tokens FROM term_stat_deltas WHERE collection_id = %(c)s
                ) s GROUP BY lexeme HAVING sum(df) <> 0 OR lexeme = ''
            ),
            counted AS ({_RECOUNT})
            SELECT coalesce(s.lexeme, c.lexeme), coalesce(s.df, 0), coalesce(c.df, 0),
                   coalesce(s.tokens, 0), coalesce(c.tokens, 0)
            FROM stored s FULL JOIN counted c ON c.lexeme = s.lexeme
            """,
            {"c": collection_id},
        ).fetchall()
    differences: dict[str, tuple[int, int]] = {}
    chunks = 0
    for lexeme, stored, counted, stored_tokens, counted_tokens in rows:
        if lexeme == TOTAL:
            chunks = int(counted)
            if stored != counted:
                differences["(chunks)"] = (int(stored), int(counted))
            if stored_tokens != counted_tokens:
                differences["(tokens)"] = (int(stored_tokens), int(counted_tokens))
        elif stored != counted:
            differences[lexeme] = (int(stored), int(counted))
    return StatsCheck(chunks, len(rows) - 1, int(pending[0]) if pending else 0, differences)


def summary(conn: psycopg.Connection, collection_id: int) -> dict[str, int | float]:
    """The collection's chunk count, average tokens per chunk, distinct lexemes and pending deltas."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM term_stats WHERE collection_id = %(c)s AND lexeme <> '' AND df > 0),
               (SELECT count(*) FROM term_stat_deltas WHERE collection_id = %(c)s)
        """,
        {"c": collection_id},
    ).fetchone()
    totals = read(conn, collection_id, [])
    lexemes, pending = (int(row[0]), int(row[1])) if row else (0, 0)
    return {"chunks": totals.chunks, "avg_tokens": totals.avg_tokens, "lexemes": lexemes, "pending_deltas": pending}
