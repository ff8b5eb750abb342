"""BigQuery streaming inserts made inside the bundle that read the records: rows, rejected rows, dead letters.

    dead = batches | "InsertRows" >> InsertRowsToBigQuery(endpoint=endpoint, project="p")
    _ = dead | "WriteRejectedRows" >> InsertDeadLettersToBigQuery("p:ds.t_error_records", endpoint=endpoint)

Why not `WriteToBigQuery(method=STREAMING_INSERTS)`: it inserts after a
reshuffle (a GroupByKey), i.e. in a later stage than the read. The Kafka read
commits its offsets when its own bundle is finalized, so with Beam's transform
an offset could be committed before its row reached BigQuery (and on the local
runner a GroupByKey after an unbounded read releases nothing until the read
ends). These DoFns insert synchronously in `process` / `finish_bundle`, so they
run in the read's fused stage and the commit comes after the rows are in the
table or the dead-letter table: at least once, on every runner.

What is kept from Beam's streaming inserts: the insertAll API through
google-cloud-bigquery (Beam's own insert client), one insert id per row (here
the record's ``topic/partition/offset``, so a re-read after a restart is
de-duplicated by BigQuery's best effort), and `RetryStrategy.RETRY_ON_TRANSIENT_ERROR`:
transient errors are retried with Beam's backoff, rows BigQuery refuses come
back as failed rows and become dead letters (stage 'bigquery'). A request is
first sent all-or-nothing (`skipInvalidRows=false`), which is cheaper for the
service when every row is good; only if it fails is it re-sent with
`skipInvalidRows=true` to learn which rows are bad.

An emulator or private endpoint (`--bigquery_endpoint`) only changes where the
client connects.
"""
from __future__ import annotations

import dataclasses
import http
import logging
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import apache_beam as beam

from beam_ml import metrics
from beam_ml.errors import DeadLetter, UserError
from beam_ml.io.bigquery import (DEAD_LETTER_SCHEMA, BigQueryEndpoint, dead_letter_row, endpoint_client,
                                 failed_row_to_dead_letter, parse_table, schema_fields)
from beam_ml.records import raw_text

__all__ = ["InsertBatch", "insert_rows", "bigquery_client", "ensure_table", "table_differences",
           "InsertRowsToBigQuery", "InsertDeadLettersToBigQuery", "MAX_INSERT_RETRIES"]

_LOGGER = logging.getLogger(__name__)

# Beam's own limit for streaming-insert retries (effectively forever, with backoff up to 25 min).
MAX_INSERT_RETRIES = 10000
_INSERT_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class InsertBatch:
    """Rows bound for one table, all from one source.

    Attributes:
      table: ``project:dataset.table``.
      rows: JSON-ready row dicts.
      ids: one insert id per row (BigQuery's best-effort de-duplication).
      source: where the rows came from (a Kafka ``topic/partition``), for dead letters.
      positions: each row's position in `source` (its offset), for dead letters.
    """

    table: str
    rows: list
    ids: list
    source: str
    positions: list


def bigquery_client(endpoint: Optional[BigQueryEndpoint], project: str):
    """A google-cloud-bigquery Client: at the endpoint (anonymous) or Google's (default credentials)."""
    if endpoint is not None:
        return endpoint_client(endpoint.rest, project)
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

    return bigquery.Client(project=project)


def _table_id(table: str) -> str:
    project, dataset, name = parse_table(table)
    return f"{project}.{dataset}.{name}"


def _request_error_reason(e: Exception) -> str:
    """The reason Beam's RetryStrategy classifies: the HTTP reason phrase ('Not Found', 'Bad Request'...).

    google-api-core's exceptions carry the status code, not always a response.
    """
    response = getattr(e, "response", None)
    reason = getattr(response, "reason", None)
    if reason:
        return reason
    code = getattr(e, "code", None)
    if isinstance(code, int):
        try:
            return http.HTTPStatus(code).phrase
        except ValueError:
            pass
    return type(e).__name__


def insert_rows(client, table: str, rows: Sequence[Mapping[str, Any]], ids: Sequence[str],
                max_retries: int = MAX_INSERT_RETRIES, timeout: float = _INSERT_TIMEOUT,
                sleep: Callable[[float], None] = time.sleep) -> list[tuple[int, list]]:
    """Streams rows into a table; returns the rows BigQuery refused for good.

    One all-or-nothing request first; if it fails, the rows are re-sent with
    ``skipInvalidRows`` and each error is classified by Beam's
    RETRY_ON_TRANSIENT_ERROR: permanent ones ('invalid', 'Not Found'...) are
    returned, transient ones retried with Beam's backoff (after `max_retries`
    they are returned too, as Beam does).

    Args:
      client: a google-cloud-bigquery Client.
      table: ``project:dataset.table`` (or ``project.dataset.table``).
      rows: JSON-ready rows.
      ids: their insert ids.
      max_retries: retries of transient errors before giving up on the rows.
      timeout: seconds per request.
      sleep: waits between retries (injectable for tests).

    Returns:
      [(index in rows, BigQuery's errors for it)].
    """
    from apache_beam.io.gcp.bigquery_tools import RetryStrategy  # pylint: disable=import-outside-toplevel
    from apache_beam.utils import retry  # pylint: disable=import-outside-toplevel

    if not rows:
        return []
    table_id = _table_id(table)
    rows, ids = list(rows), list(ids)
    try:
        if not client.insert_rows_json(table_id, rows, row_ids=ids, skip_invalid_rows=False, retry=None,
                                       timeout=timeout):
            return []
    except Exception as e:  # pylint: disable=broad-except
        # Whatever it was (a bad row answered with a 500 by an emulator, a dropped
        # connection), the careful path below finds out row by row.
        _LOGGER.debug("all-or-nothing insert into %s failed (%s); inserting row by row", table_id, e)
    backoff = iter(retry.FuzzedExponentialIntervals(initial_delay_secs=0.2, num_retries=max_retries,
                                                    max_delay_secs=1500))
    pending = list(range(len(rows)))
    failed: list[tuple[int, list]] = []
    while pending:
        try:
            errors = client.insert_rows_json(table_id, [rows[i] for i in pending], row_ids=[ids[i] for i in pending],
                                             skip_invalid_rows=True, timeout=timeout)
        except Exception as e:  # pylint: disable=broad-except
            # As Beam does: a failed request is an error for each of its rows.
            error = {"reason": _request_error_reason(e), "message": str(getattr(e, "message", e))}
            errors = [{"index": j, "errors": [error]} for j in range(len(pending))]
        delay = next(backoff, None)
        again = []
        for entry in errors:
            i = pending[entry["index"]]
            reasons = entry.get("errors") or [{"reason": "unknown"}]
            if delay is not None and RetryStrategy.should_retry(RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
                                                                reasons[0].get("reason")):
                again.append(i)
            else:
                failed.append((i, reasons))
        if again:
            _LOGGER.warning("BigQuery insert into %s: %d row(s) hit transient errors (%s); retrying in %.1f s",
                            table_id, len(again), errors[0]["errors"][0], delay)
            sleep(delay)
        pending = sorted(again)
    return sorted(failed)


def ensure_table(client, table: str, schema: Optional[Mapping[str, Any]], create_disposition: str,
                 flag: str = "--output_table"):
    """The table, created from `schema` if missing and CREATE_IF_NEEDED.

    Returns:
      google-cloud-bigquery's Table.

    Raises:
      UserError: the table is missing with CREATE_NEVER, or its dataset is missing.
    """
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

    table_id = _table_id(table)
    try:
        return client.get_table(table_id)
    except exceptions.NotFound:
        pass
    if create_disposition == "CREATE_NEVER" or schema is None:
        raise UserError(f"{flag}: table {table_id} does not exist (--create_disposition={create_disposition})")
    fields = [bigquery.SchemaField.from_api_repr(f) for f in schema_fields(schema, canonical=False)]
    try:
        return client.create_table(bigquery.Table(table_id, schema=fields), exists_ok=True)
    except exceptions.NotFound:
        dataset = table_id.rsplit(".", 1)[0]
        raise UserError(f"{flag}: dataset {dataset} does not exist; create it first (bq mk {dataset})") from None


def table_differences(existing: Any, wanted: Mapping[str, Any], flag: str = "--output_table") -> list[str]:
    """How an existing table's schema differs from the rows' columns.

    Returns:
      One note per column whose type differs (BigQuery then converts each
      value or rejects the row, which becomes a dead letter).

    Raises:
      UserError: the table lacks some of the columns (every row would be refused).
    """
    have = {f["name"].lower(): f for f in schema_fields(existing)}
    missing = [f["name"] for f in schema_fields(wanted) if f["name"].lower() not in have]
    if missing:
        raise UserError(f"{flag}: the existing table has no column(s) {', '.join(missing)}; add them, or write "
                        "to another table")
    notes = []
    for f in schema_fields(wanted):
        h = have[f["name"].lower()]
        if (h["type"], h["mode"]) != (f["type"], f["mode"]):
            notes.append(f"{f['name']}: rows carry {f['type']} {f['mode']}, the table has {h['type']} {h['mode']}")
    return notes


def _timed_insert(client_for: Callable[[], Any], batch: InsertBatch, max_retries: int
                  ) -> tuple[list[tuple[int, list]], float, float]:
    """insert_rows on this thread's client; returns (failed rows, started, finished) in epoch seconds."""
    started = time.time()
    failed = insert_rows(client_for(), batch.table, batch.rows, batch.ids, max_retries=max_retries)
    return failed, started, time.time()


class _InsertRowsFn(beam.DoFn):
    """InsertBatch -> rows in BigQuery; the rows it refuses -> DeadLetters (stage 'bigquery').

    Up to `in_flight` requests run at once on a small thread pool (the service's
    time then overlaps the decoding of the next rows); `finish_bundle` waits for
    every one of them, so the bundle -- and the read's offset commit after it --
    ends only once its rows are in BigQuery or dead-lettered.
    """

    def __init__(self, schemas: Mapping[str, Optional[dict]], create_disposition: str,
                 endpoint: Optional[BigQueryEndpoint], project: str, mask_columns: Sequence[str],
                 max_retries: int, in_flight: int):
        self._schemas = dict(schemas)
        self._create = create_disposition
        self._endpoint = endpoint
        self._project = project
        self._mask = list(mask_columns)
        self._max_retries = max_retries
        self._in_flight = max(1, in_flight)
        self._rows_in = beam.metrics.Metrics.counter(metrics.WRITE, "rows_in")
        self._rejected = beam.metrics.Metrics.counter(metrics.WRITE, "dead_rejected")
        self._written = beam.metrics.Metrics.counter(metrics.INGEST, "rows_written")
        # When the job wrote (first request started, last one finished) and how long a request took.
        self._started = beam.metrics.Metrics.distribution(metrics.WRITE, "insert_started_ms")
        self._finished = beam.metrics.Metrics.distribution(metrics.WRITE, "insert_finished_ms")
        self._latency = beam.metrics.Metrics.distribution(metrics.WRITE, "insert_ms")
        self._pool = None

    def setup(self):
        import concurrent.futures  # pylint: disable=import-outside-toplevel
        import threading  # pylint: disable=import-outside-toplevel

        self._local = threading.local()
        self._clients: list = []
        self._clients_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(self._in_flight, thread_name_prefix="bq-insert")
        self._pending: list = []
        self._ready: set[str] = set()

    def _client(self):
        """One client per thread (a requests session is not meant to be shared between threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = bigquery_client(self._endpoint, self._project)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def start_bundle(self):
        self._pending = []

    def process(self, batch: InsertBatch) -> Iterator[DeadLetter]:
        if batch.table not in self._ready:
            # As Beam's writer does: create the table on first use (the launcher did it already
            # for local runs; on Dataflow this is where it happens).
            if self._create == "CREATE_IF_NEEDED":
                ensure_table(self._client(), batch.table, self._schemas.get(batch.table), self._create)
            self._ready.add(batch.table)
        while len(self._pending) >= self._in_flight:
            yield from self._collect(self._pending.pop(0))
        self._pending.append((batch, self._pool.submit(_timed_insert, self._client, batch, self._max_retries)))

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows  # pylint: disable=import-outside-toplevel

        pending, self._pending = self._pending, []
        for item in pending:
            for dead in self._collect(item):
                yield GlobalWindows.windowed_value(dead)

    def _collect(self, item) -> Iterator[DeadLetter]:
        """Waits for one request; counts it (on the bundle's thread, where Beam records metrics)."""
        batch, future = item
        failed, started, finished = future.result()
        self._started.update(int(started * 1000))
        self._finished.update(int(finished * 1000))
        self._latency.update(int((finished - started) * 1000))
        self._rows_in.inc(len(batch.rows))
        self._written.inc(len(batch.rows) - len(failed))
        self._rejected.inc(len(failed))
        for i, errors in failed:
            row = batch.rows[i]
            dead = failed_row_to_dead_letter(batch.table, row, errors,
                                             origin=lambda _row, i=i: (batch.source, batch.positions[i]))
            yield dataclasses.replace(dead, raw=raw_text(row, self._mask)) if self._mask else dead

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for client in getattr(self, "_clients", []):
            client.close()
        self._clients = []


class InsertRowsToBigQuery(beam.PTransform):
    """Streams `InsertBatch`es into their tables; returns the rows BigQuery refused as DeadLetters.

    The tables are created on first use with CREATE_IF_NEEDED (from `schemas`).
    Requests of one bundle overlap (up to `in_flight`); all have finished when
    the bundle ends. Counters: WRITE rows_in = written + dead_rejected; INGEST
    rows_written. Distributions (WRITE): insert_ms per request;
    insert_started_ms / insert_finished_ms, the wall-clock ms at which requests
    started and finished (min and max bound the job's writing window).

    Args:
      schemas: ``project:dataset.table`` -> BigQuery schema dict, for creating tables.
      create_disposition: CREATE_IF_NEEDED or CREATE_NEVER.
      endpoint: an emulator or private endpoint, or None for Google's.
      project: the project requests are billed to (default: the first table's).
      mask_columns: PII columns, masked in the dead letters' raw text.
      max_retries: retries of transient errors per request.
      in_flight: requests running at once per worker thread.
    """

    def __init__(self, schemas: Mapping[str, Optional[dict]], create_disposition: str = "CREATE_IF_NEEDED",
                 endpoint: Optional[BigQueryEndpoint] = None, project: Optional[str] = None,
                 mask_columns: Sequence[str] = (), max_retries: int = MAX_INSERT_RETRIES, in_flight: int = 2):
        super().__init__()
        if not schemas:
            raise ValueError("schemas: name at least one table")
        project = project or parse_table(next(iter(schemas)))[0]
        if endpoint is not None:
            endpoint.announce("writes")
        self._fn = _InsertRowsFn(schemas, create_disposition, endpoint, project, mask_columns, max_retries, in_flight)

    def expand(self, batches):
        return batches | "StreamingInserts" >> beam.ParDo(self._fn)


class _InsertDeadLettersFn(beam.DoFn):
    """Buffers DeadLetters and inserts them as `DEAD_LETTER_SCHEMA` rows every `batch_size` and at bundle end."""

    def __init__(self, table: str, endpoint: Optional[BigQueryEndpoint], project: str, batch_size: int,
                 clock: Callable[[], float], max_retries: int):
        self._table = table
        self._endpoint = endpoint
        self._project = project
        self._batch_size = batch_size
        self._clock = clock
        self._max_retries = max_retries
        self._dead = beam.metrics.Metrics.counter(metrics.INGEST, "dead_letters")
        self._client = None

    def setup(self):
        self._client = bigquery_client(self._endpoint, self._project)
        self._created = False
        self._buffer: list[DeadLetter] = []

    def start_bundle(self):
        self._buffer = []

    def process(self, dead: DeadLetter):
        self._buffer.append(dead)
        if len(self._buffer) >= self._batch_size:
            self._flush()

    def finish_bundle(self):
        # Still inside the bundle: the read commits its offsets only after this returns.
        self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if not self._created:
            ensure_table(self._client, self._table, DEAD_LETTER_SCHEMA, "CREATE_IF_NEEDED", "--dead_letter_table")
            self._created = True
        buffer, self._buffer = self._buffer, []
        now = self._clock()
        rows = [dead_letter_row(d, now, from_kafka=True) for d in buffer]
        ids = [f"dead/{d.stage}/{d.source}/{d.position}" if d.position is not None else uuid.uuid4().hex
               for d in buffer]
        failed = insert_rows(self._client, self._table, rows, ids, max_retries=self._max_retries)
        if failed:
            i, errors = failed[0]
            # A dead letter with nowhere to go: fail the bundle, so nothing is committed and it is retried.
            raise RuntimeError(f"the dead-letter table {self._table} refused {len(failed)} dead letter(s), e.g. "
                               f"{buffer[i].source}/{buffer[i].position}: {errors}")
        self._dead.inc(len(buffer))
        for d in buffer:
            beam.metrics.Metrics.counter(metrics.INGEST, f"dead_{d.stage}").inc()

    def teardown(self):
        if self._client is not None:
            self._client.close()
            self._client = None


class InsertDeadLettersToBigQuery(beam.PTransform):
    """Streams DeadLetters into a dead-letter table (`DEAD_LETTER_SCHEMA`, created if missing).

    Kafka coordinates fill source_topic, partition and offset. A dead letter the
    table refuses fails the bundle (so the read's offsets are not committed).
    Counters: INGEST dead_letters and dead_<stage>.

    Args:
      table: ``project:dataset.table``.
      endpoint: an emulator or private endpoint, or None for Google's.
      project: the project requests are billed to (default: the table's).
      batch_size: rows per insert request at most.
      clock: epoch seconds, the dead letters' timestamp (injectable for tests).
    """

    def __init__(self, table: str, endpoint: Optional[BigQueryEndpoint] = None, project: Optional[str] = None,
                 batch_size: int = 500, clock: Callable[[], float] = time.time,
                 max_retries: int = MAX_INSERT_RETRIES):
        super().__init__()
        p, d, t = parse_table(table, "--dead_letter_table")
        if endpoint is not None:
            endpoint.announce("writes")
        self._fn = _InsertDeadLettersFn(f"{p}:{d}.{t}", endpoint, project or p, batch_size, clock, max_retries)

    def expand(self, dead):
        return dead | "StreamingInserts" >> beam.ParDo(self._fn)
