"""ksqlDB's own tests (QTT files, UDF unit tests) as the judge of the --sql step; see beam_ml.clean.conformance.

The reference data lives beside the repository in ../shared/ksqldb-tests (never
in it); without it these tests skip. The goals are behaviour (rows agree), not timing.
"""
from __future__ import annotations

import datetime
import decimal
import os

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.clean import Engine, Statement
from beam_ml.clean import conformance
from beam_ml.clean.functions import java_parse_format, java_pattern_parts
from beam_ml.errors import UserError

_HAVE_DATA = os.path.isdir(os.path.join(conformance.DEFAULT_DIR, "qtt"))
needs_data = pytest.mark.skipif(not _HAVE_DATA, reason=f"no ksqlDB tests at {conformance.DEFAULT_DIR}")


@pytest.fixture(scope="module")
def outcomes():
    # every core: the heavy half of `make test` runs one test at a time
    return conformance.run_all(conformance.DEFAULT_DIR, processes=os.cpu_count() or 1)


def _assert_goal(outcomes, name):
    r = conformance.summary(outcomes)[name]
    listing = "\n".join(f"- {o.where}: {o.reason}" for o in r["disagreements"])
    assert r["met"], (f"{name}: {r['agree']}/{r['total']} = {r['fraction']:.1%} agree, goal {r['goal']:.0%}; "
                      f"disagreements:\n{listing}")


@pytest.mark.slow
@needs_data
def test_udf_unit_tests_agree(outcomes):
    _assert_goal(outcomes, "udf")


@pytest.mark.slow
@needs_data
def test_qtt_cases_of_supported_functions_agree(outcomes):
    _assert_goal(outcomes, "qtt_supported")


@pytest.mark.slow
@needs_data
def test_qtt_cases_the_step_can_express_agree(outcomes):
    _assert_goal(outcomes, "qtt_expressible")


@pytest.mark.slow
@needs_data
def test_every_case_is_run_or_skipped_with_one_reason(outcomes):
    for o in outcomes:
        assert (o.skip is None) != (o.agree is None), o
        assert o.agree is not False or o.reason, o
    skips = conformance.skip_counts(outcomes)
    assert sum(skips.values()) + sum(1 for o in outcomes if o.skip is None) == len(outcomes)
    reasons = {reason for _, reason in skips}
    assert {"joins", "aggregations", "windows"} & reasons or any("more than one source" in r for r in reasons)


# -- the semantics issue 24 lists, on the step itself (fast) -------------------

def _run(sql: str, schema: pa.Schema, rows: list[dict]):
    stmt = Statement.prepare(sql, schema)
    engine = Engine(stmt)
    try:
        return engine.run(pa.Table.from_pylist(rows, schema=schema))
    finally:
        engine.close()


S = pa.schema([("s", pa.string()), ("x", pa.int32()), ("d", pa.float64())])


def test_instr_positions_occurrences_and_null():
    r = _run("SELECT INSTR(s, 'OR') AS a, INSTR(s, 'OR', 3) AS b, INSTR(s, 'OR', 3, 2) AS c, "
             "INSTR(s, 'OR', -3, 2) AS e, INSTR(s, 'OR', -100) AS f FROM events", S,
             [{"s": "CORPORATE FLOOR"}, {"s": None}])
    assert r.table.to_pylist() == [{"a": 2, "b": 5, "c": 14, "e": 2, "f": 0}, {"a": 0, "b": 0, "c": 0, "e": 0, "f": 0}]


def test_comparison_with_null_is_false_so_not_keeps_the_row():
    r = _run("SELECT x = 5 AS eq FROM events WHERE NOT (x = 5)", S, [{"x": None}, {"x": 5}, {"x": 6}])
    assert r.table.to_pylist() == [{"eq": False}, {"eq": False}]
    assert r.filtered == 1


def test_log_replace_regexp_replace_split():
    r = _run("SELECT LOG(d) AS ln, LOG(0, d) AS b0, LOG(1, d) AS b1, REPLACE('abc', '', 'n') AS r, "
             "REGEXP_REPLACE('a.b.c', '\\.', '-') AS g, SPLIT(s, NULL) AS sp FROM events", S,
             [{"d": 13.0, "s": "a-b"}])
    row = r.table.to_pylist()[0]
    assert row["ln"] == pytest.approx(2.5649493574615367) and row["b0"] != row["b0"] and row["b1"] != row["b1"]
    assert (row["r"], row["g"], row["sp"]) == ("nanbncn", "a-b-c", None)


def test_decimal_cast_overflow_is_null_and_round_keeps_decimal():
    schema = pa.schema([("v", pa.decimal128(33, 16))])
    v = decimal.Decimal("12345678987654321.2345678987654321")
    r = _run("SELECT CAST(10 AS DECIMAL(2,1)) AS c, ROUND(v) AS r0, ROUND(v, 2) AS r2 FROM events", schema, [{"v": v}])
    row = r.table.to_pylist()[0]
    assert row == {"c": None, "r0": decimal.Decimal("12345678987654321"),
                   "r2": decimal.Decimal("12345678987654321.2300000000000000")}
    assert pa.types.is_decimal(r.table.schema.field("r0").type)


def test_alias_starting_with_a_digit():
    r = _run("SELECT x AS 1R FROM events", S, [{"x": 1}])
    assert r.table.column_names == ["1R"]


def test_time_functions():
    r = _run("SELECT STRINGTOTIMESTAMP('2018-05-11T21:58:33Z', 'yyyy-MM-dd''T''HH:mm:ssX') AS ms, "
             "FORMAT_TIMESTAMP(PARSE_TIMESTAMP('2018-05-11 21:58', 'yyyy-MM-dd HH:mm'), 'dd/MM/yyyy HH:mm') AS f, "
             "UNIX_DATE(PARSE_DATE('1970-01-11', 'yyyy-MM-dd')) AS days, "
             "TIMESTAMPADD(HOURS, 2, PARSE_TIMESTAMP('2018-05-11', 'yyyy-MM-dd')) AS later, "
             "CONVERT_TZ(PARSE_TIMESTAMP('2018-05-11 12:00', 'yyyy-MM-dd HH:mm'), 'UTC', 'America/Los_Angeles') AS la "
             "FROM events", S, [{"x": 1}])
    row = r.table.to_pylist()[0]
    assert row["ms"] == 1526075913000 and row["f"] == "11/05/2018 21:58" and row["days"] == 10
    assert row["later"] == datetime.datetime(2018, 5, 11, 2) and row["la"] == datetime.datetime(2018, 5, 11, 5)


@pytest.mark.parametrize("sql", ["SELECT upper(s) FROM events", "SELECT list_value(x) FROM events",
                                 "SELECT levenshtein(s, s) FROM events"])
def test_functions_without_ksqldb_meaning_are_refused_by_name(sql):
    with pytest.raises(UserError, match=r"function \w+ is not supported"):
        Statement.prepare(sql, S)


# -- the Java date-pattern translators (hypothesis) -----------------------------

_FIELDS = ["yyyy", "MM", "dd", "HH", "mm", "ss", "SSS"]
_SEPARATORS = ["-", "/", " ", ":", ".", "'T'", "_"]


@st.composite
def _patterns(draw):
    fields = draw(st.permutations(_FIELDS))
    seps = draw(st.lists(st.sampled_from(_SEPARATORS), min_size=len(fields) - 1, max_size=len(fields) - 1))
    out = fields[0]
    for sep, f in zip(seps, fields[1:]):
        out += sep + f
    return out


@settings(max_examples=40, deadline=None)
@given(_patterns(), st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2100, 1, 1)))
def test_format_then_parse_round_trips(pattern, when):
    """What FORMAT_TIMESTAMP writes with a Java pattern, PARSE_TIMESTAMP reads back with the same pattern."""
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    text = "".join(when.strftime(p.replace("%-", "%").replace("%g", "%f")) if k == "strftime" else "?"
                   for k, p in java_pattern_parts(pattern))
    text = text.replace(when.strftime("%f"), when.strftime("%f")[:3])
    schema = pa.schema([("t", pa.string())])
    r = _run(f"SELECT PARSE_TIMESTAMP(t, '{pattern.replace(chr(39), chr(39) * 2)}') AS ts FROM events",
             schema, [{"t": text}])
    assert not r.dead, (pattern, text, r.dead[:1])
    assert r.table.column("ts")[0].as_py() == when, (pattern, text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="yMdHmsSaXZx-/: 'T", max_size=20))
def test_translators_accept_or_refuse_with_one_line(pattern):
    for translate in (java_pattern_parts, java_parse_format):
        try:
            translate(pattern)
        except UserError as e:
            assert "\n" not in str(e)
