"""Reading a BigQuery table (or a standard-SQL query) as typed RecordBatches plus dead letters.

    rows, dead = (p | ReadFromBigQueryBatches(spec, table="proj:ds.tx")).values()
    rows, dead = (p | ReadFromBigQueryBatches(spec, query="SELECT * FROM ds.tx WHERE amount > 0")).values()
    # at an emulator: the job first redirects Beam's read clients (beam_ml.io.bigquery.endpoint)
    use_endpoint(endpoint, options=p.options)
    rows, dead = (p | ReadFromBigQueryBatches(spec, table="test:ds.tx", endpoint=endpoint)).values()

Reads use `ReadFromBigQuery(method=DIRECT_READ)` (the Storage Read API; queries
with `use_standard_sql=True`). BigQuery rows have no line number, so a row's
identity (`LINE_COLUMN`, and a dead letter's position) is `row_fingerprint(row)`,
a 63-bit hash of its values: the same row always gets the same id, whatever the
stream layout, runner or worker count (so the train/eval split is stable).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from typing import Any, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.formats import cell_text
from beam_ml.io.batches import LINE_COLUMN, ChunkEmitter, ChunkResult, as_list_array
from beam_ml.io.bigquery.endpoint import BigQueryEndpoint, endpoint_client, endpoint_in_use
from beam_ml.io.bigquery.schema import _table_spec, _wanted_columns
from beam_ml.io.csv import parse_csv_chunk
from beam_ml.records import raw_text
from beam_ml.spec import DatasetSpec


# ------------------------------------------------------------------------- reading
def _fingerprint(text: str, numbers: bytes = b"") -> int:
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8)
    if numbers:
        h.update(b"\0" + numbers)
    return int.from_bytes(h.digest(), "big") >> 1


_NUMBER_TYPES = (float, int)  # exact types: bool is not a number here (it becomes "1"/"0" text)


def _text_cells(values: list) -> list[str]:
    """`cell_text` over a non-numeric column, with a fast path for plain strings."""
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
            if not endpoint_in_use(self._endpoint):
                # Beam's read clients take no endpoint: the job redirects them, on purpose, before building.
                raise ValueError(f"Beam's BigQuery read clients are not redirected to {self._endpoint.rest}: call "
                                 "beam_ml.io.bigquery.use_endpoint(endpoint, options=pipeline.options) first")
            self._endpoint.announce("reads")
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
