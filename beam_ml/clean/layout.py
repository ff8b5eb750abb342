"""A --sql statement between a reader and a model: events typed in, the model's layout out, as Beam steps.

    fn = CleanToLayoutFn(cleaning, read_spec, with_label=False, source=path)  # events batch -> model layout + dead
    read = CleanCsvSource(pattern, spec, cleaning)        # training: CSV read + statement, 'rows' + DEAD_TAG
    fn = CleanEventBatchesFn(spec, cleaning)              # streaming: one poll of Kafka records -> a RowBatch

The flow of every pipeline: the input is read as `events` (numeric columns
float64, every other column a string, nulls for missing values: the input as
the reader typed it, the same for a CSV file and for JSON events), the
statement runs on Arrow batches (`ApplySqlFn`: rows filtered by WHERE or an
INNER JOIN are counted in SQL/rows_filtered, rows the statement fails on are
'sql' dead letters), and its output is converted to the model spec's layout
(`beam_ml.io.batches.arrow_schema_for`) with the reader's checks (a word in a
numeric column, an unknown label: 'validate' dead letters naming the file and
line or the topic/partition and offset).

Which statement a job applies (the model's stored one, or --sql) and how
training infers its spec from the statement's output: `beam_ml.jobs.sql`.
"""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml import metrics
from beam_ml.clean.cleaning import Cleaning
from beam_ml.clean.transform import ApplySqlFn
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.formats import kafka_dead_letter
from beam_ml.inference.batches import RowBatch
from beam_ml.inference.events import event_format, event_row
from beam_ml.ingest.values import IngestSchema, json_values_to_table, records_to_table
from beam_ml.io.batches import LINE_COLUMN, arrow_schema_for, as_list_array, input_read_spec
from beam_ml.io.csv import ReadCsvBatches
from beam_ml.records import RowRef, raw_text
from beam_ml.spec import ColumnSpec, DatasetSpec, NUMBER_RE, _numeric_fraction, _read_strings, read_header

__all__ = ["events_schema_for_csv", "raw_read_spec", "events_from_read_batch", "to_model_layout",
           "CleanToLayoutFn", "CleanCsvSource", "CleanEventBatchesFn", "events_schema_for_spec", "strings_for_csv",
           "sample_events", "output_rows", "SOURCE_COLUMN"]

_LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------- events typing
def events_schema_for_csv(path: str, dialect, na_values: Sequence[str], sample_rows: int = 20000) -> pa.Schema:
    """The `events` schema of a CSV file: float64 where >= 98% of a sample are numbers, else string; + __line__."""
    header = read_header(path, dialect)
    if LINE_COLUMN in header:
        raise UserError(f"--input: {path} has a column named {LINE_COLUMN}, which beam_ml reserves")
    sample = _read_strings(path, header, na_values, sample_rows, dialect=dialect)
    fields = [pa.field(name, pa.float64() if _numeric_fraction(sample.column(name)) >= 0.98 else pa.string())
              for name in header]
    return pa.schema(fields + [pa.field(LINE_COLUMN, pa.int64())])


def events_schema_for_spec(spec: DatasetSpec) -> pa.Schema:
    """Events typed by a spec without a stored statement: numeric -> float64, other roles -> string; + __line__."""
    return pa.schema([pa.field(c.name, pa.float64() if c.role == "numeric" else pa.string()) for c in spec.columns]
                     + [pa.field(LINE_COLUMN, pa.int64())])


def raw_read_spec(events_schema: pa.Schema, dialect, na_values: Sequence[str]) -> DatasetSpec:
    """A spec that makes ReadCsvBatches read every events column as text (typed afterwards, as events)."""
    columns = [ColumnSpec(f.name, "categorical") for f in events_schema if f.name != LINE_COLUMN]
    # No label is read (with_label=False): the placeholder only satisfies the dataclass.
    return DatasetSpec(columns=columns, task="binary", label="\x00", label_classes=["0", "1"],
                       na_values=list(na_values), dialect=dialect)


def _to_float(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Text -> numbers (null where missing); and a mask of the values that are not numbers."""
    try:
        return pc.cast(col, typ), np.zeros(len(col), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = pc.fill_null(pc.match_substring_regex(col, NUMBER_RE), True).to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(col), pa.scalar(None, pa.string()))
    return pc.cast(cleaned, typ), ~ok


def events_from_read_batch(batch: pa.RecordBatch, events_schema: pa.Schema) -> tuple[pa.Table, list]:
    """A ReadCsvBatches batch of `raw_read_spec` -> (events table, [(row, reason)] of rows left out)."""
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    arrays = []
    for f in events_schema:
        if f.name == LINE_COLUMN:
            arrays.append(batch.column(LINE_COLUMN))
            continue
        text = pc.cast(batch.column(f.name).flatten(), pa.string())
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        if pa.types.is_string(f.type):
            arrays.append(text)
            continue
        values, not_numbers = _to_float(text, f.type)
        for i in np.flatnonzero(not_numbers):
            bad[i] = True
            reasons.setdefault(int(i), f"column '{f.name}': expected a number, got {text[int(i)].as_py()!r}")
        arrays.append(values)
    table = pa.Table.from_arrays(arrays, schema=events_schema)
    if bad.any():
        table = table.filter(pa.array(~bad))
    return table, sorted(reasons.items())


# ----------------------------------------------------------------- output -> model layout
def to_model_layout(table: pa.Table, spec: DatasetSpec, with_label: bool) -> tuple[pa.RecordBatch, list]:
    """The statement's output -> a batch in `arrow_schema_for(spec, with_label)`'s layout, checked as the reader does.

    Numeric columns become float32 (NaN where missing), categorical ones bytes
    ("" where missing), the label text (checked against label_classes when
    `with_label`), the key text. Returns (batch of the good rows, [(row, reason)]).
    """
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, list[str]] = {}
    flat: dict[str, pa.Array] = {}
    names = set(table.column_names)
    for c in spec.columns:
        if c.name not in names or c.role in ("drop", "mask") or (c.role == "label" and not with_label):
            continue
        col = table.column(c.name).combine_chunks() if n else pa.array([], table.schema.field(c.name).type)
        t = col.type
        if c.role == "numeric":
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                values, not_numbers = _to_float(col, pa.float32())
                for i in np.flatnonzero(not_numbers):
                    bad[i] = True
                    reasons.setdefault(int(i), []).append(
                        f"column '{c.name}': expected a number, got {col[int(i)].as_py()!r}")
            else:
                values = pc.cast(col, pa.float32(), safe=False)
            flat[c.name] = pc.fill_null(values, np.float32("nan")) if values.null_count else values
        else:
            text = col if pa.types.is_string(t) else pc.cast(col, pa.string())
            if c.role == "label":
                known = pc.fill_null(pc.is_in(text, value_set=pa.array(spec.label_classes)), False)
                for i in np.flatnonzero(~known.to_numpy(zero_copy_only=False)):
                    v = text[int(i)].as_py()
                    bad[i] = True
                    reasons.setdefault(int(i), []).append(
                        f"column '{c.name}': missing label" if v is None else
                        f"column '{c.name}': unknown label {v!r}, expected one of {spec.label_classes}")
            text = pc.fill_null(text, "") if text.null_count else text
            flat[c.name] = text if c.role == "key" else pc.cast(text, pa.binary())
    flat[LINE_COLUMN] = table.column(LINE_COLUMN).combine_chunks() if n else pa.array([], pa.int64())
    if bad.any():
        keep = pa.array(~bad)
        flat = {k: pc.filter(v, keep) for k, v in flat.items()}
    schema = arrow_schema_for(spec, with_label)
    missing = [f.name for f in schema if f.name not in flat]
    if missing:
        raise ValueError(f"the statement's output lacks column(s) {missing} of the spec")
    arrays = [flat[f.name] if not pa.types.is_list(f.type) else as_list_array(flat[f.name]) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema), [(i, "; ".join(r)) for i, r in sorted(reasons.items())]


def strings_for_csv(table: pa.Table) -> pa.Table:
    """Every column as text, as `to_model_layout` reads values (spec inference over the statement's output)."""
    return pa.table({name: pc.cast(table.column(name), pa.string()) for name in table.column_names})


# ----------------------------------------------------------------- the Beam step
class _NotCounted:
    def inc(self, n: int = 1) -> None:
        pass


_NOT_COUNTED = _NotCounted()


class CleanToLayoutFn(beam.DoFn):
    """Events -> statement -> model layout, in one step per batch; dead letters tagged DEAD_TAG.

    Input: a ReadCsvBatches batch of `raw_read_spec` (from_read=True) or an
    events table/batch (with __line__, and `source_column` if given).
    Output: RecordBatches in `arrow_schema_for(spec, with_label)`'s layout.
    """

    def __init__(self, cleaning: Cleaning, spec: DatasetSpec, with_label: bool, source: str = "",
                 from_read: bool = True, source_column: Optional[str] = None, counted: bool = True):

        self._events = cleaning.statement.events_schema
        self._spec = spec
        self._with_label = with_label
        self._source = source
        self._from_read = from_read
        self._mask = list(spec.mask_columns)
        self._source_column = source_column
        self._sql = ApplySqlFn(cleaning.statement, cleaning.lookups, source=source, source_column=source_column,
                               refresh_seconds=cleaning.refresh_seconds, mask_columns=self._mask,
                               clock=time.monotonic)
        if not counted:  # a second pass over the same rows (training's transform pass): count them once
            for name in ("_rows_in", "_rows_out", "_filtered", "_dead", "_refreshes", "_bad_lookup",
                         "_refresh_errors"):
                setattr(self._sql, name, _NOT_COUNTED)

    def setup(self):
        self._sql.setup()

    def teardown(self):
        self._sql.teardown()

    def _row_dead(self, table: pa.Table, i: int, reason: str, source: str, stage: str) -> DeadLetter:
        row = {k: v for k, v in table.slice(i, 1).to_pylist()[0].items() if k != LINE_COLUMN}
        return DeadLetter(source, int(table.column(LINE_COLUMN)[i].as_py()), reason, raw_text(row, self._mask),
                          stage=stage)

    def clean(self, events: pa.Table, source: str = ""):
        """Generator: yields dead letters (TaggedOutput), returns the model-layout batch (or None)."""
        source = source or self._source
        table = yield from self.run_sql(events, source)
        if table is None:
            return None
        batch, bad = to_model_layout(table, self._spec, self._with_label)
        for i, reason in bad:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, self._row_dead(table, i, reason, source, "validate"))
        return batch if batch.num_rows else None

    def run_sql(self, events: pa.Table, source: str = ""):
        """Generator: yields the statement's dead letters (TaggedOutput), returns its output table (or None)."""
        source = source or self._source
        if self._source_column:
            events = events.append_column(self._source_column, pa.array([source] * events.num_rows, pa.string()))
        out = []
        for item in self._sql.process(events.combine_chunks().to_batches()[0] if events.num_rows else
                                      pa.RecordBatch.from_pylist([], schema=events.schema)):
            if isinstance(item, beam.pvalue.TaggedOutput):
                yield item
            else:
                out.append(item)
        if not out:
            return None
        return pa.Table.from_batches(out)

    def process(self, batch):
        if self._from_read:
            events, bad = events_from_read_batch(batch, self._events)
            if bad:
                full = pa.Table.from_batches([batch])
                for i, reason in bad:
                    line = int(full.column(LINE_COLUMN)[i].as_py())
                    row = {f: (v[0] if isinstance(v, list) and v else None)
                           for f, v in full.slice(i, 1).to_pylist()[0].items() if f != LINE_COLUMN}
                    row = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in row.items()}
                    yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(self._source, line, reason,
                                                                        raw_text(row, self._mask), stage="validate"))
        else:
            events = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if events.num_rows == 0:
            return
        result = yield from self.clean(events)
        if result is not None:
            yield result


class CleanCsvSource(beam.PTransform):
    """CSV files read as events, cleaned by the statement, in the model spec's layout: 'rows' + DEAD_TAG.

    The `source=` of `beam_ml.preprocess.build_preprocess` (training with --sql).
    """

    def __init__(self, pattern: str, spec: DatasetSpec, cleaning: Cleaning, chunk_bytes: Optional[int] = None,
                 with_label: bool = True, counted: bool = True):
        super().__init__()
        self._counted = counted
        self._pattern = pattern
        self._spec = spec
        self._cleaning = cleaning
        self._chunk_bytes = chunk_bytes
        self._with_label = with_label

    def expand(self, pbegin):
        events = self._cleaning.statement.events_schema
        read_spec = raw_read_spec(events, self._spec.dialect, self._spec.na_values)
        kwargs = {"chunk_bytes": self._chunk_bytes} if self._chunk_bytes else {}
        read = pbegin | "ReadCsvEvents" >> ReadCsvBatches(self._pattern, read_spec, with_label=False,
                                                          validate=self._counted, counted=self._counted, **kwargs)
        cleaned = read["rows"] | "CleanWithSql" >> beam.ParDo(CleanToLayoutFn(
            self._cleaning, self._spec, self._with_label, source=self._pattern,
            counted=self._counted)).with_outputs(DEAD_TAG, main="rows")
        dead = (read[DEAD_TAG], cleaned[DEAD_TAG]) | "FlattenSqlDead" >> beam.Flatten()
        return {"rows": cleaned["rows"], DEAD_TAG: dead}

    def again(self) -> "CleanCsvSource":
        """The same rows read and cleaned again, uncounted (for the transform pass)."""
        return CleanCsvSource(self._pattern, self._spec, self._cleaning, self._chunk_bytes, self._with_label,
                              counted=False)


# ----------------------------------------------------------------- training
def sample_events(path: str, events_schema: pa.Schema, dialect, na_values, rows: int) -> pa.Table:
    header = read_header(path, dialect)
    text = _read_strings(path, header, na_values, rows, dialect=dialect)
    arrays = []
    keep = np.ones(text.num_rows, dtype=bool)
    for f in events_schema:
        if f.name == LINE_COLUMN:
            arrays.append(pa.array(np.arange(2, text.num_rows + 2, dtype=np.int64)))
            continue
        col = text.column(f.name).combine_chunks()
        if pa.types.is_string(f.type):
            arrays.append(col)
        else:
            values, bad = _to_float(col, f.type)
            keep &= ~bad
            arrays.append(values)
    return pa.Table.from_arrays(arrays, schema=events_schema).filter(pa.array(keep))


# ----------------------------------------------------------------- streaming
SOURCE_COLUMN = "__source__"


class CleanEventBatchesFn(beam.DoFn):
    """list[KafkaRecord] (one poll) -> one RowBatch cleaned by the statement + dead letters (DEAD_TAG).

    Replaces ParseEventBatchesFn when a statement applies: each record is
    parsed ('parse' dead letters), typed into the events schema ('validate'),
    the poll's rows of each partition go through the statement at once ('sql';
    filtered rows counted), and the output is checked against the model's spec
    ('validate') and turned into the rows the model scores, keeping each
    record's RowRef (topic/partition, offset, event id, timestamps).
    """

    def __init__(self, spec: DatasetSpec, cleaning: Cleaning, id_field: str = "event_id",
                 value_format="json"):

        events = cleaning.statement.events_schema
        self._spec = spec
        self._read_spec = input_read_spec(spec, cleaning.statement.columns)
        self._with_label = spec.label in cleaning.statement.columns
        self._parse_spec = raw_read_spec(events, spec.dialect, spec.na_values) if value_format == "csv" else spec
        self._id_field = id_field
        self._value_format = event_format(value_format, self._parse_spec)
        flat = events.remove(events.get_field_index(LINE_COLUMN))
        self._schema = IngestSchema(flat, (), tuple(spec.na_values), tuple(spec.mask_columns))
        # The fast path (Arrow's C++ JSON reader) reads the event id and produce_ts too, when they are not columns.
        extra = [pa.field(n, t) for n, t in ((id_field, pa.string()), ("produce_ts", pa.int64()))
                 if n not in flat.names]
        self._fast_schema = IngestSchema(pa.schema(list(flat) + extra), (), (), tuple(spec.mask_columns))
        self._text_columns = [f.name for f in flat if pa.types.is_string(f.type)]
        self._na = pa.array(sorted(set(spec.na_values) | {""}), pa.string())
        self._clean = CleanToLayoutFn(cleaning, self._read_spec, with_label=False, from_read=False,
                                      source_column=SOURCE_COLUMN)

        self._in = beam.metrics.Metrics.counter(metrics.PREDICT, "rows_in")

    def setup(self):
        self._clean.setup()

    def teardown(self):
        self._clean.teardown()

    def _rows(self, table: pa.Table, source: str):
        """Generator: yields 'validate' dead letters, returns (positions, rows) of the statement's output."""
        positions, rows, bad = output_rows(table, self._read_spec)
        for i, reason in bad:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, self._clean._row_dead(table, i, reason, source, "validate"))
        return positions, rows

    def _fast(self, records) -> Optional[tuple[pa.Table, list]]:
        """One partition's JSON records typed by Arrow in C++ (no per-record parse), or None (take the slow path)."""
        if self._value_format.name != "json":
            return None
        table = json_values_to_table([r.value for r in records], self._fast_schema)
        if table is None:
            return None
        for name in self._text_columns:  # NA texts are missing values, as in the CSV reader and the slow path
            col = table.column(name)
            table = table.set_column(table.schema.get_field_index(name), name, pc.if_else(
                pc.fill_null(pc.is_in(col, value_set=self._na), False), pa.scalar(None, pa.string()), col))
        ids = table.column(self._id_field).to_pylist()
        if any(i is None for i in ids):
            key_col = self._spec.key_column
            keys = table.column(key_col).to_pylist() if key_col and key_col in table.column_names else None
            ids = [i if i is not None else (str(keys[j]) if keys and keys[j] is not None else None)
                   for j, i in enumerate(ids)]
        produce = table.column("produce_ts").to_pylist() if "produce_ts" in table.column_names else None
        refs = []
        for j, r in enumerate(records):
            key = r.key.decode("utf-8", "replace") if r.key is not None else None
            event_id = ids[j]
            if event_id is None:
                event_id = key if key is not None else f"{r.topic}/{r.partition}/{r.offset}"
            carry = [("key", key), ("event_ts", int(r.timestamp))]
            if produce is not None and produce[j] is not None:
                carry.append(("produce_ts", produce[j]))
            refs.append(RowRef(f"{r.topic}/{r.partition}", int(r.offset), str(event_id), tuple(carry)))
        return table.select(self._schema.names), refs

    def process(self, records):
        self._in.inc(len(records))
        refs, rows = [], []
        by_partition: dict[tuple, list] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        if len(by_partition) == 1:
            fast = self._fast(records)
            if fast is not None:
                table, fast_refs = fast
                source = fast_refs[0].source
                by_position = {ref.position: ref for ref in fast_refs}
                table = table.append_column(LINE_COLUMN, pa.array([ref.position for ref in fast_refs], pa.int64()))
                output = yield from self._clean.run_sql(table, source)
                if output is not None:
                    out_refs, out_rows = yield from self._rows(output, source)
                    if out_rows:
                        yield RowBatch([by_position[p] for p in out_refs], out_rows)
                return
        groups: dict[str, list] = {}
        for record in records:
            try:
                ref, row = event_row(record, self._parse_spec, self._id_field, self._value_format)
            except ValueError as e:
                yield beam.pvalue.TaggedOutput(DEAD_TAG, kafka_dead_letter(record, str(e), self._value_format))
                continue
            groups.setdefault(ref.source, []).append((ref, row))
        for source, group in groups.items():
            table, kept, errors = records_to_table([row for _, row in group], self._schema)
            for i, reason in errors:
                ref, row = group[i]
                yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                    source, ref.position, reason, raw_text(row, self._spec.mask_columns), stage="validate"))
            if not table.num_rows:
                continue
            by_position = {group[k][0].position: group[k][0] for k in kept}
            table = table.append_column(LINE_COLUMN, pa.array([group[k][0].position for k in kept], pa.int64()))
            output = yield from self._clean.run_sql(table, source)
            if output is None:
                continue
            positions, out_rows = yield from self._rows(output, source)
            refs.extend(by_position[p] for p in positions)
            rows.extend(out_rows)
        if rows:
            yield RowBatch(refs, rows)


def output_rows(table: pa.Table, spec: DatasetSpec) -> tuple[list[int], list[dict], list[tuple[int, str]]]:
    """(positions, row dicts of the model's features, [(row, reason)] left out) of the statement's output.

    The streaming hot path's shortcut of `to_model_layout` + `beam_ml.jobs.batch_predict.batch_to_rows`, with the
    same values (numbers as floats, missing values None, categories as text) and the same checks.
    """
    names, columns = [], []
    bad = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    for c in spec.columns:
        if c.role not in ("numeric", "categorical"):
            continue
        col = table.column(c.name).combine_chunks()
        if c.role == "numeric":
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                col, not_numbers = _to_float(col, pa.float64())
                for i in np.flatnonzero(not_numbers):
                    bad[i] = True
                    reasons.setdefault(int(i), f"column '{c.name}': expected a number, got "
                                               f"{table.column(c.name)[int(i)].as_py()!r}")
            elif not pa.types.is_floating(col.type):
                col = pc.cast(col, pa.float64(), safe=False)
            values = col.to_numpy(zero_copy_only=False)
            values = values.tolist() if not col.null_count and not np.isnan(values).any() else \
                [None if v is None or v != v else v for v in col.to_pylist()]
        else:
            text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
            values = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).to_pylist()
        names.append(c.name)
        columns.append(values)
    rows = [dict(zip(names, v)) for v in zip(*columns)] if columns else [{} for _ in range(table.num_rows)]
    positions = table.column(LINE_COLUMN).to_pylist()
    if bad.any():
        keep = np.flatnonzero(~bad)
        rows = [rows[i] for i in keep]
        positions = [positions[i] for i in keep]
    return positions, rows, sorted(reasons.items())
