"""Runs a prepared `Statement` on Arrow batches: one DuckDB connection, exact accounting.

    engine = Engine(stmt, lookups={"users": users_table})   # in DoFn.setup()
    result = engine.run(batch, source="data/fraud.csv")      # per RecordBatch
    result.table        # the statement's rows (+ the position column), input order
    result.filtered     # rows dropped by WHERE or an INNER JOIN (counted, not dead)
    result.dead         # DeadLetters: the rows the statement failed on, with DuckDB's message
    engine.close()                                           # in DoFn.teardown()

rows in = rows out + filtered + dead holds for every batch: a hidden row
number rides through the query, so each output row names its input row.
When DuckDB fails on a batch (a cast, malformed JSON, an error() a ksqlDB
function raises), the batch is split in halves and each half retried, down to
single rows: only the rows that fail become dead letters, each with the
engine's message, after O(k log n) queries for k bad rows in n (retrying
every row alone would cost n queries of 1-3 ms each).

Lookups keep their latest row per key (`set_lookup`): a lookup is a ksqlDB
table, so an event matches at most one row. A join on a key column is an
Arrow key lookup (`pyarrow.compute.index_in`) before the query; a join on an
expression is left to DuckDB, with the lookup as a DuckDB table.

Where the time goes, and what avoids it: the statement is bound once (the
batch is swapped under a registered Arrow stream); columns selected as they
are, lookup columns, and MASK functions of an input column with literal
arguments never enter DuckDB -- the engine takes them by row number, which
saves a copy in and out per column.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.clean.masking import mask_strings
from beam_ml.clean.statement import EVENTS, ROW_COLUMN, Statement, connect, engine_message, hidden_column
from beam_ml.errors import DeadLetter
from beam_ml.records import raw_text

__all__ = ["Engine", "CleanResult", "latest_per_key", "STAGE"]

_LOGGER = logging.getLogger(__name__)

# DeadLetter.stage of rows a statement failed on.
STAGE = "sql"


@dataclasses.dataclass
class CleanResult:
    """The outcome of one batch: rows_in == table.num_rows + filtered + len(dead)."""

    table: pa.Table
    filtered: int
    dead: list[DeadLetter]
    rows_in: int

    @property
    def rows_out(self) -> int:
        return self.table.num_rows


def latest_per_key(table: pa.Table, key: str) -> tuple[pa.Table, int]:
    """The last row of each non-null key, in first-seen order; and how many rows that dropped.

    A ksqlDB table holds the latest value per key, so a lookup read from a file
    or a changelog keeps its last row per key (and a NULL key never joins).
    """
    if table.num_rows == 0:
        return table, 0
    keys = table.column(key)
    order = pa.array(np.arange(table.num_rows, dtype=np.int64))
    t = pa.table({"k": keys, "i": order}).filter(pc.is_valid(keys))
    last = t.group_by("k", use_threads=False).aggregate([("i", "max")]).column("i_max")
    idx = pc.sort_indices(last)
    taken = table.take(pc.take(last, idx))
    return taken, table.num_rows - taken.num_rows


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type both join keys cast to exactly enough (statement preparation checked their kinds match)."""
    if a == b:
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()
    if (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return pa.float64()
    return pa.string()


class _BatchStream:
    """The `events` table: an Arrow stream (PyCapsule interface) whose rows are swapped per batch.

    Registered once, so the statement is bound once and each batch only runs
    it: register + bind per batch cost 3-5 ms, more than a typical statement
    itself on 500 rows. DuckDB reads the stream afresh at every execution.
    """

    def __init__(self, schema: pa.Schema):
        self.table = schema.empty_table()

    def __arrow_c_schema__(self):
        return self.table.schema.__arrow_c_schema__()

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


class Engine:
    """One DuckDB connection running one statement over batches; not thread-safe, not picklable.

    Args:
      statement: a prepared Statement.
      lookups: name -> Arrow table for each lookup the statement joins (may be
        set later with `set_lookup`, before the first `run`).
      mask_columns: input columns whose values are masked in dead letters' raw text.
    """

    def __init__(self, statement: Statement, lookups: Optional[Mapping[str, pa.Table]] = None,
                 mask_columns: Sequence[str] = ()):
        self.statement = statement
        self._mask_columns = list(mask_columns)
        self._con = connect()
        self._events = _BatchStream(statement.query_input_schema
                                    or statement.events_schema.append(pa.field(ROW_COLUMN, pa.int64())))
        self._tables: dict[str, pa.Table] = {}  # lookups joined in Arrow (statement.joins)
        self._con.register(EVENTS, self._events)
        self._relation = None  # the bound statement, re-bound when a lookup changes
        self._loaded: set[str] = set()
        self.lookup_rows_dropped: dict[str, int] = {}
        for name, table in (lookups or {}).items():
            self.set_lookup(name, table)

    def set_lookup(self, name: str, table: pa.Table) -> None:
        """Replaces a lookup's rows (latest per key); later batches join the new rows.

        Raises:
          ValueError: the statement does not join `name`, or the table lacks its columns.
        """
        stmt = self.statement
        canonical = {n.lower(): n for n in stmt.lookup_schemas}.get(name.lower())
        if canonical is None:
            _LOGGER.info("Lookup %s is not joined by the statement; ignored", name)
            return
        schema = stmt.lookup_schemas[canonical]
        missing = [f.name for f in schema if f.name not in table.column_names]
        if missing:
            raise ValueError(f"lookup {canonical}: the table lacks column(s) {missing} of its schema")
        table = table.select(schema.names)
        if table.schema != schema:
            table = table.cast(schema)
        table, dropped = latest_per_key(table.combine_chunks(), stmt.lookup_keys[canonical])
        self.lookup_rows_dropped[canonical] = dropped
        self._loaded.add(canonical)
        if stmt.joins is not None:
            self._tables[canonical] = table
            return
        src = f"__bm_load_{canonical}"
        self._con.register(src, table)
        try:
            self._con.execute(f'CREATE OR REPLACE TEMP TABLE "{canonical}" AS SELECT * FROM "{src}"')
        finally:
            self._con.unregister(src)
        self._relation = None  # it was bound to the replaced table

    def close(self) -> None:
        if self._con is not None:
            self._relation = None
            self._con.close()
            self._con = None

    def _query(self, table: pa.Table) -> pa.Table:
        self._events.table = table
        try:
            if self._relation is None:
                self._relation = self._con.sql(self.statement.query)
            return self._relation.to_arrow_table()
        except Exception:
            self._relation = None  # bind afresh after any failure
            raise
        finally:
            self._events.table = self._events.table.schema.empty_table()

    def _run_rows(self, table: pa.Table, out: list[pa.Table], failed: list[tuple[int, str]],
                  error: Optional[Exception] = None) -> None:
        """Runs the query on `table`, halving it on failure so only failing rows are lost."""
        import duckdb  # pylint: disable=import-outside-toplevel

        if error is None:
            try:
                out.append(self._query(table))
                return
            except duckdb.Error as e:
                error = e
        if table.num_rows == 1:
            failed.append((int(table.column(ROW_COLUMN)[0].as_py()), engine_message(error)))
            return
        half = table.num_rows // 2
        self._run_rows(table.slice(0, half), out, failed)
        self._run_rows(table.slice(half), out, failed)

    def run(self, batch: Union[pa.RecordBatch, pa.Table], source: str = "",
            source_column: Optional[str] = None) -> CleanResult:
        """Applies the statement to one batch of flat rows (columns of `statement.events_schema`).

        Args:
          batch: the rows, as the reader typed them (extra columns are ignored).
          source: names where the rows came from (file, topic/partition) in dead letters.
          source_column: a column holding each row's source instead (overrides `source`).

        Returns:
          A CleanResult; its table has `statement.output_schema`, rows in input order.

        Raises:
          ValueError: the batch lacks columns of the statement's input schema.
          RuntimeError: a lookup the statement joins was never set.
        """
        stmt = self.statement
        missing_lookups = set(stmt.lookup_schemas) - self._loaded
        if missing_lookups:
            raise RuntimeError(f"lookup(s) {sorted(missing_lookups)} not set; call set_lookup first")
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        n = table.num_rows
        if n == 0:
            return CleanResult(stmt.output_schema.empty_table(), 0, [], 0)
        present = set(table.column_names)
        missing = [f.name for f in stmt.events_schema if f.name not in present]
        if missing:
            raise ValueError(f"the batch lacks column(s) {missing} of the statement's input")
        sources = table.column(source_column) if source_column else None
        table = table.select(stmt.events_schema.names)
        if table.schema != stmt.events_schema:
            table = table.cast(stmt.events_schema)
        # Many small chunks make DuckDB's scan much slower than one.
        table = table.combine_chunks().append_column(ROW_COLUMN, pa.array(np.arange(n, dtype=np.int64)))
        rows_in = table
        positions: dict[int, pa.Array] = {}
        if stmt.joins:
            table, positions = self._join(table)

        out: list[pa.Table] = []
        failed: list[tuple[int, str]] = []
        self._run_rows(table, out, failed)
        result = pa.concat_tables(out) if len(out) > 1 else out[0] if out else None
        if result is None or result.num_rows == 0:
            rows = np.empty(0, dtype=np.int64)
            result = stmt.output_schema.empty_table()
        else:
            rows = result.column(ROW_COLUMN).to_numpy()
            result = result.drop_columns([ROW_COLUMN])
            steps = np.diff(rows)
            if (steps == 0).any():  # the statement checks should make this impossible
                raise RuntimeError("the statement produced two rows from one input row")
            if (steps < 0).any():  # joins may reorder; keep the input's order
                order = np.argsort(rows, kind="stable")
                rows = rows[order]
                result = result.take(pa.array(order))
            result = self._assemble(table, rows, result, positions)
        dead = [self._dead_letter(rows_in, i, reason, source if sources is None else str(sources[i].as_py()))
                for i, reason in sorted(failed)]
        filtered = n - len(rows) - len(dead)
        return CleanResult(result, filtered, dead, n)

    def _join(self, table: pa.Table) -> tuple[pa.Table, dict[int, pa.Array]]:
        """Looks each event's key up in each lookup (Arrow); INNER misses leave the table here.

        Returns the table (with the hidden lookup columns the query reads) and,
        per join, each remaining row's index in its lookup table (null: no match).
        """
        stmt = self.statement
        positions: dict[int, pa.Array] = {}
        for i, (name, _, kind, ref, key) in enumerate(stmt.joins):
            lookup = self._tables[name]
            if ref[0] == "events":
                keys = table.column(ref[1])
            else:
                keys = self._tables[stmt.joins[ref[1]][0]].column(ref[2]).take(positions[ref[1]])
            values = lookup.column(key)
            common = _common_type(keys.type, values.type)
            pos = pc.index_in(keys.cast(common), value_set=values.cast(common).combine_chunks())
            if isinstance(pos, pa.ChunkedArray):
                pos = pos.combine_chunks()
            if kind == "INNER" and pos.null_count:
                found = pc.is_valid(pos)
                table = table.filter(found)
                positions = {j: p.filter(found) for j, p in positions.items()}
                pos = pos.filter(found)
            positions[i] = pos
        for i, col in stmt.hidden_columns:
            table = table.append_column(hidden_column(i, col),
                                        self._tables[stmt.joins[i][0]].column(col).take(positions[i]))
        return table, positions

    def _assemble(self, table: pa.Table, rows: np.ndarray, query: pa.Table,
                  positions: dict[int, pa.Array]) -> pa.Table:
        """The output: input and lookup columns taken by row number, query columns, the position column."""
        stmt = self.statement
        every_row = len(rows) == table.num_rows  # rows are sorted and unique, so this means all, in order
        if every_row:
            take = None
        else:  # row numbers -> indices in `table` (sorted by row number)
            take = pa.array(np.searchsorted(table.column(ROW_COLUMN).to_numpy(), rows))

        def from_input(name: str) -> pa.ChunkedArray:
            col = table.column(name)
            return col if take is None else col.take(take)

        columns = []
        if stmt.plan is None:
            columns = list(query.columns)
        else:
            i = 0
            for entry in stmt.plan:
                if entry[0] == "input":
                    columns.append(from_input(entry[2]))
                elif entry[0] == "mask":
                    col = from_input(entry[2])
                    columns.append(mask_strings(col, entry[3], np.full(len(col), entry[4], dtype=np.int64),
                                                entry[5]))
                elif entry[0] == "lookup":
                    pos = positions[entry[2]]
                    columns.append(self._tables[stmt.joins[entry[2]][0]].column(entry[3]).take(
                        pos if take is None else pos.take(take)))
                else:
                    columns.extend(query.column(j) for j in range(i, i + entry[1]))
                    i += entry[1]
        if stmt.position_column:
            columns.append(from_input(stmt.position_column))
        out = pa.Table.from_arrays(columns, names=stmt.output_schema.names)
        if out.schema != stmt.output_schema:
            out = out.cast(stmt.output_schema)
        return out


    def _dead_letter(self, table: pa.Table, i: int, reason: str, source: str) -> DeadLetter:
        row = {k: v for k, v in table.slice(i, 1).to_pylist()[0].items() if k != ROW_COLUMN}
        pos_col = self.statement.position_column
        position = row.get(pos_col) if pos_col else None
        return DeadLetter(source=source, position=position, reason=f"sql: {reason}",
                          raw=raw_text(row, self._mask_columns), stage=STAGE)
