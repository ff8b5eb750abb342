"""Golden tests of the ksqlDB functions, through the real path (Statement + Engine on DuckDB).

Expected values are ksqlDB's documented examples (docs/developer-guide/
ksqldb-reference/scalar-functions.md) and its UDF unit tests
(ksqldb-engine/src/test/java/io/confluent/ksql/function/udf/...), quoted as
written there. Property tests check ROUND, MASK and SUBSTRING against
Python models of ksqlDB's Java code, and the pattern/path translators.
"""
import decimal
import functools
import unicodedata

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.clean import Engine, Statement
from beam_ml.clean.functions import java_pattern_parts, json_pointer
from beam_ml.errors import UserError

_SCHEMA = pa.schema([("s", pa.string()), ("x", pa.float64()), ("i", pa.int64()), ("n", pa.int64()),
                     ("ts", pa.int64()), ("j", pa.string())])


def evaluate(expr: str, **row):
    """The value of a ksqlDB expression over one row of `_SCHEMA` columns."""
    values = {f.name: [row.get(f.name)] for f in _SCHEMA}
    table = pa.table(values, schema=_SCHEMA)
    stmt = Statement.prepare(f"SELECT {expr} AS v FROM events", _SCHEMA)
    engine = Engine(stmt)
    try:
        result = engine.run(table)
    finally:
        engine.close()
    assert not result.dead, result.dead
    return result.table.column("v")[0].as_py()


def evaluate_many(exprs):
    """Many constant expressions in one statement (one connection)."""
    cols = ", ".join(f"{e} AS v{k}" for k, e in enumerate(exprs))
    stmt = Statement.prepare(f"SELECT {cols} FROM events", _SCHEMA)
    engine = Engine(stmt)
    try:
        row = engine.run(pa.table({f.name: [None] for f in _SCHEMA}, schema=_SCHEMA)).table.to_pylist()[0]
    finally:
        engine.close()
    return [row[f"v{k}"] for k in range(len(exprs))]


GOLDEN = [
    # MASK family: scalar-functions.md examples.
    ("MASK('My Test $123')", "Xx-Xxxx--nnn"),
    ("MASK('My Test $123', '*', NULL, '1', NULL)", "*y *est $111"),
    ("MASK_KEEP_LEFT('My Test $123', 4)", "My Txxx--nnn"),
    ("MASK_KEEP_RIGHT('My Test $123', 4)", "Xx-Xxxx-$123"),
    ("MASK_LEFT('My Test $123', 4)", "Xx-Xest $123"),
    ("MASK_RIGHT('My Test $123', 4)", "My Test -nnn"),
    # MASK family: MaskTest / MaskLeftTest / MaskRightTest / MaskKeep*Test.
    ("MASK('AbCd#$123xy Z')", "XxXx--nnnxx-X"),
    ("MASK('AbCd#$123xy Z', 'Q', 'q', '9', '@')", "QqQq@@999qq@Q"),
    ("MASK('AbCd#$123xy Z', NULL, NULL, NULL, NULL)", "AbCd#$123xy Z"),
    ("MASK('AbCd#$123xy Z', NULL, 'q', NULL, '=')", "AqCq==123qq=Z"),
    ("MASK_LEFT('AbCd#$123xy Z', 5)", "XxXx-$123xy Z"),
    ("MASK_LEFT('AbCd#$123xy Z', 999)", "XxXx--nnnxx-X"),
    ("MASK_RIGHT('AbCd#$123xy Z', 5)", "AbCd#$12nxx-X"),
    ("MASK_RIGHT('AbCd#$123xy Z', 999)", "XxXx--nnnxx-X"),
    ("MASK_KEEP_LEFT('AbCd#$123xy Z', 5)", "AbCd#-nnnxx-X"),
    ("MASK_KEEP_LEFT('AbCd#$123xy Z', 999)", "AbCd#$123xy Z"),
    ("MASK_KEEP_RIGHT('AbCd#$123xy Z', 5)", "XxXx--nn3xy Z"),
    ("MASK_KEEP_RIGHT('AbCd#$123xy Z', 999)", "AbCd#$123xy Z"),
    ("MASK_KEEP_RIGHT('AbCd#$123xy Z', 5, 'Q', 'q', '9', '@')", "QqQq@@993xy Z"),
    ("MASK_KEEP_RIGHT('AbCd#$123xy Z', 5, NULL, NULL, NULL, NULL)", "AbCd#$123xy Z"),
    ("MASK_KEEP_RIGHT('AbCd#$123xy Z', 5, NULL, 'q', NULL, '=')", "AqCq==123xy Z"),
    ("MASK(CAST(NULL AS VARCHAR))", None),
    ("MASK_LEFT(CAST(NULL AS VARCHAR), 5)", None),
    # The issue's example: MASK_LEFT(User, 2) with '*' masks.
    ("MASK_LEFT('Hans', 2, '*', '*', '*', '*')", "**ns"),
    # ROUND: RoundTest (half up towards +inf, on the decimal value).
    ("ROUND(1.5::DOUBLE)", 2), ("ROUND(-1.5::DOUBLE)", -1), ("ROUND(-1.75::DOUBLE)", -2),
    ("ROUND(12345.5::DOUBLE)", 12346), ("ROUND(-12345.5::DOUBLE)", -12345),
    ("ROUND(9999999.99::DOUBLE)", 10000000), ("ROUND(-2.5::DOUBLE)", -2), ("ROUND(7)", 7),
    ("ROUND(100.5::DOUBLE, 0)", 101.0), ("ROUND(-100.5::DOUBLE, 0)", -100.0),
    ("ROUND(100.15::DOUBLE, 1)", 100.2), ("ROUND(-100.15::DOUBLE, 1)", -100.1),
    ("ROUND(100.115::DOUBLE, 2)", 100.12), ("ROUND(-100.115::DOUBLE, 2)", -100.11),
    ("ROUND(100.1115::DOUBLE, 3)", 100.112), ("ROUND(-100.1115::DOUBLE, 3)", -100.111),
    ("ROUND(12345.67::DOUBLE, -1)", 12350.0), ("ROUND(12345.67::DOUBLE, -3)", 12000.0),
    ("ROUND(12345.67::DOUBLE, -5)", 0.0), ("ROUND(-12345.67::DOUBLE, -2)", -12300.0),
    ("ROUND(CAST(NULL AS DOUBLE), 2)", None),
    # SUBSTRING: docs and SubstringTest.
    ("SUBSTRING('stream', 1, 4)", "stre"),
    ("SUBSTRING('a test string', 1, 1)", "a"), ("SUBSTRING('a test string', -1, 1)", "g"),
    ("SUBSTRING('a test string', 3)", "test string"), ("SUBSTRING('a test string', 3, 4)", "test"),
    ("SUBSTRING('a test string', -6)", "string"), ("SUBSTRING('a test string', -6, 2)", "st"),
    ("SUBSTRING('a test string', 0)", "a test string"), ("SUBSTRING('a test string', 100)", ""),
    ("SUBSTRING('a test string', -100)", "a test string"), ("SUBSTRING('a test string', 3, 100)", "test string"),
    ("SUBSTRING('a test string', 3, -100)", ""), ("SUBSTRING(CAST(NULL AS VARCHAR), 1)", None),
    # CONCAT: ConcatTest (NULLs are skipped; all NULL is '').
    ("CONCAT('The', 'Quick', 'Brown', 'Fox')", "TheQuickBrownFox"),
    ("CONCAT(NULL, 'this ', NULL, 'should ', NULL, 'work!', NULL)", "this should work!"),
    ("CONCAT(CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR))", ""),
    # TRIM: TrimTest (Java's String.trim: every char <= U+0020).
    ("TRIM(' ' || chr(9) || ' Foo Bar')", "Foo Bar"), ("TRIM('Foo Bar ' || chr(9) || ' ')", "Foo Bar"),
    ("TRIM(' ' || chr(9) || ' ')", ""), ("TRIM('')", ""), ("TRIM(CAST(NULL AS VARCHAR))", None),
    # LEN: LenTest.
    ("LEN('FoO bAr')", 7), ("LEN('')", 0), ("LEN(CAST(NULL AS VARCHAR))", None),
    # UCASE / LCASE / IFNULL / COALESCE / LIKE / CASE.
    ("UCASE('FoO bAr')", "FOO BAR"), ("LCASE('FoO bAr')", "foo bar"),
    ("IFNULL(CAST(NULL AS INTEGER), -1)", -1), ("IFNULL(3, -1)", 3),
    ("COALESCE(NULL, 'a', 'b')", "a"), ("COALESCE(1, 2, 3)", 1), ("COALESCE(CAST(NULL AS VARCHAR))", None),
    ("'Premium Gold' LIKE 'Premium%'", True), ("'premium' LIKE 'Premium%'", False),
    ("'ab' LIKE 'a_'", True),
    ("CASE WHEN 3 > 2 THEN 'big' ELSE 'small' END", "big"),
    # EXTRACTJSONFIELD: docs and JsonExtractStringKudfTest.
    ("""EXTRACTJSONFIELD('{"log": {"cloud": "gcp836Csd", "app": "ksProcessor", "instance": 4}}', '$.log.cloud')""",
     "gcp836Csd"),
    ("""EXTRACTJSONFIELD('{"log": {"instance": 4}}', '$.log.instance')""", "4"),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$.thing1.thing2')""", "hello"),
    ("""EXTRACTJSONFIELD('{"@type": "foo"}', '$.@type')""", "foo"),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$.thing1')""",
     '{"thing2":"hello"}'),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$')""",
     '{"thing1":{"thing2":"hello"},"array":[101,102]}'),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$.array.1')""", "102"),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$.array[1]')""", "102"),
    ("""EXTRACTJSONFIELD('{"thing1":{"thing2":"hello"},"array":[101,102]}', '$.will.not.find.me')""", None),
    ("""EXTRACTJSONFIELD('{"a b": {"c": 1}}', '$["a b"].c')""", "1"),
    ("""EXTRACTJSONFIELD('{"a": null}', '$.a')""", "null"),
    ("EXTRACTJSONFIELD(CAST(NULL AS VARCHAR), '$.thing1')", None),
    # TIMESTAMPTOSTRING: TimestampToStringTest (UTC when no zone is given, see functions.py).
    ("TIMESTAMPTOSTRING(1534353043000, 'yyyy-MM-dd HH:mm:ss', 'UTC')", "2018-08-15 17:10:43"),
    ("TIMESTAMPTOSTRING(1534353043000, 'yyyy-MM-dd HH:mm:ss', 'America/Los_Angeles')", "2018-08-15 10:10:43"),
    ("TIMESTAMPTOSTRING(1638360611123, 'yyyy-MM-dd HH:mm:ss.SSS')", "2021-12-01 12:10:11.123"),
    ("TIMESTAMPTOSTRING(1638360611123, 'yyyy-MM-dd''T''HH:mm:ss.SSS''Fred''')", "2021-12-01T12:10:11.123Fred"),
    ("TIMESTAMPTOSTRING(1534353043000, 'yyyy-MM-dd HH:mm:ss', CAST(NULL AS VARCHAR))", None),
    ("TIMESTAMPTOSTRING(1534353043000, 'yyyy-MM-dd''T''HH:mm:ssXXX', 'America/Los_Angeles')",
     "2018-08-15T10:10:43-07:00"),
    ("TIMESTAMPTOSTRING(1534353043000, 'HH:mm X', 'UTC')", "17:10 Z"),
    ("TIMESTAMPTOSTRING(1534353043000, 'HH:mm Z', 'Asia/Kolkata')", "22:40 +0530"),
    ("TIMESTAMPTOSTRING(1534353043000, 'EEE, d MMM yyyy h:mm a', 'UTC')", "Wed, 15 Aug 2018 5:10 PM"),
    ("TIMESTAMPTOSTRING(1534353043000, '100%', 'UTC')", "100%"),
]


def test_golden_values_of_ksqldb_docs_and_tests():
    exprs = [e for e, _ in GOLDEN]
    got = evaluate_many(exprs)
    wrong = [(e, want, g) for (e, want), g in zip(GOLDEN, got) if g != want or type(g) is not type(want)]
    assert not wrong, "\n".join(f"{e}: want {w!r}, got {g!r}" for e, w, g in wrong)


def test_functions_on_columns_and_the_issue_example():
    assert evaluate("MASK_LEFT(s, 2)", s="Hans") == "Xxns"
    assert evaluate("s + ' ' + CAST(i AS VARCHAR) || '!'", s="Hans", i=3) == "Hans 3!"  # ksqlDB's + on strings
    assert evaluate("IFNULL(i, -1)") == -1
    assert evaluate("IFNULL(i, -1)", i=0) == 0
    assert evaluate("ROUND(x, 2)", x=-100.115) == -100.11
    assert evaluate("TIMESTAMPTOSTRING(ts, 'yyyy-MM-dd HH:mm:ss.SSS')", ts=1638360611123) == "2021-12-01 12:10:11.123"
    assert evaluate("EXTRACTJSONFIELD(j, '$.a.b')", j='{"a": {"b": [1, 2]}}') == "[1,2]"


@pytest.mark.parametrize("expr, message", [
    ("MASK_LEFT(s, n)", "function mask_left requires a non-negative number of characters to mask or skip"),
    ("MASK(s, j, NULL, NULL, NULL)", "Invalid mask character. Must be only single character, but was 'ab'"),
    ("EXTRACTJSONFIELD(j, '$.a')", "Malformed JSON"),
])
def test_runtime_errors_carry_ksqldb_and_engine_messages(expr, message):
    table = pa.table({f.name: [None] for f in _SCHEMA}, schema=_SCHEMA)
    table = table.set_column(0, "s", pa.array(["Hans"])).set_column(3, "n", pa.array([-1]))
    table = table.set_column(5, "j", pa.array(["ab" if "MASK(" in expr else "this is NOT a JSON doc"]))
    stmt = Statement.prepare(f"SELECT {expr} AS v FROM events", _SCHEMA)
    result = Engine(stmt).run(table)
    assert result.rows_out == 0 and len(result.dead) == 1
    assert message in result.dead[0].reason


@pytest.mark.parametrize("sql, message", [
    ("SELECT TIMESTAMPTOSTRING(ts, 'invalid') FROM events", "Unknown pattern letter: i"),
    ("SELECT TIMESTAMPTOSTRING(ts, 'yyyy zzz') FROM events", "letter 'z'"),
    ("SELECT PARSE_TIMESTAMP(s, s) FROM events", "must be a string literal"),
    ("SELECT EXTRACTJSONFIELD(j, '$..a') FROM events", "Invalid JSON path"),
    ("SELECT EXTRACTJSONFIELD(j, s) FROM events", "must be a string literal"),
    ("SELECT MASK_LEFT(s) FROM events", "MASK_LEFT takes 2 or 6 arguments, got 1"),
    ("SELECT MASK(s, 'ab', NULL, NULL, NULL) FROM events", "Invalid mask character"),
])
def test_bad_literal_arguments_fail_at_preparation(sql, message):
    with pytest.raises(UserError, match="^--sql: ") as e:
        Statement.prepare(sql, _SCHEMA)
    assert message in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------
# Properties against Python models of ksqlDB's Java code.

def _java_round(x: float, d: int) -> float:
    v = decimal.Decimal(repr(x))
    mode = decimal.ROUND_HALF_UP if v > 0 else decimal.ROUND_HALF_DOWN
    return float(v.quantize(decimal.Decimal(1).scaleb(-d), rounding=mode))


def _java_mask(s: str, u="X", l="x", d="n", o="-") -> str:
    out = []
    for c in s:
        cat = unicodedata.category(c)
        m = u if cat == "Lu" else l if cat == "Ll" else d if cat == "Nd" else o
        out.append(c if m is None else m)
    return "".join(out)


def _java_substring(s: str, pos: int, length=None) -> str:
    start = max(len(s) + pos, 0) if pos < 0 else max(min(pos - 1, len(s)), 0)
    if length is None:
        return s[start:]
    end = max(min(start + length, len(s)), start)
    return s[start:end]


_text = st.text(alphabet=st.sampled_from("AbZz09 -$_#éÉß東٣\t\u0301ǅ😀𝐀"), max_size=12)


@functools.lru_cache(maxsize=None)
def _engine(sql: str) -> Engine:
    """One prepared statement per text for the whole module (property tests run it many times)."""
    return Engine(Statement.prepare(sql, _SCHEMA))


def _run(sql: str, **columns) -> list[dict]:
    n = len(next(iter(columns.values())))
    table = pa.table({f.name: columns.get(f.name, [None] * n) for f in _SCHEMA}, schema=_SCHEMA)
    result = _engine(sql).run(table)
    assert not result.dead and result.rows_out == n
    return result.table.to_pylist()


@settings(max_examples=50, deadline=None)
@given(xs=st.lists(st.tuples(st.decimals(min_value=-10**6, max_value=10**6, places=4, allow_nan=False),
                             st.integers(min_value=-3, max_value=4)), min_size=1, max_size=20))
def test_round_matches_bigdecimal_half_up_towards_positive_infinity(xs):
    values = [(float(x), d) for x, d in xs]
    rows = _run("SELECT ROUND(x, n) AS r, ROUND(x) AS r0 FROM events",
                x=[x for x, _ in values], n=[d for _, d in values])
    assert [r["r"] for r in rows] == [_java_round(x, d) for x, d in values]
    assert [r["r0"] for r in rows] == [int(_java_round(x, 0)) for x, _ in values]


@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.tuples(_text, st.integers(min_value=0, max_value=15)), min_size=1, max_size=10))
def test_masks_match_the_java_masker(words):
    rows = _run("SELECT MASK(s) AS m, MASK_LEFT(s, n) AS ml, MASK_RIGHT(s, n) AS mr, MASK_KEEP_LEFT(s, n) AS mkl, "
                "MASK_KEEP_RIGHT(s, n) AS mkr, MASK(s, '*', NULL, '#', NULL) AS mc, "
                "MASK_LEFT(s, 3) AS ml3, CONCAT(MASK_RIGHT(s, 3), '!') AS umr3 FROM events",
                s=[w for w, _ in words], n=[n for _, n in words])
    for (w, n), row in zip(words, rows):
        k = min(n, len(w))
        assert row == {"m": _java_mask(w), "ml": _java_mask(w[:k]) + w[k:],
                       "mr": w[:len(w) - k] + _java_mask(w[len(w) - k:]), "mkl": w[:k] + _java_mask(w[k:]),
                       "mkr": _java_mask(w[:len(w) - k]) + w[len(w) - k:], "mc": _java_mask(w, "*", None, "#", None),
                       # literal counts on a column are masked by the engine, nested ones by the UDF in DuckDB
                       "ml3": _java_mask(w[:3]) + w[3:],
                       "umr3": w[:max(len(w) - 3, 0)] + _java_mask(w[max(len(w) - 3, 0):]) + "!"}


@settings(max_examples=50, deadline=None)
@given(cases=st.lists(st.tuples(_text, st.integers(-20, 20), st.integers(-5, 20)), min_size=1, max_size=10))
def test_substring_matches_ksqldb(cases):
    rows = _run("SELECT SUBSTRING(s, n, i) AS sub3, SUBSTRING(s, n) AS sub2 FROM events",
                s=[c[0] for c in cases], n=[c[1] for c in cases], i=[c[2] for c in cases])
    for (s, pos, length), row in zip(cases, rows):
        assert row == {"sub3": _java_substring(s, pos, length), "sub2": _java_substring(s, pos)}


@given(keys=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\'),
                             min_size=1, max_size=6), min_size=0, max_size=4))
def test_json_pointer_of_bracketed_paths_escapes_every_key(keys):
    path = "$" + "".join(f'["{k}"]' for k in keys)
    assert json_pointer(path) == "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


@given(text=st.text(alphabet=st.sampled_from("-:/. ,%T"), min_size=1, max_size=10))
def test_java_pattern_literals_survive_as_strftime_text(text):
    quoted = "'" + text.replace("'", "''") + "'"
    parts = java_pattern_parts(f"yyyy{quoted}")
    assert parts == [("strftime", "%Y" + text.replace("%", "%%"))]
