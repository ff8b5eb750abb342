"""Confluent wire-format Avro: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

    registry = SchemaRegistry(RegistryConfig("http://127.0.0.1:8081"))
    fmt = ConfluentAvroFormat(registry, subject="transactions-value").start()   # reader schema: latest version
    record = fmt.decode(value)       # ValueError: wrong magic byte, unknown schema id, undecodable body
    writer = ConfluentAvroWriter(registry, "predictions-value", name="Prediction")
    value = writer.encode({"event_id": "e1", "score": 0.93})                    # registers the schema once

Each value is decoded with its writer's schema (fetched by id once, cached)
resolved to the reader schema, so a topic holding records of two schema
versions (a field added with a default) reads as one set of columns. The
reader schema is `--avro_schema` when given, else the subject's latest version
at start.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Mapping, Optional, Sequence

import fastavro
import pyarrow as pa

from beam_ml.errors import UserError
from beam_ml.formats.avro import (avro_arrow_schema, avro_type_hints, encode_avro_body, read_avro_body,
                                  record_schema_of)
from beam_ml.formats.base import RecordFormat
from beam_ml.formats.registry import RegistryUnavailable, SchemaRegistry, UnknownSchema

__all__ = ["ConfluentAvroFormat", "ConfluentAvroWriter", "MAGIC_BYTE", "wire_header"]

MAGIC_BYTE = 0
# A schema id the registry did not know is asked again after this long (it may be registered since),
# not for every record that names it.
UNKNOWN_ID_SECONDS = 60.0


def wire_header(schema_id: int) -> bytes:
    """The 5 bytes before a Confluent Avro body."""
    return bytes([MAGIC_BYTE]) + int(schema_id).to_bytes(4, "big")


class ConfluentAvroFormat(RecordFormat):
    """Decodes Confluent wire-format Avro with schemas from a registry; encodes with the reader schema.

    Args:
      registry: the registry client.
      subject: the subject whose latest version is the reader schema (usually `<topic>-value`).
      reader_schema: the reader schema itself (parsed; e.g. from --avro_schema), instead of the subject's.
    """

    name = "avro_confluent"
    binary = True

    def __init__(self, registry: SchemaRegistry, subject: Optional[str] = None,
                 reader_schema: Optional[dict] = None):
        self.registry = registry
        self.subject = subject
        self.reader_schema = reader_schema
        self.reader_id: Optional[int] = None
        self._plans: dict[int, tuple[dict, Optional[dict]]] = {}  # schema id -> (writer, reader or None)
        self._unknown: dict[int, float] = {}  # schema id -> when the registry said it does not know it

    def start(self, flag: str = "--schema_registry_url") -> "ConfluentAvroFormat":
        """Checks the registry answers (one-line UserError if not) and fixes the reader schema."""
        self.registry.check(flag)
        if self.reader_schema is None:
            if not self.subject:
                raise UserError("--avro_schema: Confluent Avro needs a reader schema: a subject or a schema file")
            try:
                self.reader_id, self.reader_schema = self.registry.latest(self.subject)
            except UnknownSchema:
                raise UserError(f"{flag}: the schema registry at {self.registry.config.url} has no subject "
                                f"'{self.subject}' (the reader schema; or give --avro_schema)") from None
            except RegistryUnavailable as e:
                raise UserError(f"{flag}: {e}") from None
        return self

    def _plan(self, schema_id: int) -> tuple[dict, Optional[dict]]:
        plan = self._plans.get(schema_id)
        if plan is None:
            asked = self._unknown.get(schema_id)
            if asked is not None and time.monotonic() - asked < UNKNOWN_ID_SECONDS:
                raise ValueError(f"unknown schema id {schema_id}: the schema registry does not know it")
            try:
                writer = self.registry.schema_by_id(schema_id)
            except UnknownSchema as e:
                if len(self._unknown) > 10000:
                    self._unknown.clear()
                self._unknown[schema_id] = time.monotonic()
                raise ValueError(f"unknown schema id {schema_id}: the schema registry does not know it "
                                 f"({e})") from None
            reader = self.reader_schema
            same = reader is None or schema_id == self.reader_id or _canonical(writer) == _canonical(reader)
            plan = (writer, None if same else reader)
            self._plans[schema_id] = plan
        return plan

    def decode(self, value: Optional[bytes]) -> dict[str, Any]:
        if value is None:
            raise ValueError("record value is empty (None, a tombstone)")
        data = value if value.__class__ is bytes else bytes(value)
        if len(data) < 5:
            raise ValueError(f"not Confluent wire-format Avro: {len(data)} bytes, fewer than the 5-byte header")
        if data[0] != MAGIC_BYTE:
            raise ValueError(f"not Confluent wire-format Avro: magic byte {data[0]}, expected {MAGIC_BYTE}")
        schema_id = int.from_bytes(data[1:5], "big")
        writer, reader = self._plan(schema_id)
        return read_avro_body(data, 5, writer, reader, f"schema id {schema_id}"
                              + (" resolved to the reader schema" if reader is not None else ""))

    def encode(self, record: Mapping[str, Any]) -> bytes:
        if self.reader_schema is None or not self.subject:
            raise ValueError("Confluent Avro encoding needs a subject and a schema (start() first)")
        if self.reader_id is None:
            self.reader_id = self.registry.register(self.subject, self.reader_schema)
        return wire_header(self.reader_id) + encode_avro_body(record, self.reader_schema)

    def type_hints(self) -> Optional[dict[str, str]]:
        return avro_type_hints(self.reader_schema) if self.reader_schema is not None else None

    def arrow_schema(self) -> Optional[pa.Schema]:
        return avro_arrow_schema(self.reader_schema) if self.reader_schema is not None else None


def _canonical(schema: dict) -> str:
    return json.dumps({k: v for k, v in schema.items() if not k.startswith("__")}, sort_keys=True)


def _base(t: Any) -> Any:
    """A field type without its null branch."""
    return t[1] if isinstance(t, list) else t


class ConfluentAvroWriter:
    """Encodes records without a schema of their own (predictions, replayed CSV rows) as Confluent Avro.

    The writer schema is derived from the records (`record_schema_of`; fields
    seen null or missing are nullable with a null default) and registered under
    `subject`; a record with a field the schema lacks, a null where none was, or
    a value of another type widens the schema and registers the new version.
    """

    def __init__(self, registry: SchemaRegistry, subject: str, name: str = "Record",
                 examples: Sequence[Mapping[str, Any]] = ()):
        self.registry = registry
        self.subject = subject
        self.name = name
        self._seed = list(examples)  # the first schema fits all of them (fewer versions later)
        self._raw: Optional[dict] = None        # as registered
        self._schema: Optional[dict] = None     # parsed
        self._fields: frozenset = frozenset()
        self._text: frozenset = frozenset()      # fields written as text
        self._id: Optional[int] = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _widen(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            before = self._examples(self._raw["fields"]) if self._raw else self._seed
            raw = record_schema_of(before + [record], self.name)  # the old types, widened by the record's
            self._id = self.registry.register(self.subject, raw)
            self._raw, self._schema = raw, fastavro.parse_schema(raw)
            self._fields = frozenset(f["name"] for f in raw["fields"])
            self._text = frozenset(f["name"] for f in raw["fields"] if _base(f["type"]) == "string")

    @staticmethod
    def _examples(fields: list) -> list[dict]:
        """Records whose values have the given fields' types, nulls where they are nullable (to re-derive them)."""
        sample = {"boolean": True, "long": 0, "double": 0.5, "string": ""}
        typed = {f["name"]: [0.5] if isinstance(_base(f["type"]), dict) else sample[_base(f["type"])] for f in fields}
        return [typed, {**typed, **{f["name"]: None for f in fields if isinstance(f["type"], list)}}]

    def _as_text(self, record: Mapping[str, Any]) -> dict:
        out = dict(record)
        for name in self._text:
            v = out.get(name)
            if v is not None and v.__class__ is not str:
                out[name] = json.dumps(v, separators=(",", ":"), default=str) if isinstance(v, (dict, list)) \
                    else str(v)
        return out

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The record as magic byte + schema id + Avro body. Raises ValueError if it cannot be written."""
        if self._schema is None or not self._fields.issuperset(record):
            self._widen(record)
        try:
            return wire_header(self._id) + encode_avro_body(self._as_text(record), self._schema)
        except ValueError:
            self._widen(record)  # a value of another type than the schema's (e.g. text where numbers were)
            return wire_header(self._id) + encode_avro_body(self._as_text(record), self._schema)
