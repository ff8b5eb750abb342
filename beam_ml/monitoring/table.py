"""--monitor_table: monitoring and alert records as rows of one BigQuery table, and the dashboard's reader of it.

    _ = messages | WriteMonitorRecordsToBigQuery(destination)     # lists of (key, JSON) records (stream/batch)
    writer = TableRecordWriter(destination)                        # the model server: a background thread
    reader = TableRecordReader(destination, store)                 # pipelines.monitor: polls the table

One table holds both kinds of record: a `kind` column ('monitoring' or 'alert')
tells them apart, a few columns are lifted out of the record for SQL (window,
model version, counts; an alert's feature, metric, value and threshold), and
`record` holds the whole record as JSON text (what the dashboard reads).
`row_id` is a digest of the record, also the insert id: a row written twice
(at-least-once delivery) is one record to the reader. `written_ts` (epoch ms,
when the row was made) is what the reader polls on.

Rows go in by streaming inserts, through `beam_ml.ingest.sink` (insertAll in
the bundle that closed the window, Beam's RETRY_ON_TRANSIENT_ERROR, tables
created on first use). A row the table refuses becomes a dead letter in
``<monitor_table>_error_records`` (Google's dead-letter columns), never a loss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

import apache_beam as beam

from beam_ml.ingest.sink import (InsertBatch, InsertDeadLettersToBigQuery, InsertRowsToBigQuery, bigquery_client,
                                 ensure_table, insert_rows)
from beam_ml.io.bigquery import BigQueryEndpoint, parse_table

__all__ = ["MONITOR_TABLE_SCHEMA", "MonitorTable", "monitor_table", "record_row", "WriteMonitorRecordsToBigQuery",
           "TableRecordWriter", "TableRecordReader"]

_LOGGER = logging.getLogger(__name__)


def _field(name: str, type_: str) -> dict:
    return {"name": name, "type": type_, "mode": "NULLABLE"}


MONITOR_TABLE_SCHEMA = {"fields": [
    _field("kind", "STRING"), _field("row_id", "STRING"), _field("source", "STRING"),
    _field("window_id", "INT64"), _field("window_kind", "STRING"),
    _field("window_start_ts", "INT64"), _field("window_end_ts", "INT64"), _field("model_version", "INT64"),
    _field("events_in", "INT64"), _field("predictions", "INT64"), _field("dead_letters", "INT64"),
    _field("alerts", "INT64"),
    _field("feature", "STRING"), _field("metric", "STRING"), _field("value", "FLOAT64"), _field("threshold", "FLOAT64"),
    _field("written_ts", "INT64"), _field("record", "STRING"),
]}


@dataclasses.dataclass(frozen=True)
class MonitorTable:
    """Where --monitor_table's rows go: ``project:dataset.table``, at Google's BigQuery or at an endpoint."""

    table: str
    endpoint: Optional[BigQueryEndpoint] = None

    @property
    def project(self) -> str:
        return parse_table(self.table)[0]

    @property
    def table_id(self) -> str:
        """The ``project.dataset.table`` form google-cloud-bigquery and SQL take."""
        return "{}.{}.{}".format(*parse_table(self.table))

    @property
    def dead_letter_table(self) -> str:
        return f"{self.table}_error_records"


def monitor_table(table: Optional[str], project: Optional[str] = None,
                  endpoint: "BigQueryEndpoint | str | None" = None) -> Optional[MonitorTable]:
    """--monitor_table checked (``project:dataset.table``; `project` fills a missing project), or None.

    `endpoint` is a BigQueryEndpoint or the --bigquery_endpoint text (None: Google's service).

    Raises:
      UserError: a malformed table, naming --monitor_table.
    """
    if not table:
        return None
    if isinstance(endpoint, str):
        endpoint = BigQueryEndpoint(endpoint)
    return MonitorTable("{}:{}.{}".format(*parse_table(table, "--monitor_table", project)), endpoint)


def record_row(record: Mapping[str, Any], written_ms: Optional[int] = None) -> dict:
    """A monitoring or alert record (cleaned: strict JSON) as a row of MONITOR_TABLE_SCHEMA."""
    text = json.dumps(record, allow_nan=False, default=str, sort_keys=True)
    window = record.get("window") or {}
    events = record.get("events") or {}

    def integer(value):
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def number(value):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    alert = record.get("type") == "alert"
    return {
        "kind": record.get("type"), "row_id": hashlib.sha1(text.encode("utf-8")).hexdigest(),
        "source": record.get("source"), "window_id": integer(window.get("id")), "window_kind": window.get("kind"),
        "window_start_ts": integer(window.get("start_ts")), "window_end_ts": integer(window.get("end_ts")),
        "model_version": integer(record.get("model_version")),
        "events_in": integer(events.get("in")), "predictions": integer(events.get("predictions")),
        "dead_letters": integer(events.get("dead_total")),
        "alerts": None if alert else len(record.get("alerts") or []),
        "feature": record.get("feature") if alert else None, "metric": record.get("metric") if alert else None,
        "value": number(record.get("value")) if alert else None,
        "threshold": number(record.get("threshold")) if alert else None,
        "written_ts": int(time.time() * 1000) if written_ms is None else int(written_ms), "record": text,
    }


def _decoded(item) -> dict:
    """A record from what the monitor's Beam steps carry: a dict, or a Kafka (key, JSON value) pair."""
    if isinstance(item, Mapping):
        return dict(item)
    return json.loads(item[1])


class _ToMonitorRowsFn(beam.DoFn):
    """A list of records (dicts or encoded (key, value) pairs) -> one InsertBatch of table rows."""

    def __init__(self, table: str):
        self._table = table

    def process(self, records: Iterable):
        rows = [record_row(_decoded(r)) for r in records]
        if rows:
            yield InsertBatch(self._table, rows, [r["row_id"] for r in rows], "monitor",
                              [r["window_id"] for r in rows])


class WriteMonitorRecordsToBigQuery(beam.PTransform):
    """Lists of monitoring/alert records -> rows of --monitor_table (streaming inserts, in the same bundle).

    A row the table refuses goes to ``<table>_error_records`` as a dead letter (stage 'bigquery').
    """

    def __init__(self, destination: MonitorTable):
        super().__init__()
        self._out = destination

    def expand(self, records):
        out = self._out
        refused = (records
                   | "ToMonitorRows" >> beam.ParDo(_ToMonitorRowsFn(out.table))
                   | "InsertMonitorRows" >> InsertRowsToBigQuery({out.table: MONITOR_TABLE_SCHEMA},
                                                                 endpoint=out.endpoint, project=out.project))
        _ = refused | "WriteRefusedMonitorRows" >> InsertDeadLettersToBigQuery(
            out.dead_letter_table, endpoint=out.endpoint, project=out.project)
        return refused


class TableRecordWriter:
    """The model server's writer: records queued by the scoring thread, inserted by a daemon thread.

    The scoring thread never waits for BigQuery. A row the table refuses, or a request that fails
    for good, is logged and counted (`refused`); `close()` writes what is queued (at most `timeout` s).
    """

    def __init__(self, destination: MonitorTable, batch_wait: float = 0.5):
        self._out = destination
        self._queue: queue.Queue = queue.Queue(maxsize=10_000)
        self._wait = batch_wait
        self._stop = threading.Event()
        self.written = 0
        self.refused = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="monitor-table")
        self._thread.start()

    def put(self, record: Mapping[str, Any]) -> None:
        try:
            self._queue.put_nowait(record_row(record))
        except queue.Full:  # BigQuery far behind: count it, keep serving
            self.dropped += 1
            _LOGGER.warning("monitor table %s: queue full, record of window %s not written (%d so far)",
                            self._out.table, (record.get("window") or {}).get("id"), self.dropped)

    def _take(self) -> list:
        rows = []
        try:
            rows.append(self._queue.get(timeout=self._wait))
            while len(rows) < 500:
                rows.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return rows

    def _run(self) -> None:
        client = bigquery_client(self._out.endpoint, self._out.project)
        created = False
        try:
            while not (self._stop.is_set() and self._queue.empty()):
                rows = self._take()
                if not rows:
                    continue
                try:
                    if not created:
                        ensure_table(client, self._out.table, MONITOR_TABLE_SCHEMA, "CREATE_IF_NEEDED",
                                     "--monitor_table")
                        created = True
                    failed = insert_rows(client, self._out.table, rows, [r["row_id"] for r in rows],
                                         max_retries=5)
                except Exception as e:  # pylint: disable=broad-except  # the server keeps serving
                    failed = [(i, [{"reason": type(e).__name__, "message": str(e)}]) for i in range(len(rows))]
                self.written += len(rows) - len(failed)
                self.refused += len(failed)
                for i, errors in failed[:3]:
                    _LOGGER.warning("monitor table %s refused the %s record of window %s: %s", self._out.table,
                                    rows[i]["kind"], rows[i]["window_id"], errors)
        finally:
            client.close()

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


class TableRecordReader:
    """Polls --monitor_table for new rows into a RecordStore (the live dashboard), on a daemon thread.

    Each poll asks for the rows written since the newest one seen, less `overlap` seconds (streaming
    inserts become visible a little out of order); rows already seen (by row_id) are skipped. A table
    that does not exist yet is waited for; a failed poll is logged, counted (`errors`) and retried.
    """

    def __init__(self, source: MonitorTable, on_value: Callable[[bytes], None], interval: float = 2.0,
                 overlap: float = 60.0):
        self._source = source
        self._on_value = on_value
        self._interval = interval
        self._overlap_ms = int(overlap * 1000)
        self._stop = threading.Event()
        self._seen: dict[str, int] = {}  # row_id -> written_ts (pruned to the overlap)
        self.polls = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="monitor-table-reader")
        self._thread.start()

    def _query(self, client, since_ms: int) -> list:
        from google.cloud import bigquery  # deferred: only a dashboard of a table needs the client's types

        sql = (f"SELECT row_id, written_ts, record FROM `{self._source.table_id}` "
               "WHERE written_ts >= @since ORDER BY written_ts, row_id")
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("since", "INT64", since_ms)])
        return list(client.query(sql, job_config=config).result())

    def poll(self, client) -> int:
        """One poll; returns how many new records it passed on."""
        newest = max(self._seen.values(), default=None)
        since = 0 if newest is None else newest - self._overlap_ms
        new = 0
        for row in self._query(client, since):
            row_id, written = row["row_id"], int(row["written_ts"] or 0)
            if row_id in self._seen:
                continue
            self._seen[row_id] = written
            self._on_value((row["record"] or "").encode("utf-8"))
            new += 1
        if self._seen:
            floor = max(self._seen.values()) - 2 * self._overlap_ms
            self._seen = {k: v for k, v in self._seen.items() if v >= floor}
        self.polls += 1
        return new

    def _run(self) -> None:
        from google.api_core import exceptions  # deferred with the client

        client = bigquery_client(self._source.endpoint, self._source.project)
        try:
            while not self._stop.is_set():
                try:
                    self.poll(client)
                except exceptions.NotFound:
                    pass  # not written yet: wait for it
                except Exception as e:  # pylint: disable=broad-except  # the page keeps serving
                    self.errors += 1
                    _LOGGER.warning("--monitor_table %s: poll failed: %s", self._source.table, str(e).splitlines()[0])
                self._stop.wait(self._interval)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

