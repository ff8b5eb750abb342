"""BigQuery table names and schemas: parsing, the schema of a spec, type hints, column checks, row validation.

    project, dataset, table = parse_table("proj:ds.tx", flag="--output_table")
    schema = table_schema_for(spec, with_label=True)          # {"fields": [...]} for WriteToBigQuery
    check_columns(schema, spec, source="proj:ds.tx")         # UserError naming a missing column
    spec = infer_spec_from_table(schema, sample_rows, label="Class", source="proj:ds.tx")
    reason = validate_row(row, schema)                       # None, or why BigQuery would refuse the row

Pure functions (no Beam, no network): the read, the write and the jobs share them.
"""
from __future__ import annotations

import datetime
import decimal
import math
import re
from typing import Any, Mapping, Optional, Sequence

from beam_ml.errors import UserError
from beam_ml.spec import DatasetSpec, infer_spec_from_rows


# ------------------------------------------------------------------ table names, schema
_TABLE_RE = re.compile(r"^(?:(?P<project>[A-Za-z0-9_.\-]+(?::[A-Za-z0-9_\-]+)?)[:.])?"
                       r"(?P<dataset>[A-Za-z0-9_]+)\.(?P<table>[A-Za-z0-9_\-$@]+)$")


def parse_table(table: str, flag: str = "--output_table", project: Optional[str] = None) -> tuple[str, str, str]:
    """Splits ``project:dataset.table`` (or ``project.dataset.table``, ``dataset.table``).

    Args:
      table: the table spec.
      flag: the flag it came from, for the error.
      project: the project used when the spec has none.

    Returns:
      (project, dataset, table).

    Raises:
      UserError: the spec is malformed, or has no project and none is given.
    """
    m = _TABLE_RE.match((table or "").strip())
    if not m:
        raise UserError(f"{flag}: expected PROJECT:DATASET.TABLE, got {table!r}")
    p = m.group("project") or project
    if not p:
        raise UserError(f"{flag}: {table!r} names no project; write PROJECT:DATASET.TABLE or pass --project")
    return p, m.group("dataset"), m.group("table")


def _table_spec(table: str, flag: str, project: Optional[str] = None) -> str:
    """The ``project:dataset.table`` form Beam's IO expects."""
    p, d, t = parse_table(table, flag, project)
    return f"{p}:{d}.{t}"


def table_schema_for(spec: DatasetSpec, with_label: bool = True,
                     extra_fields: Sequence[Mapping[str, Any]] = ()) -> dict:
    """The BigQuery table schema of a dataset's rows, in the JSON form Beam and bq accept.

    numeric → FLOAT64; categorical, label, key, mask and drop → STRING (labels are
    the spec's class strings). Every column is NULLABLE: a missing value is a dead
    letter or an imputed value, decided by the reader, never a failed insert.

    Args:
      spec: the dataset spec.
      with_label: include the label column.
      extra_fields: fields appended as given (e.g. prediction or Kafka metadata columns).

    Returns:
      ``{"fields": [{"name", "type", "mode"}, ...]}``.
    """
    fields = []
    for c in spec.columns:
        if c.role == "label" and not with_label:
            continue
        fields.append({"name": c.name, "type": "FLOAT64" if c.role == "numeric" else "STRING",
                       "mode": "NULLABLE"})
    names = {f["name"] for f in fields}
    for f in extra_fields:
        if f["name"] in names:
            raise UserError(f"output schema: column '{f['name']}' is both a dataset column and an extra field")
        fields.append(dict(f))
    return {"fields": fields}


def schema_fields(schema: Any, canonical: bool = True) -> list[dict]:
    """Normalizes a table schema (dict, list of dicts, google-cloud-bigquery SchemaFields,
    or Beam's TableSchema) to a list of ``{"name", "type", "mode", "fields"}`` dicts.

    With `canonical`, types are spelled one way (INT64, FLOAT64, BOOL, RECORD);
    otherwise as given (what is sent to BigQuery)."""
    if schema is None:
        return []
    if isinstance(schema, Mapping):
        schema = schema.get("fields", [])
    elif hasattr(schema, "fields") and not isinstance(schema, (list, tuple)):
        schema = schema.fields
    out = []
    for f in schema:
        if isinstance(f, Mapping):
            d = dict(f)
        elif hasattr(f, "to_api_repr"):  # google.cloud.bigquery.SchemaField
            d = f.to_api_repr()
        else:  # apitools TableFieldSchema
            d = {"name": f.name, "type": f.type, "mode": f.mode,
                 "fields": schema_fields(list(f.fields)) if f.fields else []}
        d["type"] = _canonical_type(d.get("type")) if canonical else (d.get("type") or "STRING").upper()
        d["mode"] = (d.get("mode") or "NULLABLE").upper()
        if d.get("fields"):
            d["fields"] = schema_fields(d["fields"], canonical)
        out.append(d)
    return out


_TYPE_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD",
                 "BIGDECIMAL": "BIGNUMERIC", "DECIMAL": "NUMERIC"}
_NUMERIC_TYPES = ("INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL")
_TEXT_TYPES = ("STRING",)


def _canonical_type(t: Optional[str]) -> str:
    t = (t or "STRING").upper()
    return _TYPE_ALIASES.get(t, t)


def type_hints(schema: Any) -> dict[str, str]:
    """What a column's BigQuery type says about its role, for spec inference.

    Returns:
      {column: hint}: "numeric" (INT64, FLOAT64, NUMERIC, BIGNUMERIC, BOOL),
      "text" (STRING: categorical or dropped, decided from the values), or "drop"
      (TIMESTAMP, DATE, DATETIME, TIME, BYTES, GEOGRAPHY, JSON, RECORD, REPEATED...).
    """
    hints = {}
    for f in schema_fields(schema):
        if f["mode"] == "REPEATED":
            hints[f["name"]] = "drop"
        elif f["type"] in _NUMERIC_TYPES:
            hints[f["name"]] = "numeric"
        elif f["type"] in _TEXT_TYPES:
            hints[f["name"]] = "text"
        else:
            hints[f["name"]] = "drop"
    return hints


def _wanted_columns(spec: DatasetSpec, with_label: bool) -> list[str]:
    return [c.name for c in spec.columns
            if c.role in ("numeric", "categorical", "key", "mask") or (c.role == "label" and with_label)]


def check_columns(schema: Any, spec: DatasetSpec, source: str, with_label: bool = True,
                  flag: str = "--input_table") -> None:
    """Raises UserError when the table lacks a column the spec reads."""
    names = {f["name"] for f in schema_fields(schema)}
    wanted = _wanted_columns(spec, with_label)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise UserError(f"{flag}: {source} lacks column(s) {', '.join(missing)} named by the spec")


def infer_spec_from_table(schema: Any, rows: Sequence[Mapping[str, Any]], label: str, source: str,
                          drop: Sequence[str] = (), **infer_kwargs) -> DatasetSpec:
    """Infers a DatasetSpec from a table schema and a sample of its rows.

    The rows go to `beam_ml.spec.infer_spec_from_rows`, so a table, a topic and a
    file get their roles from the same logic. The BigQuery types add strong hints:
    temporal, binary, nested and repeated columns are dropped; numeric types (BOOL
    as 0/1) are numbers; STRING columns become categorical or dropped by their
    values. Label classes come from the sample.

    Args:
      schema: the table schema (see `schema_fields`).
      rows: sampled rows as dicts (e.g. from ``client.list_rows(table, max_results=N)``).
      label: the label column.
      source: the table or query, for errors.
      drop: more columns to drop.
      **infer_kwargs: passed to infer_spec_from_rows (positive_label, task, key, na_values).

    Returns:
      A validated DatasetSpec.
    """
    hints = type_hints(schema)
    if label not in hints:
        raise UserError(f"--label: column '{label}' is not in {source} (columns: {', '.join(hints)})")
    if not rows:
        raise UserError(f"{source}: no rows to infer a dataset spec from")
    # STRING columns keep CSV's rule (numeric when their values are): only types that are sure are hints.
    sure = {n: h for n, h in hints.items() if h != "text"}
    return infer_spec_from_rows(rows, label, source, hints=sure, columns=list(hints), drop=list(drop),
                                **infer_kwargs)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?( ?(Z|UTC|[+-]\d{2}:?\d{2}))?$")
_DATE_RE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")


def _value_error(value: Any, field: Mapping[str, Any], path: str) -> Optional[str]:
    t = field["type"]
    if t == "STRING" or t == "JSON":
        ok = isinstance(value, str) or (t == "JSON" and isinstance(value, (dict, list, int, float, bool)))
    elif t == "INT64":
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                return f"field '{path}': expected an integer, got {value!r}"
        ok = (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
        if ok and not _INT64_MIN <= int(value) <= _INT64_MAX:
            return f"field '{path}': {value} is out of the INT64 range"
    elif t in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        if isinstance(value, str):
            try:
                float(value)
                ok = True
            except ValueError:
                ok = False
        else:
            ok = isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)
            if ok and t != "FLOAT64" and isinstance(value, float) and not math.isfinite(value):
                ok = False
    elif t == "BOOL":
        ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))
    elif t == "BYTES":
        ok = isinstance(value, (bytes, str))
    elif t in ("TIMESTAMP", "DATETIME"):
        ok = isinstance(value, (datetime.datetime, int, float)) and not isinstance(value, bool) or \
            (isinstance(value, str) and bool(_TIMESTAMP_RE.match(value.strip())))
    elif t == "DATE":
        ok = isinstance(value, datetime.date) or (isinstance(value, str) and bool(_DATE_RE.match(value.strip())))
    elif t == "RECORD":
        if not isinstance(value, Mapping):
            return f"field '{path}': expected a record (JSON object), got {type(value).__name__}"
        return _record_error(value, field.get("fields") or [], path + ".")
    else:  # TIME, GEOGRAPHY, INTERVAL, RANGE: BigQuery decides
        ok = True
    if not ok:
        return f"field '{path}': expected {t}, got {value!r}"[:300]
    return None


def _record_error(row: Mapping[str, Any], fields: Sequence[Mapping[str, Any]], prefix: str = "",
                  ignore_unknown: bool = False) -> Optional[str]:
    known = {f["name"] for f in fields}
    if not ignore_unknown:
        unknown = [k for k in row if k not in known]
        if unknown:
            return f"no such field(s) {', '.join(prefix + k for k in unknown)} in the table schema"
    for f in fields:
        path = prefix + f["name"]
        value = row.get(f["name"])
        if f["mode"] == "REPEATED":
            if value is None:
                continue
            if not isinstance(value, (list, tuple)):
                return f"field '{path}': expected a list (REPEATED), got {type(value).__name__}"
            for i, v in enumerate(value):
                if v is None:
                    return f"field '{path}[{i}]': null in a REPEATED field"
                err = _value_error(v, f, f"{path}[{i}]")
                if err:
                    return err
            continue
        if value is None:
            if f["mode"] == "REQUIRED":
                return f"field '{path}': missing value in a REQUIRED field"
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return f"field '{path}': {value} is not a JSON number (NaN/Infinity)"
        err = _value_error(value, f, path)
        if err:
            return err
    return None


def validate_row(row: Mapping[str, Any], schema: Any, ignore_unknown: bool = False) -> Optional[str]:
    """Why BigQuery would reject a row for a table schema, or None when it fits.

    Checks field names (unless `ignore_unknown`), REQUIRED fields, REPEATED
    lists, nested records, and that each value can be read as its type (INT64
    within range, FLOAT64/NUMERIC numbers or numeric strings, BOOL, TIMESTAMP as
    a datetime, epoch seconds or an ISO string, ...). NaN and infinities are
    rejected: they are not JSON numbers.
    """
    if not isinstance(row, Mapping):
        return f"expected a row (dict), got {type(row).__name__}"
    return _record_error(row, schema_fields(schema), "", ignore_unknown)
