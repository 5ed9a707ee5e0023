import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import sqlglot
from hypothesis import example, given
from hypothesis import strategies as st

from evals.sql.compare import gold_variants, judge, normalize_value, results_match, wants_order

CSV_PATH = Path(__file__).parents[2] / "shared" / "data" / "sql-eval" / "questions_postgres.csv"


@pytest.fixture(scope="module")
def questions() -> list[dict[str, str]]:
    if not CSV_PATH.exists():
        pytest.skip(f"sql-eval data not found at {CSV_PATH}")
    with CSV_PATH.open(newline="") as f:
        return list(csv.DictReader(f))


def _find(questions: list[dict[str, str]], prefix: str) -> str:
    (query,) = [q["query"] for q in questions if q["query"].startswith(prefix)]
    return query


# --- gold_variants ---------------------------------------------------------------------------------------


def test_two_column_group_with_group_by_slot_and_alternatives(questions):
    query = _find(questions, "SELECT {d.name, d.did}, COUNT(DISTINCT a.aid)")
    variants = gold_variants(query)
    assert len(variants) == 6  # two ';' alternatives x 3 non-empty subsets of {d.name, d.did}
    assert variants[0].startswith("SELECT d.name, COUNT(DISTINCT a.aid)")
    assert "GROUP BY d.name ORDER BY" in variants[0]
    assert "GROUP BY d.did ORDER BY" in variants[1]
    assert variants[2].startswith("SELECT d.name, d.did, COUNT(")
    assert "GROUP BY d.name, d.did ORDER BY" in variants[2]
    assert variants[3].startswith("SELECT d.name, COUNT(da.aid)")
    assert all("{" not in v and "}" not in v and ";" not in v for v in variants)


def test_three_column_group_gives_seven_variants(questions):
    query = _find(questions, "SELECT {business.name, business.business_id, business.bid}")
    variants = gold_variants(query)
    assert len(variants) == 7
    assert [v.split(", business.review_count")[0] for v in variants] == [
        "SELECT business.name",
        "SELECT business.business_id",
        "SELECT business.bid",
        "SELECT business.name, business.business_id",
        "SELECT business.name, business.bid",
        "SELECT business.business_id, business.bid",
        "SELECT business.name, business.business_id, business.bid",
    ]


def test_group_without_spaces_and_no_trailing_semicolon(questions):
    query = _find(questions, "SELECT {author.name,author.aid} FROM author WHERE author.aid IN")
    variants = gold_variants(query)
    assert [v[: v.index(" FROM")] for v in variants] == [
        "SELECT author.name",
        "SELECT author.aid",
        "SELECT author.name, author.aid",
    ]
    assert variants[0].endswith("= 2)")  # trailing ';' removed, nested "GROUP BY 1" untouched
    assert "GROUP BY 1 HAVING" in variants[2]
    assert gold_variants(_find(questions, "SELECT DISTINCT {name, aid} FROM author")) == [
        "SELECT DISTINCT name FROM author WHERE oid IS NULL",
        "SELECT DISTINCT aid FROM author WHERE oid IS NULL",
        "SELECT DISTINCT name, aid FROM author WHERE oid IS NULL",
    ]


def test_semicolon_alternatives_without_braces(questions):
    query = _find(questions, "SELECT cite.citingpaperid, COUNT(*)")
    variants = gold_variants(query)
    assert len(variants) == 3
    assert variants[1] == "SELECT p.paperid, p.numciting FROM paper p WHERE p.numciting > 0 ORDER BY p.numciting DESC"


def test_plain_query_and_empty_pieces():
    assert gold_variants("SELECT 1;") == ["SELECT 1"]
    assert gold_variants(" SELECT 1 ;; ;SELECT 2") == ["SELECT 1", "SELECT 2"]
    assert gold_variants(";") == []


def test_braces_and_semicolons_in_literals_are_not_alternatives():
    assert gold_variants("SELECT a FROM t WHERE s = '{x, y};z'") == ["SELECT a FROM t WHERE s = '{x, y};z'"]
    assert gold_variants("SELECT {a, b} FROM t WHERE s = 'it''s {x}' GROUP BY {}") == [
        "SELECT a FROM t WHERE s = 'it''s {x}' GROUP BY a",
        "SELECT b FROM t WHERE s = 'it''s {x}' GROUP BY b",
        "SELECT a, b FROM t WHERE s = 'it''s {x}' GROUP BY a, b",
    ]


def test_every_csv_query_expands_and_parses(questions):
    assert len(questions) > 0
    for row in questions:
        variants = gold_variants(row["query"])
        assert variants, row["query"]
        for v in variants:
            assert "{" not in v
            sqlglot.parse_one(v, read="postgres")  # raises on a malformed expansion


# --- wants_order -----------------------------------------------------------------------------------------


def test_wants_order_needs_a_top_level_order_by_that_is_asked_for():
    assert wants_order("SELECT a FROM t ORDER BY a DESC LIMIT 3", "", "order_by")
    assert wants_order("SELECT {a, b}, c FROM t GROUP BY {} ORDER BY c", "Sort the groups by c", "group_by")
    # ORDER BY for presentation only: the question does not ask for an order (defog's rule)
    assert not wants_order("SELECT year, count(*) FROM p GROUP BY year ORDER BY year", "How many per year?", "group_by")
    assert not wants_order("SELECT a FROM t", "Sort them by name", "order_by")  # the gold does not order
    assert not wants_order("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 5) s", "", "order_by")
    assert not wants_order("SELECT row_number() OVER (ORDER BY a) FROM t", "", "order_by")
    assert not wants_order("SELECT a FROM t WHERE s = 'order by'", "", "order_by")
    # an alternative that does not order means order is not part of the answer
    assert not wants_order("SELECT a FROM t ORDER BY a;SELECT a FROM u", "", "order_by")


def test_wants_order_regex_fallback_on_unparsable_sql():
    assert wants_order("SELECT a FROM t ORDER BY a @@@ ((", "", "order_by")
    assert not wants_order("SELECT a FROM t WHERE x IN (SELECT b FROM u ORDER BY b) @@@ ((", "", "order_by")


# --- normalize_value / results_match ---------------------------------------------------------------------


def test_normalize_value():
    assert normalize_value(2) == normalize_value(2.0) == normalize_value(Decimal("2.000"))
    assert hash(normalize_value(2)) == hash(normalize_value(Decimal("2.000")))
    assert normalize_value(0.33333) == normalize_value(0.3333333) == normalize_value(Decimal("0.333333"))
    assert normalize_value(0.333) != normalize_value(0.334)
    assert normalize_value(None) is None
    assert normalize_value(float("nan")) is None
    assert normalize_value(True) is True
    assert normalize_value("a ") == "a "  # kept exact, as defog does
    assert normalize_value(dt.date(2024, 1, 2)) == "2024-01-02"
    assert normalize_value(dt.datetime(2024, 1, 2, 3, 4)) == "2024-01-02T03:04:00"
    assert normalize_value(b"\x01\xff") == "01ff"
    assert normalize_value(12345678901234567890) == 12345678901234567890  # big ids stay exact
    assert normalize_value([1, [2.00001]]) == (1, (2.0,))


GOLD_COLS = ["name", "n"]
GOLD_ROWS = [["a", 1], ["b", 2], ["c", 3]]


@pytest.mark.parametrize("ordered", [False, True])
def test_reordered_columns_match(ordered):
    assert results_match(GOLD_COLS, GOLD_ROWS, ["n", "name"], [[1, "a"], [2, "b"], [3, "c"]], ordered=ordered)


def test_extra_generated_column_is_subset_match():
    gen = [[10, "a", 1.0], [20, "b", 2.0], [30, "c", 3.0]]
    assert results_match(GOLD_COLS, GOLD_ROWS, ["id", "x", "y"], gen, ordered=True)


def test_missing_column_fails():
    assert not results_match(GOLD_COLS, GOLD_ROWS, ["name"], [["a"], ["b"], ["c"]], ordered=False)


def test_extra_or_missing_row_fails():
    assert not results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, [*GOLD_ROWS, ["d", 4]], ordered=False)
    assert not results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, GOLD_ROWS[:2], ordered=False)


def test_duplicate_rows_ignored():
    assert results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, [*GOLD_ROWS, ["a", 1], ["b", 2.0]], ordered=True)
    assert results_match(GOLD_COLS, [*GOLD_ROWS, ["c", 3]], GOLD_COLS, GOLD_ROWS, ordered=True)


def test_row_order_matters_only_when_ordered():
    shuffled = [GOLD_ROWS[2], GOLD_ROWS[0], GOLD_ROWS[1]]
    assert results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, shuffled, ordered=False)
    assert not results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, shuffled, ordered=True)
    # also through the subset path (extra column present)
    assert not results_match(GOLD_COLS, GOLD_ROWS, ["x", *GOLD_COLS], [[0, *r] for r in shuffled], ordered=True)


def test_values_must_pair_up_row_wise():
    # each column matches as a multiset, but the rows pair values differently
    assert not results_match(GOLD_COLS, GOLD_ROWS, GOLD_COLS, [["a", 2], ["b", 1], ["c", 3]], ordered=False)


def test_numeric_types_and_rounding():
    gold = [["x", Decimal("2.000"), 0.33333]]
    assert results_match(["k", "n", "r"], gold, ["k", "n", "r"], [["x", 2, 0.3333333]], ordered=True)
    assert results_match(["k", "n", "r"], gold, ["r", "k", "n"], [[Decimal("0.333"), "x", 2.0]], ordered=True)
    assert not results_match(["k", "n", "r"], gold, ["k", "n", "r"], [["x", 2, 0.334]], ordered=True)


def test_none_values():
    gold = [["a", None], ["b", 1.5], [None, 2]]
    gen = [[2.0, None], [None, "a"], [1.5, "b"]]
    assert results_match(["k", "v"], gold, ["v", "k"], gen, ordered=False)
    assert results_match(["k", "v"], gold, ["k", "v"], gold, ordered=True)  # sorting mixed types must not crash
    assert not results_match(["k", "v"], gold, ["k", "v"], [["a", 0], ["b", 1.5], [None, 2]], ordered=False)


def test_empty_results():
    assert results_match(["a"], [], ["b"], [], ordered=True)  # exact: same column count, no rows
    assert not results_match(["a"], [], ["b", "c"], [], ordered=False)  # subset never matches an empty gold
    assert not results_match(["a"], [], ["a"], [[1]], ordered=False)
    assert not results_match(["a"], [[1]], ["a"], [], ordered=False)


def test_judge_any_gold_variant():
    golds = [(["name"], [["a"], ["b"]]), (["name", "id"], [["a", 1], ["b", 2]])]
    assert judge(golds, ["id", "name"], [[2, "b"], [1, "a"]], ordered=False)
    assert judge(golds, ["name"], [["a"], ["b"]], ordered=True)
    assert not judge(golds, ["id"], [[1], [2]], ordered=False)
    assert not judge([], ["id"], [[1]], ordered=False)


# --- property --------------------------------------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
    st.decimals(places=4, allow_nan=False, allow_infinity=False, min_value=-1000, max_value=1000),
    st.text(max_size=5),
    st.dates(),
)


@st.composite
def _tables(draw):
    ncols = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(_values, min_size=ncols, max_size=ncols), max_size=6))
    perm = draw(st.permutations(range(ncols)))
    return [f"c{i}" for i in range(ncols)], rows, perm


@given(_tables())
@example((["c0", "c1", "c2"], [[False, None, None], [None, False, False]], [1, 0, 2]))  # greedy column fit failed
def test_result_matches_itself_and_column_permutations(table):
    cols, rows, perm = table
    assert results_match(cols, rows, cols, rows, ordered=True)
    permuted_rows = [[row[j] for j in perm] for row in rows]
    assert results_match(cols, rows, [cols[j] for j in perm], permuted_rows, ordered=False)
