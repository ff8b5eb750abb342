"""The text record formats: JSON objects and CSV lines (pure encode/parse functions, and their RecordFormats).

Parsers raise `ValueError` with a reason a person can act on, so a pipeline can
route the record to a dead-letter topic with that reason instead of failing::

    parsed = (records
              | 'ParseJson' >> beam.Map(lambda r: parse_json_object(r.value)))

Sample command line (replays a CSV into a topic with these encoders)::

    python -m pipelines.produce --input=creditcard.csv --topic=transactions
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any, Mapping, Optional, Sequence

import orjson

from beam_ml.formats.base import RecordFormat

__all__ = [
    "JsonFormat",
    "CsvFormat",
    "dumps_event",
    "encode_csv_line",
    "encode_json_object",
    "parse_csv_line",
    "parse_json_object",
]


def _decode_utf8(data: Optional[bytes]) -> str:
    if data.__class__ is bytes:  # the common case, without a copy
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"value is not UTF-8: invalid byte at position {e.start}") from e
    if data is None:
        raise ValueError("record value is empty (None, a tombstone)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"value is not UTF-8: invalid byte at position {e.start}") from e


# 19 digits in a row may be an integer outside int64 (orjson would return a float).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def dumps_event(event: Mapping[str, Any]) -> bytes:
    """Encodes an output event (a dict of JSON values) as compact UTF-8 JSON, with orjson where it can.

    NaN and infinities become null (valid JSON); values orjson refuses (an
    integer beyond 64 bits, a non-string key) go through json.dumps.
    """
    try:
        return orjson.dumps(event)
    except TypeError:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def parse_json_object(data: Optional[bytes]) -> dict[str, Any]:
    """Parses a UTF-8 JSON object.

    Args:
      data: The record value.

    Returns:
      The object as a dict.

    Raises:
      ValueError: The value is None, not UTF-8, not JSON, or not an object;
        the message says which.
    """
    if data.__class__ is bytes and _LONG_DIGITS.search(data) is None:
        # orjson decodes a streamed event ~8x faster than json. It refuses some
        # of what json accepts (NaN, Infinity, 1e400, lone surrogates): those,
        # and every error message, take json's path below, so the values
        # accepted and the reasons given are json's. The one thing orjson
        # decodes differently -- an integer beyond 64 bits becomes a float --
        # cannot happen here: any run of 19+ digits goes to json.
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if obj.__class__ is dict:
                return obj
    return _parse_with_json(data)


def _parse_with_json(data: Optional[bytes]) -> dict[str, Any]:
    """parse_json_object with the standard library alone: the reference for what is accepted, and why not."""
    text = _decode_utf8(data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(obj, dict):
        raise ValueError(
            f"expected a JSON object, got a JSON {type(obj).__name__}")
    return obj


def encode_json_object(obj: Mapping[str, Any]) -> bytes:
    """Encodes a mapping as compact UTF-8 JSON.

    Args:
      obj: A mapping with string keys and JSON-serialisable values.

    Returns:
      The encoded bytes.

    Raises:
      ValueError: `obj` is not a mapping, or holds NaN/Infinity (not JSON) or
        a value JSON cannot represent.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a mapping, got {type(obj).__name__}")
    try:
        text = json.dumps(dict(obj), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot encode as JSON: {e}") from e
    return text.encode("utf-8")


def parse_csv_line(data: Optional[bytes],
                   columns: Sequence[str]) -> dict[str, str]:
    """Parses one CSV record (RFC 4180 quoting) into column -> string.

    Args:
      data: The record value: one CSV row, optionally ending in a newline.
      columns: The column names, in the order the fields appear.

    Returns:
      A dict from each column name to its field as a string.

    Raises:
      ValueError: The value is None, not UTF-8, malformed CSV, or has a
        different number of fields than `columns`.
    """
    text = _decode_utf8(data)
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as e:
        raise ValueError(f"malformed CSV: {e}") from e
    if len(rows) != 1:
        raise ValueError(f"expected one CSV row, got {len(rows)}")
    fields = rows[0]
    if len(fields) != len(columns):
        raise ValueError(
            f"expected {len(columns)} fields ({', '.join(columns)}), "
            f"got {len(fields)}")
    return dict(zip(columns, fields))


def encode_csv_line(row: Mapping[str, Any], columns: Sequence[str]) -> bytes:
    """Encodes the given columns of a row as one CSV line (no newline).

    Keys of `row` not in `columns` are left out, so a wider record can be
    written as a narrower CSV. None becomes an empty field.

    Args:
      row: The values by column name.
      columns: The column names to write, in order.

    Returns:
      The UTF-8 line.

    Raises:
      ValueError: A column is missing from `row`, or a float is NaN/Infinity
        (kept out so that a reader does not get the string 'nan').
    """
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"row has no value for column(s) {', '.join(missing)}")
    fields = []
    for column in columns:
        value = row[column]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"column {column}: {value} is not a finite number")
        fields.append("" if value is None else value)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode("utf-8")


class JsonFormat(RecordFormat):
    """Values are UTF-8 JSON objects (`parse_json_object`; orjson where it decodes the same)."""

    name = "json"

    def decode(self, value: Optional[bytes]) -> dict[str, Any]:
        return parse_json_object(value)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return dumps_event(record)


class CsvFormat(RecordFormat):
    """Values are CSV lines whose fields are `columns`, in order (cells arrive as text)."""

    name = "csv"

    def __init__(self, columns: Sequence[str]):
        if not columns:
            raise ValueError("CSV values need their column names")
        self.columns = list(columns)

    def decode(self, value: Optional[bytes]) -> dict[str, Any]:
        return parse_csv_line(value, self.columns)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return encode_csv_line(record, self.columns)
