"""What model-written SQL may contain: Ladder's own allowlist, per dialect (postgres, sqlite).

Three lists, checked by tools/sql/safety.py against sqlglot's parse tree:

* ``STRUCTURE``: the node types of a read-only query (SELECT, joins, CTEs, set operations,
  VALUES, windows, literals, comparisons and arithmetic operators).
* ``TYPED_FUNCTIONS``: sqlglot's typed function nodes for functions that are pure (no side
  effects, nothing outside the database, no SQL run from text), per dialect.
* ``NAMED_FUNCTIONS``: functions sqlglot leaves as ``Anonymous``, by lower-case name, per dialect.

Anything not listed is refused, so a function sqlglot learns to parse later, an extension's
function or one that runs text as SQL (``ts_stat``, ``query_to_xml``, ``dblink``), reads files
(``pg_read_file``, ``lo_import``), moves sequences, takes locks, reads or changes settings
(``current_setting``, ``set_config``), touches other sessions or sleeps is refused by being absent.
Two deliberate exclusions: ``random()``/``setseed()``/``randomblob()`` (volatile: the same question
must give the same answer, and ``setseed`` changes session state), and ``current_setting()``
(it exposes server configuration such as file paths to whoever can ask a question; no question
about the data needs it).

Names that sqlglot does not have in an installed version are skipped: a missing entry only
refuses more, never less.
"""

from __future__ import annotations

from sqlglot import exp

# Node types of a read-only query's shape; functions are listed separately below.
_STRUCTURE_NAMES = """
Select From Join Where Group Having Order Ordered Limit Offset Fetch LimitOptions With CTE Subquery
Paren Table TableAlias Alias Column Identifier Star Literal Null Boolean Var Interval IntervalSpan
DataType DataTypeParam Distinct Tuple Window WindowSpec Lateral Values Union Intersect Except
Filter WithinGroup IgnoreNulls RespectNulls Bracket Slice Dot Kwarg Cube Rollup GroupingSets
Not Neg And Or Xor Add Sub Mul Div IntDiv Mod EQ NEQ GT GTE LT LTE NullSafeEQ NullSafeNEQ Is In
Between Like ILike SimilarTo Escape Glob RegexpLike RegexpILike DPipe Any All Exists AtTimeZone
Collate BitwiseAnd BitwiseOr BitwiseXor BitwiseNot BitwiseLeftShift BitwiseRightShift
ArrayContainsAll ArrayContainedBy ArrayOverlaps JSONBContains JSONBExists MatchAgainst
JSONPath JSONPathRoot JSONPathKey JSONPathSubscript JSONPathWildcard JSONPathSlice
RawString ByteString HexString Case If Cast
"""

# Pure functions sqlglot parses into typed nodes (both dialects; rendering picks each one's spelling).
_COMMON_FUNCTION_NAMES = """
Count Sum Avg Min Max Stddev StddevPop StddevSamp Variance VariancePop Corr CovarPop CovarSamp
GroupConcat LogicalAnd LogicalOr Grouping RowNumber Rank DenseRank Ntile PercentRank CumeDist
Lag Lead FirstValue LastValue NthValue Lower Upper Length Substring Trim Concat ConcatWs Replace
Left Right Pad Repeat Reverse StrPosition Chr Ascii Unicode Hex Typeof Abs Round Floor Ceil Sqrt
Pow Exp Ln Log Sign Trunc Pi Degrees Radians Sin Cos Tan Asin Acos Atan Atan2 Cot Greatest Least
Coalesce Nullif CurrentDate CurrentTime CurrentTimestamp Extract TimeToStr StrToDate StrToTime
UnixToTime TimeToUnix TimeStrToTime TimeStrToDate DateStrToDate TsOrDsToDate TsOrDsToTimestamp
TsOrDsToDatetime TsOrDsToTime TsOrDsAdd TsOrDsDiff Date Datetime DateAdd DateSub DateDiff
JSONExtract JSONExtractScalar JSONArray JSONObject JSONType ParseJSON
"""

_POSTGRES_FUNCTION_NAMES = """
ArrayAgg PercentileCont PercentileDisc Mode Median RegrAvgx RegrAvgy RegrCount RegrIntercept
RegrR2 RegrSlope RegrSxx RegrSxy RegrSyy BitwiseAndAgg BitwiseOrAgg JSONArrayAgg JSONObjectAgg
JSONBObjectAgg Initcap SplitPart StringToArray ArrayToString RegexpReplace RegexpExtract
RegexpExtractAll RegexpSplit RegexpCount RegexpInstr RegexpSubstr MD5 SHA SHA2 Translate Overlay
Format StartsWith Levenshtein Encode Decode ToChar ToNumber Cbrt WidthBucket Factorial IsNan IsInf
Localtime Localtimestamp DateTrunc TimestampTrunc DatetimeTrunc DateBin DateFromParts
TimestampFromParts MakeInterval JustifyDays JustifyHours JustifyInterval AddMonths LastDay
DayOfWeek DayOfWeekIso DayOfMonth DayOfYear WeekOfYear Year Month Day Quarter Hour Minute Second
TimestampAdd TimestampSub TimestampDiff DatetimeAdd DatetimeSub DatetimeDiff Array ArraySize
ArrayContains ArrayPosition ArrayRemove ArrayAppend ArrayPrepend ArrayConcat Unnest Explode
GenerateSeries ExplodingGenerateSeries JSONBExtract JSONBExtractScalar JSONFormat
"""

_SQLITE_FUNCTION_NAMES = """
Soundex
"""

# Pure functions sqlglot leaves as Anonymous, by lower-case name. Functions that take a count and
# build a long value (lpad, repeat, printf) are listed: the size of what comes back is bounded by
# tools/sql/database.py (a per-row limit on PostgreSQL, SQLITE_LIMIT_LENGTH on SQLite).
_COMMON_NAMED = """
abs coalesce nullif round floor ceil ceiling sign sqrt power pow exp ln log log10 mod pi trunc
degrees radians sin cos tan asin acos atan atan2 lower upper length octet_length replace trim
ltrim rtrim concat concat_ws max min sum avg count
"""

_POSTGRES_NAMED = """
pg_typeof age date_part make_date make_time make_timestamp make_timestamptz to_timestamp to_date
isfinite timezone statement_timestamp transaction_timestamp char_length character_length
bit_length btrim strpos position split_part lpad rpad quote_ident quote_literal quote_nullable
to_hex regexp_matches regexp_match regexp_split_to_array regexp_split_to_table regexp_count
regexp_instr regexp_substr regexp_like string_to_table starts_with format initcap translate
overlay left right reverse repeat md5 sha224 sha256 sha384 sha512 encode decode div cbrt gcd lcm
scale width_bucket num_nonnulls num_nulls cardinality array_length array_lower array_upper
array_dims array_ndims array_position array_positions array_remove array_replace array_cat
array_append array_prepend array_to_string string_to_array unnest generate_series
generate_subscripts json_agg jsonb_agg json_object_agg jsonb_object_agg json_build_object
jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb row_to_json array_to_json
json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text
json_each jsonb_each json_each_text jsonb_each_text json_object_keys jsonb_object_keys json_typeof
jsonb_typeof json_array_length jsonb_array_length json_extract_path jsonb_extract_path
json_extract_path_text jsonb_extract_path_text jsonb_strip_nulls json_strip_nulls jsonb_pretty
bool_and bool_or every string_agg array_agg mode percentile_cont percentile_disc corr covar_pop
covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy
regr_syy stddev stddev_pop stddev_samp variance var_pop var_samp bit_and bit_or to_char
to_number date_trunc date_bin justify_days justify_hours justify_interval make_interval row
to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
ts_headline setweight numnode querytree int4range int8range numrange daterange tsrange tstzrange
isempty lower_inc upper_inc lower_inf upper_inf range_merge
"""

_SQLITE_NAMED = """
printf format julianday date time datetime unixepoch strftime timediff total typeof instr substr
substring char unicode hex quote soundex likelihood likely unlikely ifnull iif group_concat
string_agg json json_extract json_array json_object json_array_length json_type json_valid
json_quote json_group_array json_group_object json_each json_tree json_insert json_replace
json_set json_remove json_patch jsonb jsonb_extract jsonb_array jsonb_object log2 glob like
"""

# Types a value may be cast to: built-in scalar types. Not the object-identifier types (regclass,
# regproc, oid: they look names up in the catalogs), not xml, and not user-defined types, whose
# input functions are whatever their owner wrote.
_CAST_TYPE_NAMES = """
BIGINT INT SMALLINT TINYINT MEDIUMINT DECIMAL DOUBLE FLOAT MONEY TEXT VARCHAR CHAR NCHAR NVARCHAR
NAME BPCHAR DATE TIME TIMETZ TIMESTAMP TIMESTAMPTZ TIMESTAMPLTZ DATETIME INTERVAL BOOLEAN JSON
JSONB UUID ARRAY BIT INT4RANGE INT8RANGE NUMRANGE DATERANGE TSRANGE TSTZRANGE
"""


def _classes(names: str) -> frozenset[type[exp.Expression]]:
    found = (getattr(exp, name, None) for name in names.split())
    return frozenset(c for c in found if isinstance(c, type) and issubclass(c, exp.Expression))


def _types(names: str) -> frozenset[exp.DataType.Type]:
    return frozenset(exp.DataType.Type[name] for name in names.split() if name in exp.DataType.Type.__members__)


STRUCTURE = _classes(_STRUCTURE_NAMES)
TYPED_FUNCTIONS = {
    "postgres": _classes(_COMMON_FUNCTION_NAMES + _POSTGRES_FUNCTION_NAMES),
    "sqlite": _classes(_COMMON_FUNCTION_NAMES + _SQLITE_FUNCTION_NAMES),
}
NAMED_FUNCTIONS = {
    "postgres": frozenset((_COMMON_NAMED + _POSTGRES_NAMED).split()),
    "sqlite": frozenset((_COMMON_NAMED + _SQLITE_NAMED).split()),
}
CAST_TYPES = _types(_CAST_TYPE_NAMES)
DIALECTS = frozenset(TYPED_FUNCTIONS)

# Every name above, for the test that says which ones an installed sqlglot does not know.
LISTED_CLASS_NAMES = frozenset(
    (_STRUCTURE_NAMES + _COMMON_FUNCTION_NAMES + _POSTGRES_FUNCTION_NAMES + _SQLITE_FUNCTION_NAMES).split()
)
LISTED_TYPE_NAMES = frozenset(_CAST_TYPE_NAMES.split())

# Catalogs the queries may not read (tools/sql/database.py also refuses, on SQLite, any table that
# is not one of the file's own tables or views): schema information comes from list_tables/describe_table,
# and these hold other sessions' query texts (pg_stat_activity), password hashes (pg_authid),
# server settings and credentials for foreign servers. Refused by schema and by name prefix,
# since an unqualified pg_* name resolves to pg_catalog first.
SYSTEM_SCHEMAS = {
    "postgres": frozenset({"pg_catalog", "information_schema", "pg_toast"}),
    "sqlite": frozenset(),
}
# SQLite's pragma_* names are table-valued functions that need no parentheses (pragma_function_list).
SYSTEM_PREFIXES = {"postgres": ("pg_",), "sqlite": ("sqlite_", "pragma_")}
