"""`ApplySql`: a cleaning statement as a Beam step over Arrow RecordBatches.

    stmt = Statement.prepare(sql, events_schema, {"users": users.schema()}, position_column="__line__")
    clean, dead = (batches | "ApplySql" >> ApplySql(stmt, [users], source="fraud.csv")).values()

Each DoFn instance opens one DuckDB connection in `setup()` (threads=1) and
loads the lookups there; in streaming, lookups are refreshed every
`refresh_seconds` from `process()`, without a restart. Counters in the
`beam_ml.metrics.SQL` namespace: rows_in = rows_out + rows_filtered + dead, per batch and so
for the run; plus lookup_refreshes, lookup_bad_records and
lookup_refresh_errors (a failed refresh keeps the rows loaded last).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import apache_beam as beam
import pyarrow as pa

from beam_ml import metrics
from beam_ml.clean.engine import Engine
from beam_ml.clean.lookups import Lookup
from beam_ml.clean.statement import Statement
from beam_ml.errors import DEAD_TAG

__all__ = ["ApplySql", "ApplySqlFn"]

_LOGGER = logging.getLogger(__name__)



class ApplySqlFn(beam.DoFn):
    """RecordBatch -> the statement's RecordBatch (main) + DeadLetters (DEAD_TAG); see `ApplySql`.

    Public so a pipeline may run it inside its own step (with the same
    arguments as ApplySql); `ApplySql` is the usual way in.
    """

    def __init__(self, statement: Statement, lookups: Sequence[Lookup], source: str,
                 source_column: Optional[str], refresh_seconds: Optional[float],
                 mask_columns: Sequence[str], clock: Callable[[], float]):
        self._statement = statement
        self._lookups = list(lookups)
        self._source = source
        self._source_column = source_column
        self._refresh_seconds = refresh_seconds
        self._mask_columns = list(mask_columns)
        self._clock = clock
        self._rows_in = beam.metrics.Metrics.counter(metrics.SQL, "rows_in")
        self._rows_out = beam.metrics.Metrics.counter(metrics.SQL, "rows_out")
        self._filtered = beam.metrics.Metrics.counter(metrics.SQL, "rows_filtered")
        self._dead = beam.metrics.Metrics.counter(metrics.SQL, "dead")
        self._refreshes = beam.metrics.Metrics.counter(metrics.SQL, "lookup_refreshes")
        self._bad_lookup = beam.metrics.Metrics.counter(metrics.SQL, "lookup_bad_records")
        self._refresh_errors = beam.metrics.Metrics.counter(metrics.SQL, "lookup_refresh_errors")
        self._engine: Optional[Engine] = None

    def setup(self):
        self._engine = Engine(self._statement, mask_columns=self._mask_columns)
        joined = {n.lower() for n in self._statement.lookup_schemas}
        self._active = [lk for lk in self._lookups if lk.name.lower() in joined]
        self._bad_seen = {}
        for lookup in self._active:
            lookup.open()
            self._engine.set_lookup(lookup.name, lookup.load())
            self._count_bad(lookup)
        self._last_refresh = self._clock()

    def _count_bad(self, lookup: Lookup) -> None:
        bad = getattr(lookup, "bad_records", 0)
        new = bad - self._bad_seen.get(lookup.name, 0)
        if new:
            self._bad_lookup.inc(new)
            self._bad_seen[lookup.name] = bad

    def _maybe_refresh(self) -> None:
        if not self._refresh_seconds or self._clock() - self._last_refresh < self._refresh_seconds:
            return
        for lookup in self._active:
            try:
                table = lookup.refresh()
                if table is not None:
                    self._engine.set_lookup(lookup.name, table)
                    self._refreshes.inc()
                    _LOGGER.info("Lookup %s refreshed: %d rows", lookup.name, table.num_rows)
            except Exception as e:  # pylint: disable=broad-except
                # A file caught half-written or a broker hiccup must not stop a
                # running stream: keep joining the rows loaded last, try again later.
                self._refresh_errors.inc()
                _LOGGER.warning("Lookup %s (%s): refresh failed, keeping the previous rows: %s",
                                lookup.name, lookup.describe(), e)
            self._count_bad(lookup)
        self._last_refresh = self._clock()

    def process(self, batch: pa.RecordBatch):
        self._maybe_refresh()
        result = self._engine.run(batch, source=self._source, source_column=self._source_column)
        self._rows_in.inc(result.rows_in)
        self._rows_out.inc(result.rows_out)
        self._filtered.inc(result.filtered)
        self._dead.inc(len(result.dead))
        for d in result.dead:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)
        if result.rows_out:
            yield from result.table.combine_chunks().to_batches()

    def teardown(self):
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        for lookup in getattr(self, "_active", []):
            lookup.close()


class ApplySql(beam.PTransform):
    """Applies a prepared `Statement` to a PCollection of flat Arrow RecordBatches.

    Returns a DoOutputsTuple: the main output ('rows') is PCollection[pa.RecordBatch]
    with `statement.output_schema`; `[DEAD_TAG]` is PCollection[DeadLetter]
    (stage 'sql'): the rows the statement failed on, with DuckDB's message.
    Rows dropped by WHERE or an INNER JOIN are counted (SQL/rows_filtered),
    not dead.

    Args:
      statement: prepared at launch, so a bad statement fails before data moves.
      lookups: the Lookups it joins (by name); configuration only, loaded per worker.
      source: names the input in dead letters (a file, a topic).
      source_column: a column naming each row's source instead.
      refresh_seconds: streaming: reload changed lookups this often (None: never).
      mask_columns: input columns masked in dead letters' raw text (PII).
      clock: seconds, monotonic; injectable for tests.
    """

    def __init__(self, statement: Statement, lookups: Sequence[Lookup] = (), *, source: str = "",
                 source_column: Optional[str] = None, refresh_seconds: Optional[float] = None,
                 mask_columns: Sequence[str] = (), clock: Callable[[], float] = time.monotonic):
        super().__init__()
        names = {lk.name.lower() for lk in lookups}
        missing = [n for n in statement.lookup_schemas if n.lower() not in names]
        if missing:
            raise ValueError(f"the statement joins {missing} but no such lookup was given")
        self._fn = ApplySqlFn(statement, lookups, source, source_column, refresh_seconds,
                                 mask_columns, clock)

    def expand(self, batches):
        return batches | "RunStatement" >> beam.ParDo(self._fn).with_outputs(DEAD_TAG, main="rows")
