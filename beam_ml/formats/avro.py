"""Avro values: bare binary of a record schema given as a file (`avro`), and what a schema implies.

    schema = load_avro_schema("transactions.avsc")     # UserError naming the flag
    fmt = AvroFormat(schema)
    record = fmt.decode(value)                           # ValueError(reason): a 'parse' dead letter
    columns = avro_arrow_schema(schema)                  # one Arrow field per record field
    hints = avro_type_hints(schema)                      # field -> numeric | text | drop, for spec inference
    schema = record_schema_of([{"score": 0.3}], "Prediction")   # a writer schema for records without one

fastavro decodes in C; a decode failure is a ValueError saying why (bytes
left over, a truncated body, bytes of another schema).
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterable, Mapping, Optional

import fastavro
import pyarrow as pa

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.formats.base import RecordFormat

__all__ = ["AvroFormat", "load_avro_schema", "parse_record_schema", "avro_arrow_schema", "avro_type_hints",
           "read_avro_body", "record_schema_of", "encode_avro_body"]


def parse_record_schema(raw: Any, what: str, flag: str) -> dict:
    """fastavro's parsed form of a record schema (a dict or its JSON text).

    Raises:
      UserError: not a valid Avro schema, or not a record, naming `flag` and `what`.
    """
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise UserError(f"{flag}: {what} is not JSON: {e}") from None
    try:
        parsed = fastavro.parse_schema(raw)
    except Exception as e:  # fastavro's SchemaParseException, UnknownType...
        raise UserError(f"{flag}: {what} is not a valid Avro schema: {e}") from None
    if not (isinstance(parsed, dict) and parsed.get("type") == "record"):
        raise UserError(f"{flag}: {what}: expected a record schema at the top level (its fields become columns)")
    return parsed


def load_avro_schema(path: str, flag: str = "--avro_schema") -> dict:
    """Reads and parses an Avro schema file (.avsc, JSON) whose top level is a record.

    Raises:
      UserError: the file is missing or not a valid Avro record schema, naming the flag.
    """
    if not fs.is_file(path):
        raise UserError(f"{flag}: file not found: {path}")
    try:
        text = fs.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{flag}: {path} is not JSON: {e}") from None
    return parse_record_schema(text, path, flag)


def read_avro_body(data: bytes, start: int, writer: dict, reader: Optional[dict], what: str) -> dict[str, Any]:
    """Decodes the Avro body data[start:] with `writer`, resolved to `reader` (None: the writer itself).

    Raises:
      ValueError: the body does not decode, or leaves bytes over; `what` names the schema in the message.
    """
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as e:  # EOFError, UnicodeDecodeError, IndexError, SchemaResolutionError...
        raise ValueError(f"invalid Avro for {what}: {type(e).__name__}: {e}".rstrip(": ")) from None
    if buf.tell() != len(data):
        raise ValueError(f"invalid Avro for {what}: {len(data) - buf.tell()} bytes left after the record")
    if not isinstance(record, dict):
        raise ValueError(f"invalid Avro for {what}: expected a record, got {type(record).__name__}")
    return record


def encode_avro_body(record: Mapping[str, Any], schema: dict) -> bytes:
    """The Avro binary body of `record` (no header).

    Raises:
      ValueError: the record does not fit the schema (a field missing without default, a wrong type).
    """
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, schema, dict(record))
    except Exception as e:  # ValueError, TypeError, struct.error, KeyError... from fastavro's writer
        raise ValueError(f"cannot encode as Avro {schema.get('name')}: {type(e).__name__}: {e}") from None
    return out.getvalue()


class AvroFormat(RecordFormat):
    """Values are Avro binary (schemaless, no header) of one record schema (`load_avro_schema`)."""

    name = "avro"
    binary = True

    def __init__(self, schema: dict):
        self.schema = schema

    def decode(self, value: Optional[bytes]) -> dict[str, Any]:
        if value is None:
            raise ValueError("record value is empty (None, a tombstone)")
        return read_avro_body(bytes(value), 0, self.schema, None, f"the schema {self.schema.get('name')}")

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return encode_avro_body(record, self.schema)

    def type_hints(self) -> Optional[dict[str, str]]:
        return avro_type_hints(self.schema) if self.schema is not None else None

    def arrow_schema(self) -> pa.Schema:
        return avro_arrow_schema(self.schema)


# --------------------------------------------------------------- schema -> columns
_AVRO_PRIMITIVES = {"null": pa.string(), "boolean": pa.bool_(), "int": pa.int64(), "long": pa.int64(),
                    "float": pa.float64(), "double": pa.float64(), "bytes": pa.binary(), "string": pa.string()}


def _avro_type(t: Any, named: dict) -> pa.DataType:
    """The column type of an Avro field type (unions with null are nullable; nested types become JSON text)."""
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        return _avro_type(branches[0], named) if len(branches) == 1 else pa.string()
    if isinstance(t, str):
        if t in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[t]
        return named.get(t, pa.string())
    logical, base = t.get("logicalType"), t.get("type")
    if logical in ("timestamp-millis", "timestamp-micros"):
        out = pa.timestamp("us", tz="UTC")
    elif logical in ("local-timestamp-millis", "local-timestamp-micros"):
        out = pa.timestamp("us")
    elif logical == "date":
        out = pa.date32()
    elif logical in ("time-millis", "time-micros"):
        out = pa.time64("us")
    elif logical == "decimal" and int(t.get("precision", 0)) <= 38:
        out = pa.decimal128(int(t["precision"]), int(t.get("scale", 0)))
    elif base in ("record", "array", "map", "enum") or logical in ("uuid", "decimal"):
        out = pa.string()
    elif base == "fixed":
        out = pa.binary()
    else:
        out = _avro_type(base, named)
    if t.get("name") and base in ("record", "enum", "fixed"):
        named[t["name"]] = out
        if t.get("namespace"):
            named[f"{t['namespace']}.{t['name']}"] = out
    return out


def avro_arrow_schema(parsed: Mapping[str, Any]) -> pa.Schema:
    """The columns of an Avro record schema, one per field (nested types as JSON text)."""
    named: dict = {}
    return pa.schema([pa.field(f["name"], _avro_type(f["type"], named)) for f in parsed["fields"]])


def avro_type_hints(parsed: Mapping[str, Any]) -> dict[str, str]:
    """Each field's kind for spec inference, from its Avro type: 'numeric', 'text' or 'drop'.

    Numbers and booleans are numeric; strings and enums text (categorical or
    dropped by their values); temporal, binary and nested fields are dropped.
    A union of several types (e.g. ["double", "string"]) has no hint: its
    values decide, as for CSV.
    """
    hints = {}
    for field, column in zip(parsed["fields"], avro_arrow_schema(parsed)):
        if len(_branches(field["type"])) > 1:
            continue
        t = column.type
        enum = _is_enum(field["type"])
        if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            hints[field["name"]] = "numeric"
        elif pa.types.is_string(t) and (enum or _is_plain_string(field["type"])):
            hints[field["name"]] = "text"
        else:
            hints[field["name"]] = "drop"
    return hints


def _branches(t: Any) -> list:
    return [b for b in t if b != "null"] if isinstance(t, list) else [t]


def _is_enum(t: Any) -> bool:
    b = _branches(t)
    return len(b) == 1 and isinstance(b[0], dict) and b[0].get("type") == "enum"


def _is_plain_string(t: Any) -> bool:
    b = _branches(t)
    return len(b) == 1 and (b[0] == "string" or (isinstance(b[0], dict) and b[0].get("type") == "string"
                                                 and not b[0].get("logicalType")))


# --------------------------------------------------------------- records -> schema
def _kind(v: Any) -> Optional[str]:
    cls = v.__class__
    if v is None:
        return None
    if cls is bool:
        return "boolean"
    if cls is int:
        return "long"
    if cls is float:
        return "double"
    if isinstance(v, (list, tuple)) and all(x.__class__ in (int, float) and x.__class__ is not bool for x in v):
        return "array"
    return "string"


def _widen(a: Optional[str], b: Optional[str]) -> Optional[str]:
    if a is None or a == b:
        return b if a is None else a
    if b is None:
        return a
    if {a, b} == {"long", "double"}:
        return "double"
    return "string"


def record_schema_of(records: Iterable[Mapping[str, Any]], name: str, namespace: str = "beam_ml") -> dict:
    """An Avro record schema (JSON-ready, not parsed) that every one of `records` fits.

    Types come from the values: booleans boolean, integers long, numbers with a
    fraction among them double, lists of numbers array<double>, anything else
    string (`ConfluentAvroWriter` writes such values as text). A field that is
    null or missing in some record is a union with null and defaults to null;
    the others are plain types (which decode faster than unions).
    """
    kinds: dict[str, Optional[str]] = {}
    nullable: set = set()
    count = 0
    for r in records:
        if count:
            nullable.update(k for k in kinds if k not in r)
        count += 1
        for k, v in r.items():
            if k not in kinds and count > 1:
                nullable.add(k)  # missing from the records before
            kinds[k] = _widen(kinds.get(k), _kind(v))
            if v is None:
                nullable.add(k)
    fields = []
    for k, kind in kinds.items():
        t: Any = {"type": "array", "items": "double"} if kind == "array" else (kind or "string")
        fields.append({"name": k, "type": ["null", t], "default": None} if k in nullable else {"name": k, "type": t})
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields}
