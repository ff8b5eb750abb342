"""BigQuery IO for beam_ml: typed RecordBatches in, prediction/ingest rows and dead letters out.

Everything runs through Beam's own BigQuery IO (no Java needed):

    # Read a table (or a standard-SQL query) as arrow_schema_for(spec) batches + dead letters.
    rows, dead = (p | ReadFromBigQueryBatches(spec, table="proj:ds.tx")).values()
    rows, dead = (p | ReadFromBigQueryBatches(spec, query="SELECT * FROM ds.tx WHERE amount > 0")).values()

    # Write rows; rows that do not fit the schema or that BigQuery rejects come back as DeadLetters.
    dead = rows | WriteRowsToBigQuery("proj:ds.preds", schema, method=STREAMING_INSERTS)
    dead | WriteDeadLettersToBigQuery("proj:ds.preds_error_records")   # Google's DLQ schema

    # Against a local emulator: `make bqemulator && python -m beam_ml.testing.bigquery` prints
    # its REST and gRPC addresses, which the pipelines take as
    #   --bigquery_endpoint=http://127.0.0.1:PORT --bigquery_storage_endpoint=127.0.0.1:GRPC_PORT
    endpoint = BigQueryEndpoint.from_options(options)    # None: Google's BigQuery
    rows, dead = (p | ReadFromBigQueryBatches(spec, table="test:ds.tx", endpoint=endpoint)).values()

Reads use `ReadFromBigQuery(method=DIRECT_READ)` (the Storage Read API; queries
with `use_standard_sql=True`). BigQuery rows have no line number, so a row's
identity (`LINE_COLUMN`, and a dead letter's position) is `row_fingerprint(row)`,
a 63-bit hash of its values: the same row always gets the same id, whatever the
stream layout, runner or worker count (so the train/eval split is stable).

Writes use `WriteToBigQuery` with STREAMING_INSERTS and RETRY_ON_TRANSIENT_ERROR
(rows BigQuery rejects come back in `failed_rows_with_errors` and become dead
letters) or FILE_LOADS for bounded runs (a bad row would fail the whole load
job, so rows are first checked against the table schema by `validate_row`;
that check also runs before streaming inserts).

An emulator or private endpoint is an explicit flag, `--bigquery_endpoint`
(REST) plus `--bigquery_storage_endpoint` (the Storage Read gRPC host, for
reads), announced in the log when a transform uses it. Without it every path is
Beam's IO unchanged. With it, writes get a client for that endpoint through
`WriteToBigQuery`'s `test_client` hook (pickled to every worker); reads, which
Beam gives no hook, get Beam's two client factories redirected in this process
(`use_endpoint`) and, through `--beam_plugins` and an environment variable, in
its worker subprocesses (DirectRunner multi_processing). That redirect is for
emulators and local runs: it does not reach Dataflow workers.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import decimal
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.formats import cell_text
from beam_ml.io.batches import LINE_COLUMN, ChunkEmitter, ChunkResult, as_list_array
from beam_ml.io.csv import parse_csv_chunk
from beam_ml.options import BIGQUERY_CREATE_DISPOSITIONS, BIGQUERY_WRITE_DISPOSITIONS, BigQueryOptions
from beam_ml.records import raw_text
from beam_ml.spec import DatasetSpec, infer_spec_from_rows

__all__ = [
    "BigQueryEndpoint",
    "STREAMING_INSERTS",
    "FILE_LOADS",
    "DEAD_LETTER_SCHEMA",
    "parse_table",
    "table_schema_for",
    "schema_fields",
    "type_hints",
    "infer_spec_from_table",
    "check_columns",
    "row_fingerprint",
    "rows_to_chunk",
    "validate_row",
    "failed_row_to_dead_letter",
    "dead_letter_row",
    "endpoint_client",
    "ENDPOINT_ENV",
    "use_endpoint",
    "clear_endpoint",
    "ReadFromBigQueryBatches",
    "WriteRowsToBigQuery",
    "WriteDeadLettersToBigQuery",
]

_LOGGER = logging.getLogger(__name__)

STREAMING_INSERTS = "STREAMING_INSERTS"
FILE_LOADS = "FILE_LOADS"
_METHODS = (STREAMING_INSERTS, FILE_LOADS)
_CREATE = BIGQUERY_CREATE_DISPOSITIONS
_WRITE = BIGQUERY_WRITE_DISPOSITIONS


# Google's Dataflow dead-letter table (Kafka/PubSub to BigQuery templates), plus where the
# record came from: the beam_ml stage that rejected it and, for Kafka input, its coordinates.
DEAD_LETTER_SCHEMA: dict = {"fields": [
    {"name": "timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "payloadString", "type": "STRING", "mode": "NULLABLE"},
    {"name": "payloadBytes", "type": "BYTES", "mode": "NULLABLE"},
    {"name": "attributes", "type": "RECORD", "mode": "REPEATED", "fields": [
        {"name": "key", "type": "STRING", "mode": "NULLABLE"},
        {"name": "value", "type": "STRING", "mode": "NULLABLE"},
    ]},
    {"name": "errorMessage", "type": "STRING", "mode": "NULLABLE"},
    {"name": "stacktrace", "type": "STRING", "mode": "NULLABLE"},
    {"name": "stage", "type": "STRING", "mode": "NULLABLE"},
    {"name": "source_topic", "type": "STRING", "mode": "NULLABLE"},
    {"name": "partition", "type": "INTEGER", "mode": "NULLABLE"},
    {"name": "offset", "type": "INTEGER", "mode": "NULLABLE"},
]}


@dataclasses.dataclass(frozen=True)
class BigQueryEndpoint:
    """Where BigQuery is, when it is not Google's: an emulator or a private endpoint.

    Attributes:
      rest: ``http(s)://HOST:PORT`` of the REST API (tables, jobs, insertAll).
      storage: ``HOST:PORT`` of the Storage Read API (plain gRPC), for reads; None
        when only writing.
    """

    rest: str
    storage: Optional[str] = None

    _REST_RE = re.compile(r"^https?://[^/\s:]+(:\d+)?/?$")
    _GRPC_RE = re.compile(r"^[^/\s:]+:\d+$")

    def __post_init__(self):
        if not self._REST_RE.match(self.rest or ""):
            raise UserError(f"--bigquery_endpoint: expected http://HOST:PORT, got {self.rest!r}")
        if self.storage is not None and not self._GRPC_RE.match(self.storage):
            raise UserError(f"--bigquery_storage_endpoint: expected HOST:PORT, got {self.storage!r}")
        object.__setattr__(self, "rest", self.rest.rstrip("/"))

    @classmethod
    def from_options(cls, options: PipelineOptions) -> Optional["BigQueryEndpoint"]:
        """The endpoint named by --bigquery_endpoint, or None for Google's."""
        o = options.view_as(BigQueryOptions)
        if not o.bigquery_endpoint:
            if o.bigquery_storage_endpoint:
                raise UserError("--bigquery_storage_endpoint: only meaningful with --bigquery_endpoint")
            return None
        return cls(o.bigquery_endpoint, o.bigquery_storage_endpoint or None)

    def check(self, timeout: float = 3.0) -> "BigQueryEndpoint":
        """Fails fast when nothing listens at the endpoint (clients would retry for minutes).

        Raises:
          UserError: naming the flag whose HOST:PORT refused or timed out.
        """
        host_port = self.rest.split("://", 1)[1]
        checks = [("--bigquery_endpoint", host_port)]
        if self.storage:
            checks.append(("--bigquery_storage_endpoint", self.storage))
        for name, hp in checks:
            host, _, port = hp.rpartition(":")
            if not host:
                host, port = hp, ("443" if self.rest.startswith("https") else "80")
            try:
                socket.create_connection((host, int(port)), timeout=timeout).close()
            except OSError as e:
                raise UserError(f"{name}: nothing answers at {hp} ({e.strerror or e})") from None
        return self

    def announce(self, what: str) -> None:
        """Checks the endpoint and logs, once per process, that BigQuery `what` go there."""
        key = (self, what)
        if key not in _ANNOUNCED:
            self.check()
            _ANNOUNCED.add(key)
            _LOGGER.warning("BigQuery %s use the endpoint %s%s (--bigquery_endpoint), not Google's BigQuery",
                            what, self.rest, f" and Storage API {self.storage}" if self.storage else "")


_ANNOUNCED: set = set()


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


# ------------------------------------------------------------------------- reading
def _fingerprint(text: str, numbers: bytes = b"") -> int:
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8)
    if numbers:
        h.update(b"\0" + numbers)
    return int.from_bytes(h.digest(), "big") >> 1


def _wanted_columns(spec: DatasetSpec, with_label: bool) -> list[str]:
    return [c.name for c in spec.columns
            if c.role in ("numeric", "categorical", "key", "mask") or (c.role == "label" and with_label)]


_NUMBER_TYPES = (float, int)  # exact types: bool is not a number here (it becomes "1"/"0" text)


def _text_cells(values: list) -> list[str]:
    """`_cell` over a non-numeric column, with a fast path for plain strings."""
    types = set(map(type, values))
    types.discard(type(None))
    if types <= {str} and not any("\n" in v or "\r" in v for v in values if v is not None):
        return ["" if v is None else v for v in values]
    return [cell_text(v) for v in values]


def _numeric_parts(values: list) -> tuple[np.ndarray, list[str]]:
    """A numeric column split in two: numbers as float64 (NaN elsewhere), and the
    other values as CSV cells ("" where a number is), which parse_csv_chunk reads.

    Numbers skip the text round trip (repr of a float is the costliest step of a
    read); text, booleans and decimals take the same path as a CSV file's cells.
    """
    types = set(map(type, values))
    types.discard(type(None))
    if types <= set(_NUMBER_TYPES):
        return np.array(values, dtype=np.float64), [""] * len(values)
    numbers = np.array([v if type(v) in _NUMBER_TYPES else np.nan for v in values], dtype=np.float64)
    return numbers, ["" if type(v) in _NUMBER_TYPES else cell_text(v, True) for v in values]


def _encode_rows(rows: Sequence[Mapping[str, Any]], header: Sequence[str], numeric: set
                 ) -> tuple[str, dict[str, np.ndarray], list[int]]:
    """The rows' CSV text (one line each), their numbers by numeric column, and their ids."""
    numbers: dict[str, np.ndarray] = {}
    columns = []
    for name in header:
        values = [r[name] for r in rows]
        if name in numeric:
            numbers[name], cells = _numeric_parts(values)
        else:
            cells = _text_cells(values)
        columns.append(cells)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(zip(*columns))
    text = buf.getvalue()
    lines = text.split("\n")
    lines.pop()  # after the last line break
    if numbers:
        matrix = np.column_stack(list(numbers.values()))
        ids = [_fingerprint(line, matrix[i].tobytes()) for i, line in enumerate(lines)]
    else:
        ids = [_fingerprint(line) for line in lines]
    return text, numbers, ids


def row_fingerprint(row: Mapping[str, Any], spec: DatasetSpec, with_label: bool = True) -> int:
    """A row's stable 63-bit id: its `LINE_COLUMN` value and its dead letter's position.

    A hash of the values of the columns the spec reads, each encoded on its own
    (so the id does not depend on the other rows read with it): the same row read
    from a table or a query gets the same id; identical rows share it. (A row
    lacking a column is hashed as its JSON instead.)
    """
    header = _wanted_columns(spec, with_label)
    if not row.keys() >= set(header):
        return _fingerprint(json.dumps(row, sort_keys=True, default=str))
    return _encode_rows([row], header, {c.name for c in spec.columns if c.role == "numeric"})[2][0]


def rows_to_chunk(rows: Sequence[Mapping[str, Any]], source: str, spec: DatasetSpec,
                  with_label: bool = True) -> ChunkResult:
    """Turns BigQuery rows (dicts) into a typed batch plus dead letters.

    Rows are written as CSV lines and parsed by `beam_ml.io.csv.parse_csv_chunk`,
    so a table and a file give identical batches, missing-value handling (the
    spec's NA tokens apply to STRING values too) and dead-letter reasons.
    Numbers (INT64, FLOAT64) skip the text round trip: they are cast straight to
    float32. A dead row's position and every good row's `LINE_COLUMN` is
    `row_fingerprint(row)`; its raw text is the row as JSON with PII (mask)
    columns masked.

    Args:
      rows: rows as returned by ReadFromBigQuery.
      source: the table (``project:dataset.table``) or query, for dead letters.
      spec: the dataset spec.
      with_label: require and validate the label column.

    Returns:
      A ChunkResult counting every row.
    """
    header = _wanted_columns(spec, with_label)
    wanted = set(header)
    numeric = {c.name for c in spec.columns if c.role == "numeric"}
    dead: list[DeadLetter] = []
    kept: list[Mapping[str, Any]] = []
    for row in rows:
        if row.keys() >= wanted:
            kept.append(row)
            continue
        dead.append(DeadLetter(source, _fingerprint(json.dumps(row, sort_keys=True, default=str)),
                               "; ".join(f"missing field '{n}'" for n in header if n not in row),
                               raw_text(dict(row), spec.mask_columns)))
    if not kept:
        return ChunkResult(None, dead, len(rows))
    text, numbers, ids = _encode_rows(kept, header, numeric)
    result = parse_csv_chunk(text.encode("utf-8"), 0, source, header, spec, with_label)
    for d in result.dead:  # a line index of the written chunk → its row
        i = d.position
        row = kept[i] if i is not None and 0 <= i < len(kept) else None
        dead.append(DeadLetter(source, ids[i] if row is not None else None, d.reason,
                               raw_text(dict(row), spec.mask_columns) if row is not None else d.raw, d.stage))
    batch = result.batch
    if batch is not None:
        kept_index = batch.column(LINE_COLUMN).to_numpy()  # the line index parse_csv_chunk gave
        for name, values in numbers.items():
            parsed = batch.column(name).flatten().to_numpy(zero_copy_only=False)
            taken = values[kept_index]
            with np.errstate(over="ignore"):  # beyond float32: inf, as the text path gives
                merged = np.where(np.isnan(taken), parsed, taken.astype(np.float32))
            batch = batch.set_column(batch.schema.get_field_index(name), name, as_list_array(pa.array(merged)))
        idx = batch.schema.get_field_index(LINE_COLUMN)
        batch = batch.set_column(idx, LINE_COLUMN, pa.array(np.asarray(ids, dtype=np.int64)[kept_index]))
    return ChunkResult(batch, dead, len(rows))


class _RowsToBatchesDoFn(beam.DoFn):
    def __init__(self, spec: DatasetSpec, source: str, with_label: bool):
        self._spec = spec
        self._source = source
        self._with_label = with_label
        self._emitter = ChunkEmitter()

    def process(self, rows: Sequence[Mapping[str, Any]]):
        yield from self._emitter.emit(rows_to_chunk(rows, self._source, self._spec, self._with_label))


class _DropTableDoFn(beam.DoFn):
    """Deletes a scratch table (and its dataset) once its rows were all read."""

    def __init__(self, endpoint: BigQueryEndpoint, project: str, dataset: str, table: str):
        self._endpoint = endpoint
        self._ref = (project, dataset, table)

    def process(self, unused_count):
        project, dataset, table = self._ref
        client = endpoint_client(self._endpoint.rest, project)
        try:
            client.delete_table(f"{project}.{dataset}.{table}", not_found_ok=True)
            client.delete_dataset(f"{project}.{dataset}", delete_contents=True, not_found_ok=True)
        finally:
            client.close()
        return []


class ReadFromBigQueryBatches(beam.PTransform):
    """Reads a table or a standard-SQL query as typed RecordBatches plus dead letters.

    Returns a DoOutputsTuple: the main output is PCollection[pa.RecordBatch]
    (schema `beam_ml.io.batches.arrow_schema_for(spec, with_label)`), `[DEAD_TAG]`
    is PCollection[DeadLetter] (source: the table or query; position:
    `row_fingerprint`). The READ counters hold lines_in = rows_good + rows_dead.

    The read is Beam's `ReadFromBigQuery(method=DIRECT_READ)`; a query runs with
    `use_standard_sql=True` into Beam's temporary table. With an endpoint (an
    emulator, which cannot run a query into a destination table) the query is
    instead materialized when the pipeline is built, by ``CREATE TABLE ... AS``
    into a scratch dataset that is deleted once read.

    Args:
      spec: the dataset spec the rows must match.
      table: ``project:dataset.table`` (or ``project.dataset.table``).
      query: a standard-SQL query (exactly one of table and query).
      with_label: read and validate the label column (False for prediction input).
      endpoint: an emulator or private endpoint (`BigQueryEndpoint.from_options`), or None.
      project: the project for a table spec without one, and for queries' jobs.
      max_batch_size: rows per RecordBatch at most.
    """

    def __init__(self, spec: DatasetSpec, table: Optional[str] = None, query: Optional[str] = None,
                 with_label: bool = True, endpoint: Optional[BigQueryEndpoint] = None,
                 project: Optional[str] = None, max_batch_size: int = 10000):
        super().__init__()
        if (table is None) == (query is None):
            raise UserError("--input_table / --input_query: give exactly one")
        if query is not None and not query.strip():
            raise UserError("--input_query: empty query")
        if endpoint is not None and endpoint.storage is None:
            raise UserError("--bigquery_storage_endpoint: reading through --bigquery_endpoint needs the "
                            "Storage Read API's HOST:PORT too")
        self._spec = spec
        self._table = _table_spec(table, "--input_table", project) if table is not None else None
        self._query = query
        self._with_label = with_label
        self._endpoint = endpoint
        self._project = project
        self._max_batch_size = max_batch_size

    @property
    def source(self) -> str:
        """The name dead letters carry: the table, or the query's text (shortened)."""
        if self._table is not None:
            return self._table
        q = " ".join(self._query.split())
        return "query: " + (q if len(q) <= 200 else q[:197] + "...")

    def _materialize_query(self) -> tuple[str, str, str]:
        """Runs the query into a scratch table at the endpoint; returns its (project, dataset, table)."""
        project = self._project or _default_project(self._query)
        if not project:
            raise UserError("--input_query: pass --project (the project the query's scratch table goes to)")
        dataset = f"beam_ml_tmp_{uuid.uuid4().hex[:12]}"
        table = "query_result"
        client = endpoint_client(self._endpoint.rest, project)
        try:
            client.create_dataset(f"{project}.{dataset}")
            try:
                client.query(f"CREATE TABLE `{project}.{dataset}.{table}` AS\n{self._query}").result(timeout=600)
            except Exception as e:  # the endpoint's own message names the problem
                client.delete_dataset(f"{project}.{dataset}", delete_contents=True, not_found_ok=True)
                raise UserError(f"--input_query: the query failed at {self._endpoint.rest}: "
                                f"{getattr(e, 'message', None) or e}".splitlines()[0]) from None
        finally:
            client.close()
        return project, dataset, table

    def expand(self, pbegin):
        from apache_beam.io.gcp.bigquery import ReadFromBigQuery

        read_kwargs: dict[str, Any] = {"method": ReadFromBigQuery.Method.DIRECT_READ}
        scratch = None
        if self._endpoint is not None:
            self._endpoint.announce("reads")
            use_endpoint(self._endpoint)
            setup = pbegin.pipeline.options.view_as(SetupOptions)
            # Worker subprocesses import this module first, which redirects their clients too.
            setup.beam_plugins = list(dict.fromkeys((setup.beam_plugins or []) + [__name__]))
        if self._table is not None:
            read_kwargs["table"] = self._table
            read_kwargs["selected_fields"] = _wanted_columns(self._spec, self._with_label)
        elif self._endpoint is not None:
            scratch = self._materialize_query()
            read_kwargs["table"] = "{}:{}.{}".format(*scratch)
        else:
            read_kwargs.update(query=self._query, use_standard_sql=True)
            if self._project:
                read_kwargs["project"] = self._project
        rows = pbegin | "ReadFromBigQuery" >> ReadFromBigQuery(**read_kwargs)
        if scratch is not None:
            _ = (rows
                 | "CountRead" >> beam.combiners.Count.Globally()
                 | "DropQueryTable" >> beam.ParDo(_DropTableDoFn(self._endpoint, *scratch)))
        return (rows
                | "BatchRows" >> beam.BatchElements(min_batch_size=min(256, self._max_batch_size),
                                                    max_batch_size=self._max_batch_size)
                | "RowsToBatches" >> beam.ParDo(_RowsToBatchesDoFn(self._spec, self.source, self._with_label))
                .with_outputs(DEAD_TAG, main="rows"))


def _default_project(query: str) -> Optional[str]:
    """The project of the first fully qualified table a query names, if any."""
    m = re.search(r"`([A-Za-z0-9_\-]+)[.:][A-Za-z0-9_]+\.[A-Za-z0-9_\-]+`", query)
    return m.group(1) if m else None


# ------------------------------------------------------------------------- writing
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


def _insert_errors_text(errors: Any) -> str:
    parts = []
    for e in errors or []:
        if isinstance(e, Mapping):
            loc = e.get("location")
            parts.append(f"{e.get('reason', 'error')}: {e.get('message', '')}" + (f" (field '{loc}')" if loc else ""))
        else:
            parts.append(str(e))
    return "; ".join(parts) or "rejected by BigQuery"


def failed_row_to_dead_letter(destination: str, row: Mapping[str, Any], errors: Any,
                              origin: Optional[Callable[[Mapping[str, Any]], tuple[str, Optional[int]]]] = None
                              ) -> DeadLetter:
    """A row BigQuery rejected (from `failed_rows_with_errors`) as a DeadLetter, stage 'bigquery'.

    Args:
      destination: the table it was written to.
      row: the row.
      errors: BigQuery's insert errors for it.
      origin: maps the row to (source, position) of the record it came from (e.g.
        its Kafka topic/partition and offset); default: the table, no position.
    """
    source, position = origin(row) if origin else (str(destination), None)
    return DeadLetter(source, position, f"BigQuery rejected the row for {destination}: {_insert_errors_text(errors)}",
                      raw_text(dict(row)), "bigquery")


def _timestamp_text(ts: Union[float, datetime.datetime]) -> str:
    if not isinstance(ts, datetime.datetime):
        ts = datetime.datetime.fromtimestamp(float(ts), tz=datetime.timezone.utc)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


_KAFKA_SOURCE_RE = re.compile(r"^(?P<topic>.+)/(?P<partition>\d+)$")


def dead_letter_row(dead: DeadLetter, timestamp: Union[float, datetime.datetime], from_kafka: bool = False) -> dict:
    """A DeadLetter as a row of `DEAD_LETTER_SCHEMA` (Google's DLQ columns + ours).

    payloadString is the raw record (as the DeadLetter holds it: text, PII
    masked, truncated), payloadBytes the same bytes (base64, as BigQuery's JSON
    wants); attributes carry the source and position; errorMessage the reason.

    Args:
      dead: the dead letter.
      timestamp: when it was dead-lettered (epoch seconds or a datetime).
      from_kafka: the DeadLetter's source is ``topic/partition`` and its position
        the offset: fill source_topic, partition and offset.
    """
    raw = dead.raw if dead.raw is not None else ""
    raw = raw[: DeadLetter.MAX_RAW_CHARS]
    row = {
        "timestamp": _timestamp_text(timestamp),
        "payloadString": raw,
        "payloadBytes": base64.b64encode(raw.encode("utf-8")).decode("ascii"),
        "attributes": [{"key": "source", "value": str(dead.source)},
                       {"key": "position", "value": None if dead.position is None else str(dead.position)}],
        "errorMessage": dead.reason,
        "stacktrace": None,
        "stage": dead.stage,
        "source_topic": None,
        "partition": None,
        "offset": None,
    }
    m = _KAFKA_SOURCE_RE.match(str(dead.source)) if from_kafka else None
    if m:
        row.update(source_topic=m.group("topic"), partition=int(m.group("partition")),
                   offset=None if dead.position is None else int(dead.position))
    return row


class _CheckRowsDoFn(beam.DoFn):
    """Rows that fit the schema to main; the others as DeadLetters (stage 'schema')."""

    def __init__(self, schema: dict, table: str, origin, ignore_unknown: bool, validate: bool):
        self._schema = schema
        self._table = table
        self._origin = origin
        self._ignore_unknown = ignore_unknown
        self._validate = validate
        self._in = beam.metrics.Metrics.counter(metrics.WRITE, "rows_in")
        self._dead = beam.metrics.Metrics.counter(metrics.WRITE, "dead_schema")

    def setup(self):
        self._fields = schema_fields(self._schema)

    def process(self, row):
        self._in.inc()
        if not isinstance(row, Mapping):
            reason = f"expected a row (dict), got {type(row).__name__}"
        elif self._validate:
            reason = _record_error(row, self._fields, "", self._ignore_unknown)
        else:
            reason = None
        if reason is None:
            yield row
            return
        self._dead.inc()
        if isinstance(row, Mapping):
            source, position = self._origin(row) if self._origin else (self._table, None)
            raw = raw_text(dict(row))
        else:
            source, position, raw = self._table, None, repr(row)[: DeadLetter.MAX_RAW_CHARS]
        yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
            source, position, f"does not fit {self._table}: {reason}", raw, "schema"))


class _FailedRowsDoFn(beam.DoFn):
    def __init__(self, origin):
        self._origin = origin
        self._rejected = beam.metrics.Metrics.counter(metrics.WRITE, "dead_rejected")

    def process(self, failed):
        destination, row, errors = failed
        self._rejected.inc()
        yield failed_row_to_dead_letter(destination, row, errors, self._origin)


def _write_kwargs(table: str, schema: Optional[dict], method: str, create_disposition: str,
                  write_disposition: str, endpoint: Optional[BigQueryEndpoint],
                  temp_location: Optional[str], project: str) -> dict:
    from apache_beam.io.gcp.bigquery_tools import RetryStrategy

    if method not in _METHODS:
        raise UserError(f"BigQuery write method: expected one of {', '.join(_METHODS)}, got {method!r}")
    if create_disposition not in _CREATE:
        raise UserError(f"--create_disposition: expected one of {', '.join(_CREATE)}, got {create_disposition!r}")
    if write_disposition not in _WRITE:
        raise UserError(f"--write_disposition: expected one of {', '.join(_WRITE)}, got {write_disposition!r}")
    if method == STREAMING_INSERTS and write_disposition != "WRITE_APPEND":
        raise UserError(f"--write_disposition={write_disposition}: streaming inserts only append; "
                        f"use WRITE_APPEND or a bounded run (file loads)")
    kwargs: dict[str, Any] = dict(table=table, schema=schema, method=method,
                                  create_disposition=create_disposition, write_disposition=write_disposition)
    if method == STREAMING_INSERTS:
        kwargs["insert_retry_strategy"] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    if temp_location:
        kwargs["custom_gcs_temp_location"] = temp_location
    if endpoint is not None:
        endpoint.announce("writes")
        kwargs["test_client"] = _EndpointBigqueryV2(endpoint.rest, project)
        # The endpoint cannot check a gs:// staging location (load files are local paths).
        kwargs["validate"] = False
    return kwargs


def _scratch_load_dir(write_kwargs: dict, endpoint: Optional[BigQueryEndpoint]) -> Optional[str]:
    """With an endpoint (it reads local paths, not gs://) and no temp_location given, a local
    scratch folder for the load files, set into `write_kwargs`; else None."""
    if write_kwargs["method"] != FILE_LOADS or endpoint is None or write_kwargs.get("custom_gcs_temp_location"):
        return None
    path = tempfile.mkdtemp(prefix="beam_ml-bq-load-")
    write_kwargs["custom_gcs_temp_location"] = path
    return path


class _RemoveDirDoFn(beam.DoFn):
    """Deletes the scratch folder of load files once every load job has finished."""

    def __init__(self, path: str):
        self._path = path

    def process(self, unused_count):
        import shutil

        shutil.rmtree(self._path, ignore_errors=True)
        return []


def _remove_after_loads(result, path: Optional[str]) -> None:
    if path is not None:
        _ = (result.destination_load_jobid_pairs
             | "CountLoadJobs" >> beam.combiners.Count.Globally()
             | "RemoveLoadFiles" >> beam.ParDo(_RemoveDirDoFn(path)))


class WriteRowsToBigQuery(beam.PTransform):
    """Writes dict rows to a table; returns the rows that could not be written as DeadLetters.

    Every row is first checked against `schema` (`validate_row`): one that does
    not fit becomes a DeadLetter with stage 'schema' and never reaches BigQuery
    (a FILE_LOADS job would fail whole on it; a streaming insert of a bad INT64
    can fail the whole request). With STREAMING_INSERTS (unbounded or bounded
    input) rows BigQuery still rejects come back through Beam's
    `failed_rows_with_errors` (RETRY_ON_TRANSIENT_ERROR: transient errors are
    retried, permanent ones returned) as DeadLetters with stage 'bigquery'.
    FILE_LOADS (bounded runs) fails the pipeline if a load job fails.
    Counters (namespace beam_ml.metrics.WRITE): rows_in = rows written + dead_schema + dead_rejected.

    Args:
      table: ``project:dataset.table``.
      schema: the table schema (dict form; e.g. `table_schema_for(spec, ...)`); used to
        create the table (CREATE_IF_NEEDED) and to check rows. None with CREATE_NEVER:
        rows are then not checked.
      method: STREAMING_INSERTS or FILE_LOADS.
      create_disposition: CREATE_IF_NEEDED or CREATE_NEVER.
      write_disposition: WRITE_APPEND (WRITE_TRUNCATE and WRITE_EMPTY with FILE_LOADS).
      endpoint: an emulator or private endpoint, or None for Google's.
      origin: maps a row to the (source, position) of the record it came from, for its
        dead letter; default: the table.
      temp_location: FILE_LOADS staging folder (default: Beam's --temp_location; with
        an endpoint, a local scratch folder).
      validate: check rows against the schema first (disable only to test BigQuery's
        own rejections).
      ignore_unknown_columns: accept (and drop) fields the table does not have.
      project: the project of a table spec without one.
    """

    def __init__(self, table: str, schema: Optional[Mapping[str, Any]], method: str = STREAMING_INSERTS,
                 create_disposition: str = "CREATE_IF_NEEDED", write_disposition: str = "WRITE_APPEND",
                 endpoint: Optional[BigQueryEndpoint] = None,
                 origin: Optional[Callable[[Mapping[str, Any]], tuple[str, Optional[int]]]] = None,
                 temp_location: Optional[str] = None, validate: bool = True,
                 ignore_unknown_columns: bool = False, project: Optional[str] = None,
                 flag: str = "--output_table"):
        super().__init__()
        p, d, t = parse_table(table, flag, project)
        self._table = f"{p}:{d}.{t}"
        if schema is None and create_disposition == "CREATE_IF_NEEDED":
            raise UserError(f"{flag}: creating {self._table} needs a schema")
        # BigQuery gets the schema as given; rows are checked against its canonical form.
        self._schema = {"fields": schema_fields(schema, canonical=False)} if schema is not None else None
        self._origin = origin
        self._validate = validate and schema is not None
        self._ignore_unknown = ignore_unknown_columns
        self._write_kwargs = _write_kwargs(self._table, self._schema, method, create_disposition,
                                           write_disposition, endpoint, temp_location, p)
        self._scratch = _scratch_load_dir(self._write_kwargs, endpoint)
        if ignore_unknown_columns:
            self._write_kwargs["ignore_unknown_columns"] = True
        self._method = method

    def expand(self, rows):
        from apache_beam.io.gcp.bigquery import WriteToBigQuery

        checked = rows | "CheckRows" >> beam.ParDo(
            _CheckRowsDoFn(self._schema, self._table, self._origin, self._ignore_unknown, self._validate)
        ).with_outputs(DEAD_TAG, main="rows")
        result = checked.rows | "WriteToBigQuery" >> WriteToBigQuery(**self._write_kwargs)
        if self._method != STREAMING_INSERTS:
            _remove_after_loads(result, self._scratch)
            return checked[DEAD_TAG]
        rejected = result.failed_rows_with_errors | "RejectedRows" >> beam.ParDo(_FailedRowsDoFn(self._origin))
        return (checked[DEAD_TAG], rejected) | "DeadLetters" >> beam.Flatten()


class _DeadLetterRowsDoFn(beam.DoFn):
    def __init__(self, from_kafka: bool, clock: Callable[[], float]):
        self._from_kafka = from_kafka
        self._clock = clock

    def process(self, dead: DeadLetter):
        yield dead_letter_row(dead, self._clock(), self._from_kafka)


class _FailOnRejectedDeadLetterDoFn(beam.DoFn):
    """A dead letter the dead-letter table refuses has nowhere else to go: fail loudly."""

    def process(self, failed):
        destination, row, errors = failed
        raise RuntimeError(f"the dead-letter table {destination} rejected a dead letter "
                           f"({_insert_errors_text(errors)}): {raw_text(dict(row))[:500]}")


class WriteDeadLettersToBigQuery(beam.PTransform):
    """Writes DeadLetters to a dead-letter table with `DEAD_LETTER_SCHEMA` (Google's columns + ours).

    The table is created if needed. A dead letter the table itself rejects fails
    the pipeline (it would otherwise be lost).

    Args:
      table: ``project:dataset.table`` (Google's default name: ``<output table>_error_records``).
      from_kafka: the dead letters' sources are Kafka ``topic/partition`` (fills
        source_topic, partition, offset).
      method: STREAMING_INSERTS (default) or FILE_LOADS (bounded runs).
      endpoint: an emulator or private endpoint, or None for Google's.
      clock: the timestamp source (epoch seconds), for tests.
      temp_location, project: as for WriteRowsToBigQuery.
    """

    def __init__(self, table: str, from_kafka: bool = False, method: str = STREAMING_INSERTS,
                 endpoint: Optional[BigQueryEndpoint] = None, clock: Callable[[], float] = time.time,
                 temp_location: Optional[str] = None, project: Optional[str] = None,
                 flag: str = "--dead_letter_table"):
        super().__init__()
        p, d, t = parse_table(table, flag, project)
        self._from_kafka = from_kafka
        self._clock = clock
        self._method = method
        self._write_kwargs = _write_kwargs(f"{p}:{d}.{t}", DEAD_LETTER_SCHEMA, method, "CREATE_IF_NEEDED",
                                           "WRITE_APPEND", endpoint, temp_location, p)
        self._scratch = _scratch_load_dir(self._write_kwargs, endpoint)

    def expand(self, dead):
        from apache_beam.io.gcp.bigquery import WriteToBigQuery

        result = (dead
                  | "ToDeadLetterRows" >> beam.ParDo(_DeadLetterRowsDoFn(self._from_kafka, self._clock))
                  | "WriteDeadLetters" >> WriteToBigQuery(**self._write_kwargs))
        if self._method == STREAMING_INSERTS:
            _ = result.failed_rows_with_errors | "FailOnRejected" >> beam.ParDo(_FailOnRejectedDeadLetterDoFn())
        else:
            _remove_after_loads(result, self._scratch)
        return result


# -------------------------------------------------------------------- endpoint clients
def endpoint_client(endpoint: str, project: str):
    """A google-cloud-bigquery Client for an emulator or private endpoint (no credentials)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


class _EndpointBigqueryV2(BigqueryV2):
    """Beam's apitools BigQuery client at an endpoint, usable as WriteToBigQuery's test_client.

    Beam calls `insert_rows_json` on its client for streaming inserts (its
    production client is google-cloud-bigquery's), so this adds it, delegating
    to a google-cloud-bigquery Client at the same endpoint. It pickles as
    (endpoint, project), so every worker builds its own connections.
    """

    def __init__(self, endpoint: str, project: str):
        super().__init__(url=endpoint.rstrip("/") + "/bigquery/v2/", credentials=None,
                         get_credentials=False, response_encoding="utf8")
        self._beam_ml_endpoint = (endpoint, project)
        self._gcp_client = None
        # Beam's FILE_LOADS auto-sharding reads its clock from a test client.
        self.test_clock = time.time

    def __reduce__(self):
        return _EndpointBigqueryV2, self._beam_ml_endpoint

    def insert_rows_json(self, table, json_rows, **kwargs):
        if self._gcp_client is None:
            self._gcp_client = endpoint_client(*self._beam_ml_endpoint)
        return self._gcp_client.insert_rows_json(table, json_rows, **kwargs)


def _storage_read_client(storage: str):
    """A BigQuery Storage Read client over a plain (insecure) gRPC channel to HOST:PORT."""
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    channel = grpc.insecure_channel(storage, options=[("grpc.max_receive_message_length", -1),
                                                      ("grpc.max_send_message_length", -1)])
    return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


class _StorageModule:
    """Stands in for Beam's `bq_storage` module: the same types, a read client at the endpoint."""

    def __init__(self, real, storage: str):
        self._real = real
        self._storage = storage

    def __getattr__(self, name):
        return getattr(self._real, name)

    def BigQueryReadClient(self, *unused_args, **unused_kwargs):  # noqa: N802 (Beam's name)
        return _storage_read_client(self._storage)


# The environment variable that carries --bigquery_endpoint to worker subprocesses.
ENDPOINT_ENV = "BEAM_ML_BIGQUERY_ENDPOINT"
_ORIGINALS: dict = {}


def use_endpoint(endpoint: BigQueryEndpoint, project: str = "beam-ml") -> None:
    """Redirects Beam's BigQuery read clients in this process, and its worker subprocesses, to `endpoint`.

    Beam's `ReadFromBigQuery` builds its clients itself (an apitools client from
    `BigQueryWrapper._bigquery_client`, a Storage Read client from
    `bq_storage.BigQueryReadClient()`) and takes none from the caller; these two
    factories are replaced, and the endpoint is put in the environment, where
    worker subprocesses started later (they import this module through
    --beam_plugins) find it. `clear_endpoint` undoes it. Only an explicit
    --bigquery_endpoint calls this.
    """
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    if not _ORIGINALS:
        _ORIGINALS["client"] = bigquery_tools.BigQueryWrapper.__dict__["_bigquery_client"]
        _ORIGINALS["storage"] = beam_bigquery.bq_storage
    rest = endpoint.rest

    def _bigquery_client(unused_pipeline_options=None):
        return _EndpointBigqueryV2(rest, project)

    bigquery_tools.BigQueryWrapper._bigquery_client = staticmethod(_bigquery_client)
    if endpoint.storage:
        beam_bigquery.bq_storage = _StorageModule(_ORIGINALS["storage"], endpoint.storage)
    os.environ[ENDPOINT_ENV] = json.dumps({"rest": endpoint.rest, "storage": endpoint.storage, "project": project})


def clear_endpoint() -> None:
    """Undoes `use_endpoint`: Beam's own BigQuery clients again."""
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    if _ORIGINALS:
        bigquery_tools.BigQueryWrapper._bigquery_client = _ORIGINALS.pop("client")
        beam_bigquery.bq_storage = _ORIGINALS.pop("storage")
    os.environ.pop(ENDPOINT_ENV, None)


def _use_endpoint_from_environment() -> None:
    """In a worker subprocess of a pipeline run with --bigquery_endpoint: redirect its clients too."""
    text = os.environ.get(ENDPOINT_ENV)
    if not text:
        return
    try:
        d = json.loads(text)
        use_endpoint(BigQueryEndpoint(d["rest"], d.get("storage")), d.get("project") or "beam-ml")
    except (ValueError, KeyError, TypeError, UserError) as e:
        _LOGGER.error("ignoring malformed %s=%r: %s", ENDPOINT_ENV, text, e)


_use_endpoint_from_environment()

