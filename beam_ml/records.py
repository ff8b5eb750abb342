"""Raw records (dicts, as events and CSV rows arrive) checked and converted against a dataset spec.

Every serving path (CLI, batch, streaming) and the topic reader use these, so
they reject the same records for the same reasons:

    reason = validate_record({"V1": 0.3, "Amount": "12.5", ...}, spec)   # None when scorable
    columns = records_to_columns(valid_records, spec)                   # numpy arrays per column
    raw_text(record, spec.mask_columns)                                 # JSON for a dead letter
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.spec import DatasetSpec, mask_value

__all__ = ["RowRef", "validate_record", "records_to_columns", "raw_text", "read_csv_records"]


class RowRef(NamedTuple):
    """Where a row came from, carried beside it through RunInference as its key.

    Attributes:
      source: a file path or a Kafka `topic/partition`.
      position: the file line (1-based, header = 1) or the Kafka offset.
      id: the row's id: the spec's key column, an event_id, or None.
      carry: (name, value) pairs copied into the prediction record untouched
        (a label kept for evaluation, event timestamps, ...).
    """

    source: str
    position: Optional[int]
    id: Optional[str] = None
    carry: tuple = ()


_MISSING = object()


def validate_record(record: Mapping[str, Any], spec: DatasetSpec) -> Optional[str]:
    """Why a raw record cannot be scored, or None when it can.

    Every feature column must be present as a key; its value may be null (a
    missing value, imputed by the model). Numeric values must be numbers or
    numeric strings; categorical values strings or numbers.
    """
    if not isinstance(record, Mapping):
        return f"expected a JSON object, got {type(record).__name__}"
    for c in spec.columns:
        role = c.role
        if role != "numeric" and role != "categorical":
            continue
        v = record.get(c.name, _MISSING)
        cls = v.__class__
        # Fast path first: this runs once per field of every streamed event.
        if v is None or cls is float or cls is int or (cls is str and role == "categorical"):
            continue
        if v is _MISSING:
            return f"missing field '{c.name}'"
        if role == "numeric":
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                return f"field '{c.name}': expected a number, got {type(v).__name__}"
            if isinstance(v, str) and v.strip() not in spec.na_values:
                try:
                    float(v)
                except ValueError:
                    return f"field '{c.name}': expected a number, got {v!r}"
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool):
            return f"field '{c.name}': expected a string, got {type(v).__name__}"
    return None


def _numeric(v: Any, na_values: Sequence[str]) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        return math.nan if v in na_values else float(v)
    return float(v)


def _numeric_column(records: Sequence[Mapping[str, Any]], name: str, na_values: Sequence[str]) -> np.ndarray:
    values = [r.get(name) for r in records]
    try:
        # numpy converts numbers and None (→ NaN) in C; NA tokens and padded
        # strings take the per-value path below.
        return np.array(values, dtype=np.float32)
    except (ValueError, TypeError):
        return np.array([_numeric(v, na_values) for v in values], dtype=np.float32)


def records_to_columns(records: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Column arrays for serve_dict from records that passed `validate_record`."""
    cols: dict[str, np.ndarray] = {}
    for c in spec.columns:
        if c.role == "numeric":
            cols[c.name] = _numeric_column(records, c.name, spec.na_values)
        elif c.role == "categorical":
            vals = []
            for r in records:
                v = r.get(c.name)
                s = "" if v is None else (str(v).strip())
                vals.append(b"" if s in spec.na_values else s.encode("utf-8"))
            cols[c.name] = np.array(vals, dtype=object)
    return cols


def raw_text(row: Any, mask_columns: Sequence[str] = ()) -> str:
    """A row as JSON for a dead letter, with PII columns masked."""
    if isinstance(row, Mapping) and mask_columns:
        row = {k: (mask_value(v) if k in mask_columns and v is not None else v) for k, v in row.items()}
    try:
        return json.dumps(row, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(row)


def read_csv_records(path: str) -> list[dict[str, str]]:
    """The rows of a small CSV file as dicts of strings (cells are typed by validation, as for events).

    Raises:
      UserError: naming --input when the file is missing.
    """
    import csv
    import io

    if not fs.is_file(path):
        raise UserError(f"--input: file not found: {path}")
    with io.TextIOWrapper(fs.open_read(path), encoding="utf-8-sig", newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]
