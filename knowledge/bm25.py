"""Okapi BM25 over the stored tsvectors, with the statistics kept at write time (knowledge/term_stats.py).

Postgres ranks full-text matches without inverse document frequency; here each query lexeme's
document frequency, the chunk count and the average length come from ``term_stats`` (no counting per
query), term frequencies from the tsvector's positions (title and heading positions count extra), and
lengths from the chunk's token count.

Scoring every chunk that holds any query word grows with the collection (a common word matches a
tenth of it), so candidates are pruned with MaxScore (Turtle and Flood, 1995), which keeps the result
exact: a term adds at most idf * qtf * (k1 + 1) to any chunk's score, so the chunks that hold only the
low-bound terms cannot beat the ``limit``-th score once those terms' bounds sum below it. The
candidates are first the chunks holding the terms of highest bound; the rest join only when the
bound says they might matter (at most two scoring rounds).

Where that proof would score more chunks than the budget (long questions of common words in a large
collection), the search is no longer exact: it scores, with every term, the chunks of the rarest terms
and those that hold two of the next ones, within the budget (``ladder bench scale`` measures how often
its top 10 agree with bm25s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from knowledge import term_stats

# Must match the configuration of the generated tsvector column in migration 0001.
TEXT_SEARCH_CONFIG = "english"


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.2
    b: float = 0.75
    title_weight: float = 1.0  # extra term frequency for a match in the title
    heading_weight: float = 0.5  # extra term frequency for a match in a heading


@dataclass(frozen=True)
class QueryTerm:
    lexeme: str
    qtf: int  # how often the query holds it
    df: int  # how many chunks of the collection hold it
    idf: float

    def bound(self, params: BM25Params) -> float:
        """The most this term can add to any chunk's score (term frequency saturates below k1 + 1)."""
        return self.idf * self.qtf * (params.k1 + 1)


@dataclass(frozen=True)
class KeywordResult:
    hits: list[tuple[int, float]]  # (chunk id, score) best first
    rounds: int  # scoring rounds run (0: no query term is in the collection)
    candidate_terms: int  # the terms whose chunks were scored in the last round
    terms: int
    exact: bool = True  # False: the budget stopped the proof, the chunks of the rarer terms were scored


# Each candidate's tsvector is cut down to the query's lexemes before it is unnested (ts_delete of
# everything else, in C): unnesting the whole tsvector and filtering in SQL cost 2.5x as much.
_SCORE_SQL = r"""
WITH terms AS (
    SELECT * FROM unnest(%(lexemes)s::text[], %(weights)s::float8[]) AS t(lexeme, weight)
),
cand AS (
    SELECT c.id, ts_delete(c.tsv, tsvector_to_array(ts_delete(c.tsv, %(lexemes)s::text[]))) AS tsv, c.n_tokens
    FROM chunks c
    WHERE c.collection_id = {cid} AND c.tsv @@ %(tq)s::tsquery {filter}
)
SELECT cand.id,
       sum(terms.weight * m.tf / (m.tf + %(k1)s * (1 - %(b)s + %(b)s * cand.n_tokens / %(avgdl)s))) AS score
FROM cand
CROSS JOIN LATERAL (
    SELECT u.lexeme,
           (cardinality(u.positions) + %(ta)s * cardinality(array_positions(u.weights, 'A'))
            + %(hb)s * cardinality(array_positions(u.weights, 'B')))::float8 AS tf
    FROM unnest(cand.tsv) AS u
) m
JOIN terms ON terms.lexeme = m.lexeme
GROUP BY cand.id
ORDER BY score DESC, cand.id
LIMIT %(n)s
"""


def query_lexemes(conn: psycopg.Connection, query: str) -> list[tuple[str, int]]:
    """The query's lexemes under the collection's text-search configuration, with their counts."""
    rows = conn.execute(
        "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector(%s::regconfig, %s))",
        (TEXT_SEARCH_CONFIG, query),
    ).fetchall()
    return [(str(lexeme), int(count)) for lexeme, count in rows]


def query_terms(
    conn: psycopg.Connection, collection_id: int, query: str
) -> tuple[list[QueryTerm], term_stats.TermStats]:
    """The query's terms that the collection holds, with BM25's (Lucene) idf, and the collection's statistics."""
    lexemes = query_lexemes(conn, query)
    stats = term_stats.read(conn, collection_id, [lexeme for lexeme, _ in lexemes])
    n = stats.chunks
    terms = [
        QueryTerm(lexeme, qtf, stats.df[lexeme], math.log(1 + (n - stats.df[lexeme] + 0.5) / (stats.df[lexeme] + 0.5)))
        for lexeme, qtf in lexemes
        if stats.df.get(lexeme, 0) > 0
    ]
    return terms, stats


def _tsquery(lexemes: list[str]) -> str:
    """An OR of the lexemes as tsquery literals, matched exactly (no second round of parsing)."""
    return " | ".join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for lexeme in lexemes)


def _first_split(terms: list[QueryTerm], limit: int) -> int:
    """How many of the highest-bound terms to take first: enough that their chunks can fill ``limit``."""
    held = 0
    for i, term in enumerate(terms, start=1):
        held += term.df
        if held >= limit:
            return i
    return len(terms)


PAIR_TERMS = 8  # pairs are formed among at most this many terms: GIN checks every pair for each chunk it reads


def _budgeted(terms: list[QueryTerm], needed: int, budget: int, chunks: int) -> str:
    """A tsquery for ``needed`` terms whose matches should fit ``budget`` chunks: the highest-bound terms
    alone while their chunks fill half of it, then pairs of the others (a chunk that holds two of them),
    each pair's chunks estimated as if the terms were independent. The best BM25 matches of a long
    question hold several of its terms, so pairs keep them where single common terms would not fit."""
    held, singles = 0, 0
    while singles < needed and held + terms[singles].df <= budget / 2:
        held += terms[singles].df
        singles += 1
    parts = [_tsquery([t.lexeme for t in terms[:singles]])] if singles else []
    others = range(singles, min(needed, singles + PAIR_TERMS))
    pairs = sorted(combinations(others, 2), key=lambda ij: (-(terms[ij[0]].idf + terms[ij[1]].idf), ij))
    for i, j in pairs:
        estimate = terms[i].df * terms[j].df / max(chunks, 1)
        if held + estimate <= budget:
            held += estimate
            parts.append(f"({_tsquery([terms[i].lexeme])} & {_tsquery([terms[j].lexeme])})")
    if not parts:  # even the likeliest pair is too common: the chunks that hold both of the two rarest
        parts.append(
            f"{_tsquery([terms[0].lexeme])} & {_tsquery([terms[1].lexeme])}"
            if len(terms) > 1
            else _tsquery([terms[0].lexeme])
        )
    return " | ".join(parts)


def bm25_search(
    conn: psycopg.Connection,
    collection_id: int,
    query: str,
    limit: int,
    params: BM25Params,
    filters: dict | None = None,
    *,
    budget: int = 0,
) -> KeywordResult:
    """The ``limit`` best chunks of the collection for ``query`` by BM25, best first.

    Exact (MaxScore) unless proving it would score more than about ``budget`` chunks (0: no budget): then
    the candidates that fit the budget are scored (``_budgeted``), and ``exact`` is False.
    """
    terms, stats = query_terms(conn, collection_id, query)
    if not terms:
        return KeywordResult([], 0, 0, 0)
    terms.sort(key=lambda t: (-t.bound(params), t.lexeme))
    bounds = [t.bound(params) for t in terms]
    statement = sql.SQL(_SCORE_SQL).format(
        cid=sql.Literal(collection_id), filter=sql.SQL("AND c.metadata @> %(f)s") if filters else sql.SQL("")
    )
    lexemes = [t.lexeme for t in terms]
    values = {
        "lexemes": lexemes,
        "weights": bounds,  # idf * qtf * (k1 + 1): the SQL multiplies by tf / (tf + k1 * length norm)
        "k1": params.k1,
        "b": params.b,
        "ta": params.title_weight,
        "hb": params.heading_weight,
        "avgdl": stats.avg_tokens,
        "n": limit,
        "f": Jsonb(filters or {}),
    }

    def run(tsquery: str) -> tuple[list[tuple[int, float]], float]:
        rows = conn.execute(statement, {**values, "tq": tsquery}).fetchall()
        hits = [(int(cid), float(score)) for cid, score in rows]
        return hits, (hits[-1][1] if len(hits) >= limit else 0.0)

    def fits(split: int) -> bool:  # the chunks of the first ``split`` terms, at most the whole collection
        return budget <= 0 or min(sum(t.df for t in terms[:split]), stats.chunks) <= budget

    split = _first_split(terms, limit)
    if not fits(split):
        return KeywordResult(
            run(_budgeted(terms, len(terms), budget, stats.chunks))[0], 1, len(terms), len(terms), False
        )
    hits, threshold = run(_tsquery(lexemes[:split]))
    # A small margin for floating point: SQL sums in another order than Python.
    if split == len(terms) or sum(bounds[split:]) < threshold * (1 - 1e-9):
        return KeywordResult(hits, 1, split, len(terms), True)
    needed = split
    while needed < len(terms) and sum(bounds[needed:]) >= threshold * (1 - 1e-9):
        needed += 1
    if fits(needed):  # the threshold only rises with more candidates: this round is exact
        return KeywordResult(run(_tsquery(lexemes[:needed]))[0], 2, needed, len(terms), True)
    return KeywordResult(run(_budgeted(terms, needed, budget, stats.chunks))[0], 2, needed, len(terms), False)
