"""ksqlDB's own tests as the judge of the `--sql` step: QTT files and UDF unit tests, replayed here.

    python -m beam_ml.clean.conformance                       # the goals table and every disagreement
    python -m beam_ml.clean.conformance --tests=../shared/ksqldb-tests --show=skips

The reference data is ksqlDB's query-validation tests (QTT, one JSON file per
topic: statements, input records, expected output records) and its UDF unit
tests (single-line ``assertThat(udf.f(args), is(expected))`` checks), copied
unchanged from confluentinc/ksql into ``../shared/ksqldb-tests/`` beside the
repository (never into it; see that directory's README).

A QTT case is *expressible* when the step can run it: one input stream
(``CREATE STREAM src (cols) WITH (value_format='JSON')``) and one stateless
``CREATE STREAM out AS SELECT ... FROM src [WHERE ...]`` over flat columns.
Everything else is skipped with one reason (tables, joins, aggregations,
windows, complex types, other formats, ...), and counted. An expressible
case runs through `Statement.prepare` and `Engine.run` exactly as a pipeline
would (input values deserialised as ksqlDB's JSON format does); it *agrees*
when the output records (key and value) are the expected ones, in order, or
when ksqlDB expects an error and the step refuses the statement or
dead-letters the rows. Tombstones (NULL values) are not rows here: ksqlDB
passes them through a stream without evaluating the query, so they are left
out on both sides.

A UDF check becomes ``SELECT f(args) AS R FROM events`` over one row; Java
literals are translated (``1L`` BIGINT, ``1.5d`` DOUBLE, ``new
BigDecimal("1.50")`` DECIMAL(3,2)); checks on bytes, lists or Java
expressions are skipped with that reason. The expected value must match in
type class too: an Integer/Long is an integer, a Double a float, a BigDecimal
a decimal of the same scale (BigDecimal.equals).

Goals (issue 24): of the QTT cases that call only functions the step
supports, and of the UDF checks, >= 98% agree; of all expressible QTT cases,
>= 85% agree.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import glob
import json
import math
import os
import re
import sys
from typing import Any, Iterator, Optional

import pyarrow as pa

from beam_ml.clean.engine import Engine
from beam_ml.clean.functions import SUPPORTED_FUNCTIONS
from beam_ml.clean.statement import Statement
from beam_ml.errors import UserError

__all__ = ["DEFAULT_DIR", "GOALS", "Outcome", "qtt_cases", "udf_checks", "run_all", "summary", "main"]

# ../shared/ksqldb-tests relative to the repository root.
DEFAULT_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "ksqldb-tests"))
# name -> the fraction of cases that must agree.
GOALS = {"qtt_supported": 0.98, "udf": 0.98, "qtt_expressible": 0.85}

_POS = "__qtt_pos__"


@dataclasses.dataclass
class Outcome:
    """One case: where it comes from, whether it ran (else why not), and whether it agreed (else why not)."""

    kind: str          # "qtt" or "udf"
    where: str         # file: test name (format) / file:line
    skip: Optional[str] = None     # why the step cannot express it
    agree: Optional[bool] = None
    reason: str = ""   # the disagreement
    functions: frozenset = frozenset()  # ksqlDB functions the case calls (qtt)


# ---------------------------------------------------------------------------
# Loading QTT files (JSON with // and /* */ comments).

def _strip_json_comments(text: str) -> str:
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            in_str = c != '"'
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def load_qtt(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.loads(_strip_json_comments(f.read()), parse_float=decimal.Decimal)


@dataclasses.dataclass
class QttCase:
    file: str
    name: str
    fmt: Optional[str]
    test: dict

    @property
    def where(self) -> str:
        return f"{self.file}: {self.name}" + (f" ({self.fmt})" if self.fmt else "")


def qtt_cases(directory: str) -> Iterator[QttCase]:
    """Every QTT test, once per format it lists ({FORMAT} substituted)."""
    for path in sorted(glob.glob(os.path.join(directory, "qtt", "*.json"))):
        file = os.path.basename(path)
        for test in load_qtt(path).get("tests", []):
            formats = test.get("format") or [None]
            for fmt in formats:
                t = test
                if fmt is not None:
                    t = json.loads(json.dumps(test, default=str).replace("{FORMAT}", fmt),
                                   parse_float=decimal.Decimal)
                    t = _restore_decimals(test, t)
                yield QttCase(file, test.get("name", "?"), fmt, t)


def _restore_decimals(orig: Any, new: Any) -> Any:
    """json.dumps(default=str) turned Decimals into strings; put the originals back."""
    if isinstance(orig, decimal.Decimal):
        return orig
    if isinstance(orig, dict) and isinstance(new, dict):
        return {k: _restore_decimals(orig.get(k), v) if k in orig else v for k, v in new.items()}
    if isinstance(orig, list) and isinstance(new, list) and len(orig) == len(new):
        return [_restore_decimals(o, v) for o, v in zip(orig, new)]
    return new


# ---------------------------------------------------------------------------
# What the step can express.

_SCALAR_TYPES = {
    "BOOLEAN": pa.bool_(), "INT": pa.int32(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(), "STRING": pa.string(), "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("ms"), "DATE": pa.date32(), "TIME": pa.time32("ms"), "BYTES": pa.binary(),
}
_CREATE_SOURCE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(STREAM|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                            r"(`[^`]+`|\"[^\"]+\"|\w+)\s*(\(.*\))?\s*WITH\s*\((.*)\)\s*;?\s*$",
                            re.IGNORECASE | re.DOTALL)
_CREATE_AS = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(STREAM|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                        r"(`[^`]+`|\"[^\"]+\"|\w+)\s*(?:WITH\s*\((.*?)\)\s*)?AS\s+(SELECT\b.*)$",
                        re.IGNORECASE | re.DOTALL)
_TABLE_FUNCTIONS = {"explode", "cube_explode", "test_udtf"}
_AGGREGATES = {"count", "sum", "avg", "min", "max", "collect_list", "collect_set", "topk", "topkdistinct",
               "histogram", "earliest_by_offset", "latest_by_offset", "count_distinct", "stddev_samp",
               "stddev_sample", "stddev_pop", "correlation", "average", "attr", "var_samp"}
_KEYWORDS = {"and", "or", "not", "in", "is", "like", "between", "case", "when", "then", "else", "end",
             "as", "from", "where", "select", "cast", "exists", "values", "on", "array", "map", "struct",
             "interval", "emit", "changes", "final", "null", "true", "false", "distinct", "escape"}


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Splits on `sep` outside quotes, parentheses and <...>."""
    parts, depth, cur, quote = [], 0, [], None
    for c in text:
        if quote:
            cur.append(c)
            if c == quote:
                quote = None
            continue
        if c in "'`\"":
            quote = c
        elif c in "(<":
            depth += 1
        elif c in ")>":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def _unquote(name: str) -> tuple[str, bool]:
    if name[:1] in "`\"" and name[-1:] == name[:1]:
        return name[1:-1], True
    return name.upper(), False


def _with_props(text: str) -> dict[str, str]:
    props = {}
    for item in _split_top(text):
        if "=" in item:
            k, v = item.split("=", 1)
            props[k.strip().lower()] = v.strip().strip("'\"")
    return props


def _column_type(text: str) -> pa.DataType:
    t = " ".join(text.split()).upper()
    m = re.fullmatch(r"DECIMAL\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", t)
    if m:
        try:
            return pa.decimal128(int(m.group(1)), int(m.group(2)))
        except ValueError:
            raise _Skip("DECIMAL precision/scale Arrow cannot hold") from None
    if t in _SCALAR_TYPES:
        return _SCALAR_TYPES[t]
    raise _Skip("complex types (ARRAY, MAP, STRUCT) or custom types in the input")


class _Skip(Exception):
    pass


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


def called_functions(select: str) -> set[str]:
    """Names called as functions in a SELECT (outside string literals)."""
    names = {m.group(1).lower() for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", _strip_strings(select))}
    return names - _KEYWORDS - {"decimal", "varchar", "string", "bigint", "int", "integer", "double",
                                 "boolean", "timestamp", "date", "time", "bytes", "with"}


@dataclasses.dataclass
class _Plan:
    schema: pa.Schema
    keys: list[str]            # key columns of the source
    select: str                # the SELECT over `events`
    sink: str
    wrap_single: bool = True


def express(case: QttCase) -> _Plan:
    """The case as the step would run it, or _Skip(reason)."""
    t = case.test
    if t.get("enabled") is False:
        raise _Skip("disabled in ksqlDB")
    if t.get("properties") or t.get("config"):
        raise _Skip("sets ksqlDB properties")
    stmts = [s for s in t["statements"] if s.strip()]
    create_sources = [s for s in stmts if _CREATE_SOURCE.match(s) and not _CREATE_AS.match(s)]
    queries = [s for s in stmts if _CREATE_AS.match(s)]
    others = [s for s in stmts if s not in create_sources and s not in queries]
    if others:
        first = others[0].split()[0].upper() if others[0].split() else "?"
        what = {"INSERT": "INSERT INTO", "CREATE": "CREATE TYPE / other DDL", "DROP": "DROP",
                "SET": "SET/UNSET properties", "UNSET": "SET/UNSET properties", "ASSERT": "ASSERT statements",
                "DEFINE": "variables", "TERMINATE": "TERMINATE"}.get(first, f"{first} statements")
        raise _Skip(what)
    if len(create_sources) != 1:
        raise _Skip("more than one source (joins, tables)" if len(create_sources) > 1 else "no source stream")
    if len(queries) != 1:
        raise _Skip("more than one query" if queries else "no CREATE ... AS SELECT")
    m = _CREATE_SOURCE.match(create_sources[0])
    if m.group(1).upper() == "TABLE":
        raise _Skip("tables (source is a TABLE)")
    src, _ = _unquote(m.group(2))
    props = _with_props(m.group(4))
    value_format = (props.get("value_format") or props.get("format") or "").upper()
    if value_format != "JSON":
        raise _Skip(f"value format {value_format or '?'}")
    key_format = (props.get("key_format") or props.get("format") or "KAFKA").upper()
    if key_format not in ("KAFKA", "JSON", "NONE"):
        raise _Skip(f"key format {key_format}")
    if "wrap_single_value" in props:
        raise _Skip("WRAP_SINGLE_VALUE")
    if "timestamp" in props:
        raise _Skip("event time from a column (WITH TIMESTAMP=)")
    if m.group(3) is None:
        raise _Skip("schema from a registry (no column list)")
    fields, keys = [], []
    for col in _split_top(m.group(3).strip()[1:-1]):
        parts = col.split(None, 1)
        if len(parts) != 2:
            raise _Skip("unreadable column list")
        name, _ = _unquote(parts[0])
        rest = parts[1].strip()
        if re.search(r"\bHEADERS?\b", rest, re.IGNORECASE):
            raise _Skip("header columns")
        key = re.search(r"\b(PRIMARY\s+)?KEY\s*$", rest, re.IGNORECASE)
        if key:
            rest = rest[:key.start()]
            keys.append(name)
        typ = _column_type(rest)
        if pa.types.is_binary(typ):
            raise _Skip("BYTES columns (beam_ml's record readers give text, never BYTES)")
        fields.append(pa.field(name, typ))
    if len(keys) > 1:
        raise _Skip("several key columns")
    q = _CREATE_AS.match(queries[0])
    if q.group(1).upper() == "TABLE":
        raise _Skip("tables (CREATE TABLE AS)")
    sink_props = _with_props(q.group(3) or "")
    if "wrap_single_value" in sink_props:
        raise _Skip("WRAP_SINGLE_VALUE")
    if "timestamp" in sink_props:
        raise _Skip("event time from a column (WITH TIMESTAMP=)")
    if sink_props.get("value_format", sink_props.get("format", "JSON")).upper() != "JSON":
        raise _Skip("output in another value format")
    if sink_props.get("key_format", "KAFKA").upper() not in ("KAFKA", "JSON", "NONE"):
        raise _Skip("output in another key format")
    sink = sink_props.get("kafka_topic") or _unquote(q.group(2))[0]
    select = q.group(4).strip().rstrip(";").strip()
    bare = _strip_strings(select)
    checks = [
        (r"\bJOIN\b", "joins"),
        (r"\bGROUP\s+BY\b|\bHAVING\b", "aggregations"),
        (r"\bWINDOW\b|\bWINDOWSTART\b|\bWINDOWEND\b", "windows"),
        (r"\bPARTITION\s+BY\b", "PARTITION BY (re-keying)"),
        (r"\bROWTIME\b|\bROWPARTITION\b|\bROWOFFSET\b", "system columns (ROWTIME, ROWOFFSET, ...)"),
        (r"->|=>|\[", "complex types (STRUCT ->, lambdas, [index])"),
        (r"\bSTRUCT\s*\(|\bARRAY\s*\[|\bMAP\s*\(|\bARRAY\s*<|\bMAP\s*<|\bSTRUCT\s*<", "complex types (constructors)"),
        (r"\bEMIT\s+FINAL\b", "EMIT FINAL"),
    ]
    for pattern, reason in checks:
        if re.search(pattern, bare, re.IGNORECASE):
            raise _Skip(reason)
    funcs = called_functions(select)
    if funcs & _TABLE_FUNCTIONS:
        raise _Skip("table functions (one row to many)")
    if funcs & _AGGREGATES:
        raise _Skip("aggregations")
    fm = re.search(r"\bFROM\s+(`[^`]+`|\"[^\"]+\"|\w+)(\s+(?:AS\s+)?(\w+))?", select, re.IGNORECASE)
    if fm is None or _unquote(fm.group(1))[0] != src:
        raise _Skip("reads another source")
    alias = fm.group(3)
    if alias and alias.upper() in ("WHERE", "EMIT", "LIMIT"):
        alias = None
    new_from = f"FROM events {alias}" if alias else f"FROM events AS {fm.group(1)}"
    select = select[:fm.start()] + new_from + select[fm.end() if alias else fm.end(1):]
    select = re.sub(r"\s+EMIT\s+CHANGES\s*$", "", select, flags=re.IGNORECASE)
    return _Plan(pa.schema(fields), keys, select, sink.upper() if not sink.startswith(("`", '"')) else sink)


# ---------------------------------------------------------------------------
# ksqlDB's JSON deserialisation of one value.

class _BadRecord(Exception):
    pass


def _coerce(v: Any, t: pa.DataType) -> Any:
    if v is None:
        return None
    try:
        if pa.types.is_boolean(t):
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            raise _BadRecord(f"{v!r} is not a BOOLEAN")
        if pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
            if isinstance(v, bool):
                raise _BadRecord(f"{v!r} is not a number")
            if isinstance(v, (int, decimal.Decimal)):
                n = int(v)
            elif isinstance(v, str):
                n = int(v.strip())
            else:
                raise _BadRecord(f"{v!r} is not a number")
            if pa.types.is_integer(t):
                bits = t.bit_width
                if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
                    raise _BadRecord(f"{v!r} out of range")
                return n
            if pa.types.is_timestamp(t):
                return datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=n)
            if pa.types.is_date(t):
                return datetime.date(1970, 1, 1) + datetime.timedelta(days=n)
            return (datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=n)).time()
        if pa.types.is_floating(t):
            if isinstance(v, bool) or not isinstance(v, (int, decimal.Decimal, str)):
                raise _BadRecord(f"{v!r} is not a DOUBLE")
            return float(v)
        if pa.types.is_decimal(t):
            if isinstance(v, bool) or not isinstance(v, (int, decimal.Decimal, str)):
                raise _BadRecord(f"{v!r} is not a DECIMAL")
            d = decimal.Decimal(str(v))
            if d.as_tuple().exponent < -t.scale:
                raise _BadRecord(f"{v!r} has more than {t.scale} decimal places")
            return d.quantize(decimal.Decimal(1).scaleb(-t.scale), context=decimal.Context(prec=80))
        if pa.types.is_string(t):
            if isinstance(v, str):
                return v
            if isinstance(v, bool):
                return "true" if v else "false"
            return json.dumps(v, default=str, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)
        if pa.types.is_binary(t):
            if not isinstance(v, str):
                raise _BadRecord(f"{v!r} is not BYTES")
            return base64.b64decode(v)
    except (ValueError, ArithmeticError) as e:
        raise _BadRecord(str(e)) from None
    raise _BadRecord(f"type {t}")


def _row(value: Any, key: Any, plan: _Plan) -> dict:
    values = [f for f in plan.schema if f.name not in plan.keys]
    if not isinstance(value, dict):
        if len(values) == 1 and not isinstance(value, list):
            value = {values[0].name: value}
        else:
            raise _BadRecord("not a JSON object")
    by_upper: dict[str, Any] = {}
    for k, v in value.items():
        by_upper.setdefault(k.upper(), v)
    row = {}
    for f in plan.schema:
        if f.name in plan.keys:
            row[f.name] = _coerce(key, f.type)
        else:
            row[f.name] = _coerce(value[f.name] if f.name in value else by_upper.get(f.name.upper()), f.type)
    return row


# ---------------------------------------------------------------------------
# Comparing values.

def _json_value(v: Any) -> Any:
    """An output value as ksqlDB's JSON serialiser writes it."""
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return (v - datetime.datetime(1970, 1, 1)) // datetime.timedelta(milliseconds=1)
    if isinstance(v, datetime.date):
        return (v - datetime.date(1970, 1, 1)).days
    if isinstance(v, datetime.time):
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


def same(ours: Any, expected: Any) -> bool:
    """ksqlDB's JSON output `expected` equals our Python value `ours` (numbers by value)."""
    ours = _json_value(ours)
    if expected is None or ours is None:
        return expected is None and ours is None
    if isinstance(expected, bool) or isinstance(ours, bool):
        return ours is expected or (isinstance(expected, str) and str(ours).lower() == expected)
    if isinstance(expected, (int, decimal.Decimal)) and isinstance(ours, (int, float, decimal.Decimal)):
        if isinstance(ours, float):
            e = float(expected)
            return ours == e or (math.isfinite(ours) and math.isclose(ours, e, rel_tol=1e-13))
        return decimal.Decimal(ours) == decimal.Decimal(expected)
    if isinstance(expected, str) and isinstance(ours, float) and expected in ("NaN", "Infinity", "-Infinity"):
        return str(ours) == {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[expected]
    if isinstance(expected, list) and isinstance(ours, list):
        return len(expected) == len(ours) and all(same(o, e) for o, e in zip(ours, expected))
    if isinstance(expected, dict) and isinstance(ours, dict):
        return expected.keys() == ours.keys() and all(same(ours[k], expected[k]) for k in expected)
    return type(ours) is type(expected) and ours == expected


def _show(v: Any) -> str:
    return json.dumps(_json_value(v), default=str)


# ---------------------------------------------------------------------------
# Running a QTT case.

def run_qtt(case: QttCase) -> Outcome:
    out = Outcome("qtt", case.where)
    try:
        plan = express(case)
    except _Skip as s:
        out.skip = str(s)
        return out
    out.functions = frozenset(called_functions(plan.select))
    t = case.test
    expect_error = t.get("expectedException")
    rows, keys = [], []
    for rec in t.get("inputs", []):
        if rec.get("value") is None:
            continue  # a stream drops tombstones
        try:
            rows.append(_row(rec["value"], rec.get("key"), plan))
        except _BadRecord:
            rows.append(None)  # ksqlDB skips what it cannot deserialise; so does a reader (dead letter)
    try:
        stmt = Statement.prepare(plan.select, plan.schema.append(pa.field(_POS, pa.int64())),
                                 position_column=_POS, flag="qtt")
    except UserError as e:
        if expect_error:
            out.agree = True
        else:
            out.agree, out.reason = False, f"refused at prepare: {e}"
        return out
    good = [dict(r, **{_POS: i}) for i, r in enumerate(rows) if r is not None]
    produced: list[dict] = []
    dead: list[str] = []
    if good:
        table = pa.Table.from_pylist(good, schema=stmt.events_schema)
        engine = Engine(stmt)
        try:
            result = engine.run(table)
        finally:
            engine.close()
        produced = result.table.to_pylist()
        dead = [d.reason for d in result.dead]
    if expect_error:
        if dead:
            out.agree = True
        else:
            msg = expect_error.get("message", expect_error.get("type", "")) if isinstance(expect_error, dict) else ""
            out.agree, out.reason = False, f"ksqlDB fails ({str(msg)[:120]}); the step ran"
        return out
    # Output columns that are the source's key selected as it is (possibly renamed) form the output key.
    key_cols = [item for item in _key_items(plan) if item]
    expected = [r for r in t.get("outputs", []) if str(r.get("topic", "")).upper() == plan.sink.upper()
                or r.get("topic") == plan.sink]
    # A stream passes a tombstone (NULL value) through without evaluating the query; in
    # beam_ml a tombstone never becomes a row, so those outputs are the transport's, not the statement's.
    if any(rec.get("value") is None for rec in t.get("inputs", [])):
        expected = [r for r in expected if r.get("value") is not None]
    if dead and len(produced) + len(dead) != len(expected) or (dead and not produced):
        out.agree, out.reason = False, f"{len(dead)} dead letter(s), e.g. {dead[0][:160]}"
        return out
    if len(produced) != len(expected):
        out.agree = False
        out.reason = (f"{len(produced)} output record(s), ksqlDB {len(expected)}"
                      + (f"; dead: {dead[0][:120]}" if dead else ""))
        return out
    for ours, exp in zip(produced, expected):
        ours = {k: v for k, v in ours.items() if k != _POS}
        key_value = None
        for k in key_cols:
            for name in list(ours):
                if name.upper() == k.upper():
                    key_value = ours.pop(name)
        exp_value = exp.get("value") or {}
        if isinstance(exp.get("key"), dict) and len(exp["key"]) == 1:
            exp_key = next(iter(exp["key"].values()))
        else:
            exp_key = exp.get("key")
        if key_cols and not same(key_value, exp_key):
            out.agree, out.reason = False, f"key {_show(key_value)}, ksqlDB {json.dumps(exp_key, default=str)}"
            return out
        ours_upper = {k.upper(): v for k, v in ours.items()}
        exp_upper = {k.upper(): v for k, v in exp_value.items()} if isinstance(exp_value, dict) else None
        if exp_upper is None:
            out.agree, out.reason = False, f"ksqlDB's value is not an object: {exp_value!r}"
            return out
        # ksqlDB's harness reads a missing field as NULL (its JSON rows are maps); so do we.
        if {k for k, v in ours_upper.items() if v is not None} - set(exp_upper) or \
                {k for k, v in exp_upper.items() if v is not None} - set(ours_upper):
            out.agree = False
            out.reason = f"columns {sorted(ours_upper)}, ksqlDB {sorted(exp_upper)}"
            return out
        for k in set(exp_upper) | set(ours_upper):
            e = exp_upper.get(k)
            if not same(ours_upper.get(k), e):
                out.agree = False
                out.reason = f"{k}: {_show(ours_upper[k])}, ksqlDB {json.dumps(e, default=str)}"
                return out
    out.agree = True
    return out


def _key_items(plan: _Plan) -> list[str]:
    """Output names of select items that are the source's key column as it is (SELECT * includes it)."""
    if not plan.keys:
        return []
    key = plan.keys[0]
    m = re.match(r"\s*SELECT\s+(.*?)\s+FROM\s+events\b", plan.select, re.IGNORECASE | re.DOTALL)
    if not m:
        return []
    names = []
    for item in _split_top(m.group(1)):
        item = item.strip()
        if item == "*" or item.endswith(".*"):
            names.append(key)
            continue
        im = re.fullmatch(r"(?:\w+\.)?(`[^`]+`|\"[^\"]+\"|\w+)(?:\s+(?:AS\s+)?(`[^`]+`|\"[^\"]+\"|\w+))?", item,
                          re.IGNORECASE)
        if im and _unquote(im.group(1))[0] == key:
            names.append(_unquote(im.group(2))[0] if im.group(2) else key)
    return names


# ---------------------------------------------------------------------------
# UDF unit tests.

@dataclasses.dataclass
class UdfCheck:
    where: str
    function: str
    args: list[str]          # SQL expressions
    expected: Any = None     # a _Java value, a list, or None
    throws: bool = False


@dataclasses.dataclass(frozen=True)
class _Java:
    kind: str   # int, long, double, decimal, string, null
    value: Any


_JAVA_NULL_CASTS = {"String": "VARCHAR", "Integer": "INTEGER", "Long": "BIGINT", "Double": "DOUBLE",
                    "BigDecimal": "DECIMAL(10, 2)", "Boolean": "BOOLEAN", "Object": None}


def _java_string(s: str) -> str:
    return json.loads('"' + s.replace("\\'", "'") + '"')


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[dDlLfF]?)'
                    r'|(?P<cast>\(\s*(?P<ctype>\w+(?:\[\])?)\s*\)\s*null\b)|(?P<null>null\b)'
                    r'|(?P<bd>new\s+BigDecimal\(\s*(?:"(?P<bds>[^"]*)"|(?P<bdi>-?\d+))\s*\))'
                    r'|(?P<const>(?:Integer|Long|Double)\.(?:MAX_VALUE|MIN_VALUE))|(?P<bool>true|false))')


def _java_values(text: str) -> list[_Java]:
    """Comma-separated Java literals -> values; raises _Skip for anything else."""
    out, i, text = [], 0, text.strip()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise _Skip(f"Java argument {text[i:i + 30].strip()!r} (bytes, lists, expressions)")
        if m.group("str") is not None:
            out.append(_Java("string", _java_string(m.group("str")[1:-1])))
        elif m.group("num") is not None:
            s = m.group("num")
            suffix = s[-1].lower() if s[-1].isalpha() else ""
            body = s[:-1] if suffix else s
            if suffix == "l":
                out.append(_Java("long", int(body)))
            elif suffix in ("d", "f") or "." in body or "e" in body.lower():
                out.append(_Java("double", float(body)))
            else:
                out.append(_Java("int", int(body)))
        elif m.group("cast") is not None:
            ctype = m.group("ctype")
            if ctype not in _JAVA_NULL_CASTS or _JAVA_NULL_CASTS[ctype] is None:
                raise _Skip(f"Java argument ({ctype}) null (bytes, lists)")
            out.append(_Java("null", _JAVA_NULL_CASTS[ctype]))
        elif m.group("null") is not None:
            out.append(_Java("null", None))
        elif m.group("bd") is not None:
            d = decimal.Decimal(m.group("bds") if m.group("bds") is not None else m.group("bdi"))
            out.append(_Java("decimal", d))
        elif m.group("const") is not None:
            c = m.group("const")
            vals = {"Integer.MAX_VALUE": ("int", 2**31 - 1), "Integer.MIN_VALUE": ("int", -2**31),
                    "Long.MAX_VALUE": ("long", 2**63 - 1), "Long.MIN_VALUE": ("long", -2**63),
                    "Double.MAX_VALUE": ("double", sys.float_info.max),
                    "Double.MIN_VALUE": ("double", 5e-324)}
            out.append(_Java(*vals[c]))
        else:
            out.append(_Java("boolean", m.group("bool") == "true"))
        i = m.end()
        rest = text[i:].lstrip()
        if rest.startswith(","):
            i = len(text) - len(rest) + 1
        elif rest:
            raise _Skip(f"Java argument {rest[:30]!r} (bytes, lists, expressions)")
        else:
            break
    return out


def _decimal_type(d: decimal.Decimal) -> str:
    t = d.as_tuple()
    scale = max(-t.exponent, 0)
    precision = max(len(t.digits) + max(t.exponent, 0), scale, 1)
    return f"DECIMAL({precision}, {scale})"


def _sql_of(v: _Java) -> str:
    if v.kind == "string":
        return _sql_string(v.value)
    if v.kind == "int":
        return f"CAST({v.value} AS INTEGER)"
    if v.kind == "long":
        return f"CAST({v.value} AS BIGINT)"
    if v.kind == "double":
        return f"CAST({v.value!r} AS DOUBLE)"
    if v.kind == "decimal":
        return f"CAST('{v.value}' AS {_decimal_type(v.value)})"
    if v.kind == "boolean":
        return "TRUE" if v.value else "FALSE"
    return "NULL" if v.value is None else f"CAST(NULL AS {v.value})"


_RESULT = re.compile(r"(?:final\s+)?\w+(?:<[^>]*>)?\s+(\w+)\s*=\s*(\w+\.\w+\(.*\));$")
_ASSIGNMENT = re.compile(r"(?:final\s+)?\w+(?:<[^>]*>)?\s+\w+\s*=\s*\w+\.\w+\(")


def _statements(java: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each assertThat/assertThrows statement, joined over lines.

    `final String result = udf.f(args);` followed by `assertThat(result, ...)` is
    yielded as `assertThat(udf.f(args), ...)`.
    """
    lines = java.splitlines()
    results: dict[str, str] = {}
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        start, text = i + 1, s
        if s.startswith(("assertThat(", "assertThrows(", "final Exception e = assertThrows(",
                         "Exception e = assertThrows(")) or _ASSIGNMENT.match(s):
            while not text.rstrip().endswith(";") and i + 1 < len(lines):
                i += 1
                text += " " + lines[i].strip()
            m = _RESULT.match(text)
            if m and not text.startswith("assert"):
                results[m.group(1)] = m.group(2)
            elif text.startswith("assertThat("):
                m = re.match(r"assertThat\(\s*(\w+)\s*,", text)
                if m and m.group(1) in results:
                    text = f"assertThat({results[m.group(1)]}, {text[m.end():].lstrip()}"
                yield start, text
            else:
                yield start, text
        i += 1


def _balanced(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at text[start] (Java strings respected)."""
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise _Skip("unbalanced parentheses")


def _udf_call(text: str, cls: str = "") -> tuple[str, list[str], int]:
    """(ksqlDB function, SQL arguments, end of the call) of the first `obj.method(...)` in `text`.

    The function is the method's name, or the UDF class's (MaskLeft.mask is MASK_LEFT).
    """
    m = re.search(r"\b\w+\.(\w+)\(", text)
    if m is None:
        raise _Skip("no udf call")
    end = _balanced(text, m.end() - 1)
    args = [_sql_of(v) for v in _java_values(text[m.end():end])] if text[m.end():end].strip() else []
    name = m.group(1).lower()
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower()
    if snake != name and snake.startswith(name + "_"):
        name = snake
    return name, args, end


def _parse_check(where: str, text: str, cls: str = "") -> UdfCheck:
    if text.startswith(("assertThrows(", "final Exception", "Exception")):
        body = text[text.index("->") + 2:] if "->" in text else ""
        name, args, _ = _udf_call(body, cls)
        return UdfCheck(where, name, args, throws=True)
    inner = text[len("assertThat("):]
    name, args, end = _udf_call(inner, cls)
    matcher = inner[end + 1:].strip().lstrip(",").strip()
    matcher = re.sub(r"\)\s*;\s*$", "", matcher).strip()
    if re.fullmatch(r"(is\()?\s*nullValue\(\)\s*\)?|is\(\s*\(\w+\)\s*null\s*\)|is\(\s*null\s*\)", matcher):
        return UdfCheck(where, name, args, None)
    m = re.fullmatch(r"is\((.*)\)", matcher, re.DOTALL)
    if m:
        vals = _java_values(m.group(1))
        if len(vals) != 1:
            raise _Skip("expected value is an expression")
        return UdfCheck(where, name, args, vals[0])
    m = re.fullmatch(r"contains\((.*)\)", matcher, re.DOTALL)
    if m:
        return UdfCheck(where, name, args, [v.value for v in _java_values(m.group(1))])
    raise _Skip(f"matcher {matcher[:40]!r}")


def udf_checks(directory: str) -> Iterator[tuple[str, Optional[UdfCheck], Optional[str]]]:
    """(where, check, skip reason) for every assertThat/assertThrows in the UDF unit tests."""
    for path in sorted(glob.glob(os.path.join(directory, "udf", "*Test.java"))):
        with open(path, encoding="utf-8") as f:
            java = f.read()
        for line, text in _statements(java):
            where = f"{os.path.basename(path)}:{line}"
            try:
                yield where, _parse_check(where, text, os.path.basename(path)[:-len("Test.java")]), None
            except _Skip as s:
                yield where, None, str(s)


def _java_same(ours: Any, ours_type: pa.DataType, exp: Any) -> bool:
    if exp is None:
        return ours is None
    if isinstance(exp, list):
        return isinstance(ours, list) and len(ours) == len(exp) and all(o == e for o, e in zip(ours, exp))
    if exp.kind == "null":
        return ours is None
    if ours is None:
        return False
    if exp.kind in ("int", "long"):
        return pa.types.is_integer(ours_type) and ours == exp.value
    if exp.kind == "double":
        return pa.types.is_floating(ours_type) and (ours == exp.value or (math.isnan(ours) and math.isnan(exp.value)))
    if exp.kind == "decimal":
        return (pa.types.is_decimal(ours_type) and ours == exp.value
                and ours.as_tuple().exponent == exp.value.as_tuple().exponent)
    if exp.kind == "string":
        return ours == exp.value
    return ours == exp.value


_ONE_ROW = pa.table({"X": pa.array([0], pa.int32())})


def run_udf(where: str, check: UdfCheck) -> Outcome:
    out = Outcome("udf", where, functions=frozenset([check.function]))
    sql = f"SELECT {check.function.upper()}({', '.join(check.args)}) AS R FROM events"
    try:
        stmt = Statement.prepare(sql, _ONE_ROW.schema, flag="udf")
    except UserError as e:
        out.agree, out.reason = check.throws, "" if check.throws else f"refused at prepare: {e} [{sql}]"
        return out
    engine = Engine(stmt)
    try:
        result = engine.run(_ONE_ROW)
    finally:
        engine.close()
    if result.dead:
        out.agree = check.throws
        out.reason = "" if check.throws else f"dead letter: {result.dead[0].reason[:150]} [{sql}]"
        return out
    if check.throws:
        out.agree, out.reason = False, f"ksqlDB throws; the step gave {_show(result.table.column(0)[0].as_py())} [{sql}]"
        return out
    value = result.table.column(0)[0].as_py()
    typ = result.table.schema.field(0).type
    out.agree = _java_same(value, typ, check.expected)
    if not out.agree:
        exp = check.expected
        shown = "null" if exp is None else json.dumps(exp, default=str) if isinstance(exp, list) else \
            f"{exp.value!r} ({exp.kind})"
        out.reason = f"{_show(value)} ({typ}), ksqlDB {shown} [{sql}]"
    return out


# ---------------------------------------------------------------------------
# All of it.

def _run_task(task: tuple) -> list[Outcome]:
    """('qtt', cases) or ('udf', directory, lo, hi): the outcomes of those QTT cases or UDF checks, in order."""
    if task[0] == "qtt":
        return [run_qtt(case) for case in task[1]]
    _, directory, lo, hi = task
    # a UDF check is a closure (it does not pickle): each worker reads the checks again (~20 ms)
    return [Outcome("udf", where, skip=skip) if check is None else run_udf(where, check)
            for where, check, skip in list(udf_checks(directory))[lo:hi]]


def run_all(directory: str = DEFAULT_DIR, processes: int = 1) -> list[Outcome]:
    """Every QTT case, then every UDF check, in file order.

    Args:
      processes: worker processes (spawned: the cases are independent; most of a case's time is its DuckDB
        connections, ~75 ms each with the macros); 1 runs them here.
    """
    cases, n_udf = list(qtt_cases(directory)), sum(1 for _ in udf_checks(directory))
    if processes <= 1:
        return _run_task(("qtt", cases)) + _run_task(("udf", directory, 0, n_udf))
    import multiprocessing  # pylint: disable=import-outside-toplevel  # only for a parallel run

    # a few tasks per worker: the slow cases are not spread evenly
    q, u = -(-len(cases) // (processes * 4)) or 1, -(-n_udf // (processes * 4)) or 1
    tasks = [("qtt", cases[lo:lo + q]) for lo in range(0, len(cases), q)]
    tasks += [("udf", directory, lo, min(lo + u, n_udf)) for lo in range(0, n_udf, u)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return [o for part in pool.map(_run_task, tasks, chunksize=1) for o in part]


def _supported(o: Outcome) -> bool:
    return bool(o.functions) and o.functions <= SUPPORTED_FUNCTIONS


def summary(outcomes: list[Outcome]) -> dict[str, dict]:
    """The three goals: {name: {agree, total, fraction, goal, met, disagreements}}."""
    groups = {
        "qtt_supported": [o for o in outcomes if o.kind == "qtt" and o.skip is None and _supported(o)],
        "udf": [o for o in outcomes if o.kind == "udf" and o.skip is None],
        "qtt_expressible": [o for o in outcomes if o.kind == "qtt" and o.skip is None],
    }
    out = {}
    for name, cases in groups.items():
        agree = sum(1 for o in cases if o.agree)
        frac = agree / len(cases) if cases else 1.0
        out[name] = {"agree": agree, "total": len(cases), "fraction": frac, "goal": GOALS[name],
                     "met": frac >= GOALS[name], "disagreements": [o for o in cases if not o.agree]}
    return out


def skip_counts(outcomes: list[Outcome]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for o in outcomes:
        if o.skip is not None:
            counts[(o.kind, o.skip)] = counts.get((o.kind, o.skip), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def report(outcomes: list[Outcome], show_skips: bool = False) -> str:
    s = summary(outcomes)
    labels = {"qtt_supported": "QTT cases calling only supported functions",
              "udf": "UDF unit-test checks",
              "qtt_expressible": "QTT cases the step can express (all files)"}
    lines = ["| goal | agree | cases | % | target | met |", "|---|---|---|---|---|---|"]
    for name, r in s.items():
        lines.append(f"| {labels[name]} | {r['agree']} | {r['total']} | {r['fraction']:.1%} | "
                     f">= {r['goal']:.0%} | {'yes' if r['met'] else 'NO'} |")
    skips = skip_counts(outcomes)
    n_qtt = sum(1 for o in outcomes if o.kind == "qtt")
    n_udf = sum(1 for o in outcomes if o.kind == "udf")
    lines.append(f"\n{n_qtt} QTT cases ({sum(v for (k, _), v in skips.items() if k == 'qtt')} skipped), "
                 f"{n_udf} UDF checks ({sum(v for (k, _), v in skips.items() if k == 'udf')} skipped).")
    lines.append("\nDisagreements (all QTT expressible cases, then UDF checks):")
    for name in ("qtt_expressible", "udf"):
        for o in s[name]["disagreements"]:
            lines.append(f"- {o.where}: {o.reason}")
    if show_skips:
        lines.append("\nSkips (kind, reason: count):")
        lines += [f"- {k}, {reason}: {n}" for (k, reason), n in skips.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default=DEFAULT_DIR, help="the ksqldb-tests directory (qtt/, udf/)")
    parser.add_argument("--show", choices=["skips"], default=None)
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.tests, "qtt")):
        print(f"--tests: no qtt/ under {args.tests}", file=sys.stderr)
        return 2
    outcomes = run_all(args.tests)
    print(report(outcomes, show_skips=args.show == "skips"))
    return 0 if all(r["met"] for r in summary(outcomes).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
