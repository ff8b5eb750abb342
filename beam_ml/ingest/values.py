"""Kafka values -> flat typed Arrow tables -> BigQuery rows: the pure per-batch logic of ingestion.

    schema = infer_schema(sampled_objects)            # or spec_schema(spec), avro_ingest_schema(avsc)
    record = record_format("json").decode(kafka_value)   # beam_ml.formats; ValueError: a 'parse' dead letter
    table, kept, errors = records_to_table(records, schema)      # errors: (index, reason): 'schema' dead letters
    fields = bigquery_schema(table.schema)            # the BigQuery table schema of those columns
    rows, kept, errors = table_to_rows(table)         # JSON-ready dicts for insertAll / load files

A table is "the input as the reader typed it": one flat column per field, typed
by the dataset spec (numeric -> float64, every other role -> string), by the
Avro schema, or by inference from a sample of the topic (ints -> int64, other
numbers -> float64, booleans -> bool, anything else -> string, objects and
arrays as JSON text). A value that does not fit its column (a word where a
number belongs, 1.5 in an integer column, NaN, a missing feature field of the
spec) makes its record a dead letter; the rest of the batch goes on. Nothing
here does I/O, so all of it is tested without servers.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import io
import json
import math
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.errors import UserError
# Re-exported: the ingest API has always offered them; they live with the record formats.
from beam_ml.formats import avro_arrow_schema, load_avro_schema, value_text

__all__ = [
    "IngestSchema",
    "METADATA_SCHEMA",
    "spec_schema",
    "infer_schema",
    "load_avro_schema",
    "avro_ingest_schema",
    "records_to_table",
    "json_values_to_table",
    "bigquery_schema",
    "table_to_rows",
    "value_text",
]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_NONE = type(None)

# The Kafka metadata columns --with_kafka_metadata adds to every row.
METADATA_SCHEMA = pa.schema([
    pa.field("event_ts", pa.timestamp("ms", tz="UTC")),
    pa.field("topic", pa.string()),
    pa.field("partition", pa.int64()),
    pa.field("offset", pa.int64()),
    pa.field("key", pa.string()),
])


@dataclasses.dataclass(frozen=True)
class IngestSchema:
    """The flat columns records are typed into, and how.

    Attributes:
      schema: one Arrow field per column (bool, int64, float64, string, binary,
        timestamp, date32, time64 or decimal128).
      required: fields a record must have (its value may be null); a record
        without one is a 'schema' dead letter. The spec's feature columns.
      na_values: texts that mean a missing value in every column (the spec's);
        an empty text is also missing in every non-string column.
      mask_columns: PII columns, masked in dead letters' raw text.
      origin: where the schema came from, for logs ("spec x.json", "inferred from 1000 records"...).
    """

    schema: pa.Schema
    required: tuple = ()
    na_values: tuple = ()
    mask_columns: tuple = ()
    origin: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)


def spec_schema(spec, origin: str = "the dataset spec") -> IngestSchema:
    """The columns of a DatasetSpec: numeric -> float64, every other role -> string.

    Feature columns (numeric, categorical) are required, as for scoring
    (`beam_ml.records.validate_record`); the spec's NA texts are missing values.
    """
    fields = [pa.field(c.name, pa.float64() if c.role == "numeric" else pa.string()) for c in spec.columns]
    required = tuple(c.name for c in spec.columns if c.role in ("numeric", "categorical"))
    return IngestSchema(pa.schema(fields), required, tuple(spec.na_values), tuple(spec.mask_columns), origin)


def _json_kind(v: Any) -> str:
    cls = v.__class__
    if cls is bool:
        return "bool"
    if cls is int:
        return "int" if _INT64_MIN <= v <= _INT64_MAX else "float"
    if cls is float:
        return "float"
    return "string"  # text, and objects/arrays kept as JSON text


# A field is typed by the kind most of its sampled values have when the others are at most this
# fraction: a few malformed events in the sample must not turn a numeric column into text
# (they become dead letters instead).
INFER_OUTLIER_FRACTION = 0.05


def _column_type(counts: dict[str, int]) -> pa.DataType:
    total = sum(counts.values())
    if not total:
        return pa.string()
    numbers = counts.get("int", 0) + counts.get("float", 0)
    if counts.get("bool", 0) >= total * (1 - INFER_OUTLIER_FRACTION):
        return pa.bool_()
    if numbers >= total * (1 - INFER_OUTLIER_FRACTION):
        return pa.float64() if counts.get("float", 0) else pa.int64()
    return pa.string()


def infer_schema(records: Iterable[Mapping[str, Any]], origin: str = "") -> IngestSchema:
    """Infers the columns of JSON objects: each field in first-seen order, typed by its non-null values.

    Booleans -> bool; integers -> int64; numbers with a fraction among them ->
    float64; anything else (text, objects, arrays, only nulls) -> string. A
    field whose values are of one of those kinds but for at most
    INFER_OUTLIER_FRACTION of them (malformed events in the sample) gets that
    kind's type, and the outliers will be dead letters; a real mix is string.
    Nothing is required (a missing field is a null).

    Args:
      records: sampled objects (e.g. `beam_ml.io.kafka.topic_batches.sample_topic`).
      origin: where they came from, for logs.
    """
    kinds: dict[str, dict[str, int]] = {}
    count = 0
    for r in records:
        count += 1
        for k, v in r.items():
            seen = kinds.setdefault(k, {})
            if v is not None:
                kind = _json_kind(v)
                seen[kind] = seen.get(kind, 0) + 1
    fields = [pa.field(name, _column_type(seen)) for name, seen in kinds.items()]
    return IngestSchema(pa.schema(fields), origin=origin or f"inferred from {count} records")


# ------------------------------------------------------------------------- Avro
def avro_ingest_schema(parsed: Mapping[str, Any], origin: str = "the Avro schema") -> IngestSchema:
    """The columns of an Avro record schema (as `load_avro_schema` returns it), one per field."""
    return IngestSchema(avro_arrow_schema(parsed), origin=origin)


# ---------------------------------------------------------------------- typing
def _what(v: Any) -> str:
    """A value as a reason shows it."""
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "an array"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_float(v: Any) -> float:
    if v.__class__ is bool or not isinstance(v, (int, float, str, decimal.Decimal)):
        raise ValueError(f"expected a number, got {_what(v)}")
    try:
        f = float(v.strip() if isinstance(v, str) else v)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a number, got {_what(v)}") from None
    if not math.isfinite(f):
        raise ValueError(f"{_what(v)} is not a finite number (BigQuery stores no NaN/Infinity from JSON)")
    return f


def _to_int(v: Any) -> int:
    if v.__class__ is bool:
        raise ValueError(f"expected an integer, got {_what(v)}")
    if isinstance(v, int):
        i = v
    elif isinstance(v, (float, decimal.Decimal)):
        if not (math.isfinite(v) and v == int(v)):
            raise ValueError(f"expected an integer, got {_what(v)}")
        i = int(v)
    elif isinstance(v, str):
        try:
            i = int(v.strip())
        except ValueError:
            try:
                f = float(v.strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {_what(v)}") from None
            if not (math.isfinite(f) and f.is_integer()):
                raise ValueError(f"expected an integer, got {_what(v)}") from None
            i = int(f)
    else:
        raise ValueError(f"expected an integer, got {_what(v)}")
    if not _INT64_MIN <= i <= _INT64_MAX:
        raise ValueError(f"{i} is out of the INT64 range")
    return i


def _to_bool(v: Any) -> bool:
    if v.__class__ is bool:
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {_what(v)}")


def _to_string(v: Any) -> str:
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text is not valid Unicode ({e.reason} at {e.start})") from None
        return v
    if v.__class__ is bool:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{v!r} is not a finite number")
        return repr(v)
    if isinstance(v, (Mapping, list, tuple)):
        try:
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
        except ValueError as e:
            raise ValueError(f"cannot be written as JSON text: {e}") from None
    if isinstance(v, (datetime.date, datetime.time, decimal.Decimal)):
        return v.isoformat() if not isinstance(v, decimal.Decimal) else str(v)
    raise ValueError(f"expected text, got {type(v).__name__}")


def _to_timestamp(v: Any) -> datetime.datetime:
    if isinstance(v, str):
        try:
            v = datetime.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"expected an ISO timestamp, got {_what(v)}") from None
    if not isinstance(v, datetime.datetime):
        raise ValueError(f"expected a timestamp, got {_what(v)}")
    return v if v.tzinfo is not None else v.replace(tzinfo=datetime.timezone.utc)


def _to_local_timestamp(v: Any) -> datetime.datetime:
    if isinstance(v, str):
        try:
            v = datetime.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"expected an ISO date-time, got {_what(v)}") from None
    if not isinstance(v, datetime.datetime):
        raise ValueError(f"expected a date-time, got {_what(v)}")
    return v


def _to_date(v: Any) -> datetime.date:
    if isinstance(v, str):
        try:
            return datetime.date.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"expected an ISO date, got {_what(v)}") from None
    if isinstance(v, datetime.date) and not isinstance(v, datetime.datetime):
        return v
    raise ValueError(f"expected a date, got {_what(v)}")


def _to_time(v: Any) -> datetime.time:
    if isinstance(v, str):
        try:
            return datetime.time.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"expected an ISO time, got {_what(v)}") from None
    if isinstance(v, datetime.time):
        return v
    raise ValueError(f"expected a time of day, got {_what(v)}")


def _to_binary(v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise ValueError(f"expected bytes, got {_what(v)}")


def _to_decimal(v: Any) -> decimal.Decimal:
    if v.__class__ is bool or not isinstance(v, (int, float, str, decimal.Decimal)):
        raise ValueError(f"expected a decimal number, got {_what(v)}")
    try:
        d = decimal.Decimal(v.strip() if isinstance(v, str) else repr(v) if isinstance(v, float) else v)
    except decimal.InvalidOperation:
        raise ValueError(f"expected a decimal number, got {_what(v)}") from None
    if not d.is_finite():
        raise ValueError(f"{_what(v)} is not a finite number")
    return d


def _converter(t: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _to_string
    if pa.types.is_floating(t):
        return _to_float
    if pa.types.is_integer(t):
        return _to_int
    if pa.types.is_boolean(t):
        return _to_bool
    if pa.types.is_timestamp(t):
        return _to_timestamp if t.tz else _to_local_timestamp
    if pa.types.is_date(t):
        return _to_date
    if pa.types.is_time(t):
        return _to_time
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _to_binary
    if pa.types.is_decimal(t):
        return _to_decimal
    raise ValueError(f"unsupported column type {t}")


# Python types pyarrow converts exactly, per column type: the fast path (no per-value Python).
def _fast_types(t: pa.DataType) -> frozenset:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return frozenset({str})
    if pa.types.is_floating(t):
        return frozenset({float, int})
    if pa.types.is_integer(t):
        return frozenset({int})
    if pa.types.is_boolean(t):
        return frozenset({bool})
    return frozenset()


def convert_column(values: list, t: pa.DataType, missing: frozenset = frozenset()
                   ) -> tuple[pa.Array, list[tuple[int, str]]]:
    """Types one column's values; a value that does not fit is null and reported.

    Args:
      values: the column's values, one per record (None: missing).
      t: the column type.
      missing: texts that mean a missing value here.

    Returns:
      (the array, [(index, reason)] for the values that did not fit).
    """
    if missing:
        values = [None if (v.__class__ is str and v in missing) else v for v in values]
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    fast = _fast_types(t)
    if kinds <= fast:
        try:
            array = pa.array(values, t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
            array = None  # an int beyond int64, text that is not Unicode: the per-value path names it
        if array is not None:
            if pa.types.is_floating(t) and array.null_count < len(array):
                finite = pc.fill_null(pc.is_finite(array), True)
                if not pc.all(finite).as_py():
                    bad = np.flatnonzero(~finite.to_numpy(zero_copy_only=False))
                    values = list(values)
                    errors = [(int(i), f"{_what(values[i])} is not a finite number (BigQuery stores no "
                                       "NaN/Infinity from JSON)") for i in bad]
                    mask = np.zeros(len(array), dtype=bool)
                    mask[bad] = True
                    return pc.if_else(pa.array(mask), pa.nulls(len(array), t), array), errors
            return array, []
    convert = _converter(t)
    out, errors = [], []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(convert(v))
        except (ValueError, TypeError, OverflowError, ArithmeticError) as e:
            out.append(None)
            errors.append((i, str(e)))
    try:
        return pa.array(out, t), errors
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):  # e.g. a decimal too precise
        kept = []
        for i, v in enumerate(out):
            try:
                pa.array([v], t)
                kept.append(v)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
                kept.append(None)
                errors.append((i, f"does not fit {t}: {e}"))
        return pa.array(kept, t), sorted(errors)


def records_to_table(records: Sequence[Mapping[str, Any]], schema: IngestSchema
                     ) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
    """Types records (dicts) into a table of `schema`'s columns; records that do not fit are left out.

    Fields not in the schema are ignored; a field the schema has and the
    record lacks is null, unless the schema requires it.

    Args:
      records: decoded records.
      schema: the columns and rules.

    Returns:
      (table, kept, errors): the table of the records that fit, in order;
      `kept[i]` is the index in `records` of the table's row i; `errors` is
      [(index, reason)] for the others, the reason naming the field.
    """
    if not len(schema.schema):
        raise ValueError("the schema has no columns")
    n = len(records)
    reasons: dict[int, str] = {}
    for name in schema.required:
        for i, r in enumerate(records):
            if name not in r and i not in reasons:
                reasons[i] = f"missing field '{name}'"
    na = frozenset(schema.na_values)
    na_other = na | {""}
    arrays = []
    for field in schema.schema:
        text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        array, errors = convert_column([r.get(field.name) for r in records], field.type, na if text else na_other)
        for i, reason in errors:
            reasons.setdefault(i, f"field '{field.name}': {reason}")
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, schema=schema.schema)
    if not reasons:
        return table, np.arange(n, dtype=np.int64), []
    keep = np.ones(n, dtype=bool)
    keep[list(reasons)] = False
    table = table.filter(pa.array(keep))
    return table, np.flatnonzero(keep).astype(np.int64), sorted(reasons.items())


def json_values_to_table(values: Sequence[Optional[bytes]], schema: IngestSchema) -> Optional[pa.Table]:
    """The fast path of JSON values: Arrow's C++ JSON reader types them all at once, or gives up.

    Returns the table `records_to_table` would build from the decoded values
    when every value is a one-line JSON object whose fields fit the schema
    exactly as the reader's rules type them (numbers in float columns, integers
    in integer columns, text in text columns, true/false in bool columns, all
    finite), else None: then some value needs the per-value path (a dead
    letter, or a conversion such as a number written as text). Schemas with
    required fields or NA texts always take the per-value path (Arrow's reader
    cannot tell a missing field from a null, nor an NA text from a word).
    """
    import pyarrow.json as pajson  # pylint: disable=import-outside-toplevel

    if schema.required or schema.na_values or not values:
        return None
    simple = (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean, pa.types.is_string)
    if not all(any(check(f.type) for check in simple) for f in schema.schema):
        return None
    if any(v is None or b"\n" in v or b"\r" in v for v in values):
        return None
    try:
        table = pajson.read_json(
            io.BytesIO(b"\n".join(values)),
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, 2 * sum(map(len, values)))),
            parse_options=pajson.ParseOptions(explicit_schema=schema.schema, unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(values) or table.schema != schema.schema:
        return None  # blank values, or several objects on one line
    for column in table.columns:
        if pa.types.is_floating(column.type) and column.null_count < len(column):
            if not pc.all(pc.fill_null(pc.is_finite(column), True)).as_py():
                return None  # NaN/Infinity: dead letters, named by the per-value path
    return table.combine_chunks()


# -------------------------------------------------------------------- BigQuery
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_")


def _bigquery_field(field: pa.Field, flag: str) -> dict:
    name, t = field.name, field.type
    if not _NAME_RE.match(name) or name.lower().startswith(_RESERVED_PREFIXES):
        raise UserError(f"{flag}: column {name!r} cannot be a BigQuery column name (letters, digits and _, "
                        "not starting with a digit or a reserved prefix); rename it with --sql "
                        f"(SELECT \"{name}\" AS new_name, ...)")
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = _bigquery_field(pa.field(name, t.value_type), flag)
        if inner["mode"] == "REPEATED":
            raise UserError(f"{flag}: column {name!r} is a list of lists, which BigQuery cannot store")
        return {**inner, "mode": "REPEATED"}
    if pa.types.is_struct(t):
        return {"name": name, "type": "RECORD", "mode": "NULLABLE",
                "fields": [_bigquery_field(t.field(i), flag) for i in range(t.num_fields)]}
    if pa.types.is_boolean(t):
        bq = "BOOL"
    elif pa.types.is_integer(t):
        bq = "INT64"
    elif pa.types.is_floating(t):
        bq = "FLOAT64"
    elif pa.types.is_decimal(t):
        bq = "NUMERIC" if t.precision - t.scale <= 29 and t.scale <= 9 else "BIGNUMERIC"
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or \
            getattr(pa.types, "is_string_view", lambda _: False)(t):
        bq = "STRING"
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        bq = "BYTES"
    elif pa.types.is_timestamp(t):
        bq = "TIMESTAMP" if t.tz else "DATETIME"
    elif pa.types.is_date(t):
        bq = "DATE"
    elif pa.types.is_time(t):
        bq = "TIME"
    else:
        raise UserError(f"{flag}: column {name!r} has type {t}, which has no BigQuery column type; "
                        "CAST it with --sql")
    return {"name": name, "type": bq, "mode": "NULLABLE"}


def bigquery_schema(schema: pa.Schema, flag: str = "--output_table") -> dict:
    """The BigQuery table schema ``{"fields": [...]}`` of flat (or nested) Arrow columns; all NULLABLE.

    bool -> BOOL, integers -> INT64, floats -> FLOAT64, decimals -> NUMERIC/BIGNUMERIC,
    text -> STRING, bytes -> BYTES, timestamps -> TIMESTAMP (with a zone) or DATETIME,
    date -> DATE, time -> TIME, lists -> REPEATED, structs -> RECORD.

    Raises:
      UserError: a column name BigQuery refuses, or a type it has no column for, naming `flag`.
    """
    fields = [_bigquery_field(f, flag) for f in schema]
    lower = [f["name"].lower() for f in fields]
    dupes = sorted({n for n in lower if lower.count(n) > 1})
    if dupes:
        raise UserError(f"{flag}: columns whose names differ only in case: {', '.join(dupes)} (BigQuery column "
                        "names are case-insensitive); rename them with --sql")
    return {"fields": fields}


def _json_ready(v: Any) -> Any:
    """A nested value as insertAll's JSON takes it."""
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_ready(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return v.isoformat() + "Z"
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return v


def _json_column(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, bool]:
    """A column with JSON-ready values (vectorized), and whether values still need `_json_ready`."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_timestamp(t):
        if t.tz:
            utc = column.cast(pa.timestamp("us", tz="UTC"), safe=False)
            return pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ"), False
        return pc.strftime(column.cast(pa.timestamp("us"), safe=False), format="%Y-%m-%dT%H:%M:%S"), False
    if pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_decimal(t):
        return column.cast(pa.string()), False
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return column, True
    if pa.types.is_nested(t):
        return column, True
    return column, False


def table_to_rows(table: pa.Table, position_column: Optional[str] = None
                  ) -> tuple[list[dict], np.ndarray, list[tuple[int, str]]]:
    """A table as JSON-ready row dicts for BigQuery (insertAll or load files).

    Timestamps become ISO text in UTC (``...Z``), dates, times and decimals
    text, bytes base64 (what BigQuery's JSON takes). A row with a NaN or
    infinite float (a statement can compute one) cannot be sent as JSON: it is
    left out and reported.

    Args:
      table: the rows.
      position_column: a column naming each row's position (e.g. its Kafka
        offset), returned apart and not part of the rows.

    Returns:
      (rows, positions, errors): `positions[i]` is row i's position (its index
      in `table` without a position column); errors are [(index in table, reason)].
    """
    n = table.num_rows
    if position_column:
        positions = table.column(position_column).to_numpy(zero_copy_only=False)
        table = table.drop_columns([position_column])
    else:
        positions = np.arange(n, dtype=np.int64)
    reasons: dict[int, str] = {}
    columns, slow = [], []
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_floating(column.type) and column.null_count < n:
            finite = pc.fill_null(pc.is_finite(column), True).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(~finite):
                reasons.setdefault(int(i), f"field '{name}': {column[int(i)].as_py()!r} is not a finite number "
                                           "(BigQuery takes no NaN/Infinity as JSON)")
        ready, needs_python = _json_column(column)
        columns.append(ready)
        if needs_python:
            slow.append(name)
    rows = pa.Table.from_arrays(columns, names=table.column_names).to_pylist() if columns else [{} for _ in range(n)]
    for name in slow:
        for row in rows:
            v = row[name]
            if v is not None:
                row[name] = _json_ready(v)
    if not reasons:
        return rows, positions, []
    keep = np.ones(n, dtype=bool)
    keep[list(reasons)] = False
    return [r for r, k in zip(rows, keep) if k], positions[keep], sorted(reasons.items())
