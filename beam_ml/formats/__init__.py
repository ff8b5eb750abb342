"""Record formats: the one place a Kafka value becomes a record (and a record a value).

Every Kafka reader (stream_predict, batch_predict over a topic, train
--input_topic, kafka_to_bigquery, `kafka:` lookups) decodes through a
`RecordFormat` from here:

    fmt = record_format("json")                                   # JSON objects (orjson fast path)
    fmt = record_format("csv", columns=spec.column_names)         # CSV lines of the spec's columns
    fmt = record_format("avro", avro_schema=load_avro_schema(p))  # bare Avro binary of a schema file
    fmt = record_format("avro_confluent", topic="transactions",   # magic byte + schema id + Avro body
                        registry=RegistryConfig("http://127.0.0.1:8081")).start()
    record = fmt.decode(value)        # ValueError(reason) -> kafka_dead_letter(kafka_record, reason, fmt)
    columns = fmt.arrow_schema()      # the columns a schema'd format implies (Avro), else None

Google's template names for --value_format (`messageFormat`) are accepted:
AVRO_CONFLUENT_WIRE_FORMAT, AVRO_BINARY_ENCODING, JSON (see `value_format_name`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from beam_ml.errors import UserError
from beam_ml.redaction import secret_flag_value
from beam_ml.formats.avro import (AvroFormat, avro_arrow_schema, avro_type_hints, load_avro_schema,
                                  record_schema_of)
from beam_ml.formats.base import RecordFormat, cell_text, kafka_dead_letter, value_text
from beam_ml.formats.confluent import ConfluentAvroFormat, ConfluentAvroWriter
from beam_ml.formats.registry import (RegistryConfig, RegistryUnavailable, SchemaRegistry, read_user_info)
from beam_ml.formats.text import CsvFormat, JsonFormat, dumps_event

__all__ = [
    "VALUE_FORMATS", "OUTPUT_FORMATS", "MESSAGE_FORMATS", "RecordFormat", "JsonFormat", "CsvFormat", "AvroFormat",
    "ConfluentAvroFormat", "ConfluentAvroWriter", "RegistryConfig", "SchemaRegistry", "RegistryUnavailable",
    "record_format", "format_from_flags", "event_format_of", "registry_from_flags", "output_encoder", "value_format_name",
    "kafka_dead_letter", "value_text", "cell_text", "load_avro_schema", "avro_arrow_schema", "avro_type_hints",
    "record_schema_of", "read_user_info",
]

VALUE_FORMATS = ("json", "csv", "avro", "avro_confluent")
OUTPUT_FORMATS = ("json", "avro_confluent")

# Google's Kafka -> BigQuery template `messageFormat` values -> ours.
MESSAGE_FORMATS = {"AVRO_CONFLUENT_WIRE_FORMAT": "avro_confluent", "AVRO_BINARY_ENCODING": "avro", "JSON": "json"}


def value_format_name(value: str) -> str:
    """--value_format / messageFormat as ours: json, csv, avro or avro_confluent (argparse's type=)."""
    return MESSAGE_FORMATS.get(str(value).strip().upper(), str(value).strip().lower())


def record_format(value_format: str, *, columns: Sequence[str] = (), avro_schema: Optional[dict] = None,
                  registry: Optional[RegistryConfig] = None, topic: Optional[str] = None) -> RecordFormat:
    """The RecordFormat of a --value_format and what it needs.

    Args:
      value_format: json, csv, avro or avro_confluent (or a messageFormat name).
      columns: the CSV fields' names, in order (csv).
      avro_schema: the parsed record schema (avro; the reader schema for avro_confluent).
      registry: the schema registry (avro_confluent).
      topic: the topic read (avro_confluent: the reader schema is `<topic>-value`'s latest version
        unless avro_schema is given).

    Raises:
      ValueError: an unknown format, or one missing what it needs.
    """
    name = value_format_name(value_format)
    if name == "json":
        return JsonFormat()
    if name == "csv":
        return CsvFormat(columns)
    if name == "avro":
        if avro_schema is None:
            raise ValueError("Avro values need their schema")
        return AvroFormat(avro_schema)
    if name == "avro_confluent":
        if registry is None:
            raise ValueError("Confluent Avro values need a schema registry")
        return ConfluentAvroFormat(SchemaRegistry(registry), subject=f"{topic}-value" if topic else None,
                                   reader_schema=avro_schema)
    raise ValueError(f"value_format: expected one of {', '.join(VALUE_FORMATS)}, got {value_format!r}")


def registry_from_flags(opts: Any) -> Optional[RegistryConfig]:
    """The RegistryConfig of --schema_registry_url, --schema_registry_user_info(_file) and
    --schema_registry_ca_file (None without a URL). Raises UserError naming the flag."""
    url = getattr(opts, "schema_registry_url", None)
    if not url:
        return None
    user_info = read_user_info(secret_flag_value(getattr(opts, "schema_registry_user_info", None)),
                               getattr(opts, "schema_registry_user_info_file", None))
    return RegistryConfig(url, user_info=user_info, ca_file=getattr(opts, "schema_registry_ca_file", None)).validated()


def format_from_flags(opts: Any, topic: Optional[str], columns: Sequence[str] = ()) -> RecordFormat:
    """The started RecordFormat of a job's --value_format, --avro_schema and registry flags (any object
    with those attributes, e.g. an options view), for records of `topic`.

    Raises:
      UserError: a missing or bad flag, a registry that cannot be reached (one line, naming the flag).
    """
    name = value_format_name(getattr(opts, "value_format", None) or "json")
    path = getattr(opts, "avro_schema", None)
    if path and name == "json":
        name = "avro"  # kafka_to_bigquery's --avro_schema alone has always meant bare Avro
    schema = load_avro_schema(path) if path else None
    registry = registry_from_flags(opts)
    if name == "avro_confluent" and registry is None:
        raise UserError("--schema_registry_url: required with --value_format=avro_confluent")
    if name == "avro" and schema is None:
        raise UserError("--avro_schema: required with --value_format=avro (bare Avro carries no schema)")
    if name == "csv" and not columns:
        raise UserError("--value_format=csv: CSV lines carry no field names; give --spec or --model_dir")
    try:
        fmt = record_format(name, columns=columns, avro_schema=schema, registry=registry, topic=topic)
    except ValueError as e:
        raise UserError(f"--value_format: {e}") from None
    return fmt.start()


def event_format_of(opts: Any, topic: Optional[str]):
    """What event parsers take for --value_format: 'json' / 'csv' as names (the parser knows the columns:
    the model spec's, or a --sql statement's events), Avro ones as a started RecordFormat."""
    name = value_format_name(getattr(opts, "value_format", None) or "json")
    if name in ("json", "csv") and not getattr(opts, "avro_schema", None):
        return name
    return format_from_flags(opts, topic)


def output_encoder(opts: Any, topic: Optional[str], name: str = "Prediction", examples: Sequence[dict] = ()):
    """`record -> bytes` for --output_format: compact JSON (default), or Confluent Avro registered
    under `<topic>-value` (needs --schema_registry_url; the first schema fits `examples`)."""
    output_format = getattr(opts, "output_format", None) or "json"
    if output_format == "json":
        return dumps_event
    registry = registry_from_flags(opts)
    if registry is None:
        raise UserError("--schema_registry_url: required with --output_format=avro_confluent")
    client = SchemaRegistry(registry).check()
    return ConfluentAvroWriter(client, f"{topic}-value", name=name, examples=examples).encode
