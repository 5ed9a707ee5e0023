"""Execution-accuracy judging for text-to-SQL, following defog's sql-eval rules.

Pure functions over already-fetched results (column names + rows); no database and no pandas.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# Digits kept for non-integral numbers: defog compares after rounding; 3 places absorbs float-vs-numeric
# noise (0.33333 vs 0.3333333) while still separating genuinely different ratios.
ROUND_DIGITS = 3
MAX_ASSIGNMENTS = 10_000  # column assignments tried in a subset match: a bound on wide, repetitive results

_GROUP_BY_SLOT = re.compile(r"GROUP\s+BY\s+\{\}", re.IGNORECASE)


def _outside_quotes(sql: str) -> list[bool]:
    """Per character: True when it lies outside '...' literals and "..." identifiers ('' escapes toggle twice)."""
    flags, quote = [], None
    for ch in sql:
        if quote is None and ch in "'\"":
            quote = ch
            flags.append(False)
        elif ch == quote:
            quote = None
            flags.append(False)
        else:
            flags.append(quote is None)
    return flags


def gold_variants(query: str) -> list[str]:
    """Expand a gold query into every acceptable query (defog's ``get_all_minimal_queries``).

    ``;`` separates alternative queries; the first ``{a, b}`` group in each lists column alternatives, expanded
    to every non-empty combination (in ``itertools.combinations`` order), and ``GROUP BY {}`` takes the same
    columns. Braces and semicolons inside quoted literals are left alone.
    """
    outside = _outside_quotes(query)
    cuts = [i for i, ch in enumerate(query) if ch == ";" and outside[i]]
    pieces = [query[a + 1 : b] for a, b in itertools.pairwise([-1, *cuts, len(query)])]
    variants: list[str] = []
    for piece in filter(None, (p.strip() for p in pieces)):
        flags = _outside_quotes(piece)
        start = next((i for i, ch in enumerate(piece) if ch == "{" and flags[i]), -1)
        end = piece.find("}", start + 1) if start >= 0 else -1
        options = [c.strip() for c in piece[start + 1 : end].split(",") if c.strip()] if end >= 0 else []
        if not options:  # no column group (a lone "{}" is not one): the query stands as written
            variants.append(piece)
            continue
        left, right = piece[:start], piece[end + 1 :]
        for r in range(1, len(options) + 1):
            for combo in itertools.combinations(options, r):
                cols = ", ".join(combo)
                # lambda replacement: column text must not be read as a regex template
                variants.append(left + cols + _GROUP_BY_SLOT.sub(lambda _m, c=cols: f"GROUP BY {c}", right))
    return variants


def normalize_value(v: Any) -> Hashable:
    """Map a driver value to a hashable canonical form so equal answers compare equal across types.

    Integers stay exact (large ids must not lose precision); floats/Decimals round to ``ROUND_DIGITS`` places,
    and integral Decimals become ints, so 2 == 2.0 == Decimal('2.000') (Python gives ints and equal floats the
    same hash). NaN becomes None, like pandas' missing values. Booleans are kept, so True == 1 as in Python.
    """
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, Decimal):
        if v.is_nan():
            return None
        return int(v) if v.is_finite() and v == v.to_integral_value() else round(float(v), ROUND_DIGITS)
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, ROUND_DIGITS)
    if isinstance(v, dt.date | dt.time):  # datetime is a date subclass
        return v.isoformat()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, list | tuple):  # Postgres arrays
        return tuple(normalize_value(x) for x in v)
    if isinstance(v, dict):  # json/jsonb
        return tuple(sorted((str(k), normalize_value(x)) for k, x in v.items()))
    return v if isinstance(v, Hashable) else repr(v)


def _table(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    """Normalize values and drop duplicate rows, keeping first occurrences (pandas ``drop_duplicates``)."""
    return list(dict.fromkeys(tuple(normalize_value(v) for v in row) for row in rows))


def _rows_equal(a: list[tuple], b: list[tuple], ordered: bool) -> bool:
    # Counter (hash equality) is a multiset comparison that cannot fail on mixed types, unlike sorting.
    return a == b if ordered else Counter(a) == Counter(b)


def results_match(
    gold_columns: Sequence[str],
    gold_rows: Sequence[Sequence[Any]],
    gen_columns: Sequence[str],
    gen_rows: Sequence[Sequence[Any]],
    *,
    ordered: bool,
) -> bool:
    """Defog's rule: exact match (same columns by position) or subset match (gold columns found among generated).

    Column names are ignored. Extra generated columns are allowed; extra or missing rows are not.
    """
    gold, gen = _table(gold_rows), _table(gen_rows)
    n_gold, n_gen = len(gold_columns), len(gen_columns)
    if n_gold == n_gen and _rows_equal(gold, gen, ordered):
        return True
    if not gold:  # defog: an empty gold result never subset-matches
        return False
    gen_cols = [Counter(row[j] for row in gen) for j in range(n_gen)]
    candidates = []
    for i in range(n_gold):
        want = Counter(row[i] for row in gold)
        candidates.append([j for j in range(n_gen) if gen_cols[j] == want])
    # Defog takes the first unused column with the same multiset of values (greedy), which misses a
    # match when two columns hold the same values in different rows; every distinct assignment is tried.
    assignments = (c for c in itertools.product(*candidates) if len(set(c)) == n_gold)
    for chosen in itertools.islice(assignments, MAX_ASSIGNMENTS):
        projected = list(dict.fromkeys(tuple(row[j] for j in chosen) for row in gen))  # dedupe after projecting
        if _rows_equal(gold, projected, ordered):
            return True
    return False


def _orders(sql: str) -> bool:
    """True when the statement has an ORDER BY at the top level (not in a subquery or window)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
        while isinstance(tree, exp.Subquery):  # "(SELECT ... ORDER BY ...)"
            tree = tree.this
        return tree.args.get("order") is not None
    except SqlglotError:
        # Fallback: drop literals, then nested parentheses, and look for what is left.
        text = re.sub(r"'(?:[^']|'')*'", "''", sql)
        while re.search(r"\([^()]*\)", text):
            text = re.sub(r"\([^()]*\)", "", text)
        return re.search(r"\bORDER\s+BY\b", text, re.IGNORECASE) is not None


_ASKS_FOR_ORDER = re.compile(r"\b(order|orders|ordered|sort|sorted|arrange|arranged|rank|ranked)\b", re.IGNORECASE)


def wants_order(gold_query: str, question: str = "", category: str = "") -> bool:
    """Whether row order matters: the gold query orders at top level *and* the order is asked for.

    Asked for means defog's rule: the category is ``order_by`` or the question says order, sort or
    arrange (rank added). Many gold queries end in ORDER BY only for presentation ("publications in
    each year ... ORDER BY year"); holding a candidate to that order would fail correct answers.
    With ``;`` alternatives, order matters only if every alternative orders.
    """
    variants = gold_variants(gold_query)
    if not variants or not all(_orders(v) for v in variants):
        return False
    return category == "order_by" or bool(_ASKS_FOR_ORDER.search(question))


def judge(
    gold_results: Sequence[tuple[Sequence[str], Sequence[Sequence[Any]]]],
    gen_columns: Sequence[str],
    gen_rows: Sequence[Sequence[Any]],
    *,
    ordered: bool,
) -> bool:
    """True when the generated result matches the result of any gold variant, given as (columns, rows)."""
    return any(results_match(cols, rows, gen_columns, gen_rows, ordered=ordered) for cols, rows in gold_results)
