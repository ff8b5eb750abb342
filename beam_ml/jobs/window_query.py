"""A persistent windowed query over a live topic: ksqlDB's `CREATE TABLE t AS SELECT ... WINDOW ... EMIT CHANGES`.

    python -m pipelines.window_query --input_topic=cards --output_topic=card-velocity \\
        --dead_letter_topic=card-velocity-dlq --group_id=velocity \\
        --window_sql="SELECT card_id, COUNT(*) AS tx, SUM(Amount) AS total FROM events
                      WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE, GRACE PERIOD 30 SECONDS) GROUP BY card_id"

Steps: ReadFromKafka (one list of records per poll of a partition) -> WindowQuery
(`WindowQueryFn`: parse each JSON value, take its key and event time, update the
per-process window state `beam_ml.features.query.WindowQuery`, emit every changed
window's row at once) -> WriteToKafka. Like stream_predict's parse step it works
per poll, so it emits live on the local runner (a GroupByKey or timers would
fire only when the read ends there).

Output records (a windowed table's changelog, as ksqlDB writes one): the Kafka key
is JSON `{"<key>": k, "WINDOWSTART": s, "WINDOWEND": e}`, the value JSON
`{"<key>": k, <aggregates>, "WINDOWSTART": s, "WINDOWEND": e}`; a session merged
into a bigger one gets a tombstone (null value) under its old key. Event time is
--event_time_column (epoch ms or ISO-8601) or, by default, the record's timestamp
(ksqlDB's ROWTIME, under --timestamp_policy).

Accounting: records in = aggregated events + late events + dead letters. A late
event (beyond the GRACE PERIOD for every window it belongs to) changes nothing and
goes to the dead-letter topic with stage 'late'; a value that is not a JSON object
or has no key or readable event time goes there with stage 'parse' / 'window'.

State and restarts: the window state is in memory, per worker process; a key's
events must reach one process (key the input by the GROUP BY column). With
--group_id a restarted run rebuilds it first from the records the group had
committed, reading back only one window span by record timestamp
(`beam_ml.features.live.Rebuild`), then resumes: rows for records in flight at the
kill are emitted again (at least once; a table consumer keeps the last row per key).
"""
from __future__ import annotations

import functools
import json
import threading
import uuid
from typing import Any, Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import metrics
from beam_ml.clean.cleaning import read_statement
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.live import Rebuild, rebuild_span_ms, rebuild_state
from beam_ml.features.plan import event_time_ms, unusable_column
from beam_ml.features.query import QUERY_FLAG, ROWTIME, WindowQuery
from beam_ml.formats.text import dumps_event
from beam_ml.io.kafka import ReadFromKafka, WriteToKafka
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.jobs.stream_predict import WriteDeadLettersToKafka
from beam_ml.options import WindowQueryOptions
from beam_ml.runner import new_pipeline, run_pipeline

__all__ = ["WindowQueryFn", "WindowQueryPlan", "plan_window_query", "build_window_query", "window_query_counts",
           "window_query", "NAMESPACE"]

NAMESPACE = "window_query"
_print = functools.partial(print, flush=True)
_STATES: dict[str, WindowQuery] = {}
_LOCK = threading.RLock()


class WindowQueryFn(beam.DoFn):
    """list[KafkaRecord] -> one list of (key, value) changelog messages + dead letters (TaggedOutput)."""

    def __init__(self, sql: str, event_time_column: Optional[str], state_id: str, rebuild: Optional[Rebuild] = None):
        self._sql, self._time_column, self._state_id, self._rebuild = sql, event_time_column, state_id, rebuild
        self._in = Metrics.counter(NAMESPACE, "records_in")
        self._rows = Metrics.counter(NAMESPACE, "window_rows")
        self._aggregated = Metrics.counter(NAMESPACE, "aggregated")
        self._late = Metrics.counter(NAMESPACE, "late_events")
        self._dead = Metrics.counter(NAMESPACE, "dead_letters")
        self._rebuilt = Metrics.counter(NAMESPACE, "rebuild_records")
        self._rebuilt_pending = 0

    def setup(self):
        with _LOCK:
            fresh = self._state_id not in _STATES
            if fresh:
                _STATES[self._state_id] = WindowQuery.parse(self._sql, self._time_column or ROWTIME)
            self._query = _STATES[self._state_id]
            if fresh and self._rebuild is not None:  # once per process, before its first record
                self._rebuilt_pending = rebuild_state(self, self._rebuild).replayed

    def process(self, records: Sequence[Any]):
        if self._rebuilt_pending:
            self._rebuilt.inc(self._rebuilt_pending)
            self._rebuilt_pending = 0
        self._in.inc(len(records))
        for out in self.score_records(records):
            if isinstance(out, beam.pvalue.TaggedOutput):
                self._dead.inc()
                if out.value.stage == "late":
                    self._late.inc()
            else:
                self._rows.inc(len(out))
            yield out

    def score_records(self, records: Sequence[Any]):
        """Updates the state with each record, in order; yields the changed rows' messages and the dead letters."""
        query = self._query
        plan = query.plan
        messages, dead, aggregated = [], [], 0
        for r in records:
            source = f"{r.topic}/{r.partition}"
            text = r.value.decode("utf-8", "replace") if r.value is not None else ""
            try:
                row = json.loads(text)
            except ValueError as e:
                row, reason = None, f"not JSON: {e}"
            else:
                reason = None if isinstance(row, dict) else "not a JSON object"
            if reason is None:
                key = row.get(plan.key)
                t = r.timestamp if plan.event_time_column == ROWTIME else event_time_ms(row.get(plan.event_time_column))
                what = unusable_column(key, plan.key, t, plan.event_time_column)
                if what is not None:
                    reason = f"{what}: missing or unreadable (needed by {QUERY_FLAG})"
            if reason is not None:
                stage = "window" if isinstance(row, dict) else "parse"
                dead.append(DeadLetter(source, r.offset, reason, text, stage=stage))
                continue
            changes, late = query.add(source, key, t, plan.values_of(row))
            if late:
                dead.append(DeadLetter(source, r.offset, f"late: event time {t} is beyond the GRACE PERIOD of every "
                                       "window it belongs to (stream time "
                                       f"{query.stream_time(source)})", text, stage="late"))
                continue
            aggregated += 1
            for c in changes:
                k = dumps_event({plan.key: c.key, "WINDOWSTART": c.start, "WINDOWEND": c.end})
                messages.append((k, None if c.row is None else dumps_event(c.row)))
        if aggregated:
            self._aggregated.inc(aggregated)
        if messages:
            yield messages
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)


class WindowQueryPlan(NamedTuple):
    opts: WindowQueryOptions
    kafka: Any
    sql: str
    query: WindowQuery  # parsed at launch (fails fast); workers parse their own


def plan_window_query(options: PipelineOptions) -> WindowQueryPlan:
    """Checks the flags and the statement before any data moves.

    Raises:
      UserError: a bad flag or statement, one line naming it.
    """
    opts = options.view_as(WindowQueryOptions).validated()
    sql = read_statement(opts.window_sql, QUERY_FLAG)
    query = WindowQuery.parse(sql, opts.event_time_column or ROWTIME)
    return WindowQueryPlan(opts, kafka_client_config(options), sql, query)


def build_window_query(pipeline: beam.Pipeline, plan: WindowQueryPlan) -> None:
    """ReadFromKafka -> WindowQuery -> WriteToKafka (rows) and the dead-letter topic."""
    opts = plan.opts
    producer = {"compression_type": opts.compression_type} if opts.compression_type != "none" else {}
    polls = pipeline | "ReadFromKafka" >> ReadFromKafka(
        None, opts.input_topic, group_id=opts.group_id, start=opts.start, max_records=opts.max_records,
        max_read_time=opts.max_read_time, client_config=plan.kafka, checkpoint_interval=opts.checkpoint_interval,
        poll_timeout=opts.poll_timeout, timestamp_policy=opts.timestamp_policy, batches=True,
        consumer_config={"max_poll_records": opts.max_batch_size})
    rebuild = None
    if opts.group_id:  # a restart with the same group rebuilds the windows from what the group had committed
        rebuild = Rebuild(plan.kafka, opts.input_topic, opts.group_id, span_ms=rebuild_span_ms(plan.query.plan.window,
                                                                                                plan.query.grace_ms))
    out = polls | "WindowQuery" >> beam.ParDo(WindowQueryFn(plan.sql, opts.event_time_column, uuid.uuid4().hex,
                                                            rebuild)).with_outputs(DEAD_TAG, main="rows")
    _ = out.rows | "WriteRows" >> WriteToKafka(None, opts.output_topic, client_config=plan.kafka,
                                               producer_config=producer)
    _ = (out[DEAD_TAG],) | "WriteDeadLetters" >> WriteDeadLettersToKafka(opts.dead_letter_topic, plan.kafka, producer)


def window_query_counts(result) -> dict[str, int]:
    """records_in, aggregated, late_events, dead_letters, window_rows, rebuild_records of a (bounded) run."""
    return {name: metrics.query_counter(result, NAMESPACE, name)
            for name in ("records_in", "aggregated", "late_events", "dead_letters", "window_rows", "rebuild_records")}


class WindowQueryRun(NamedTuple):
    counts: dict
    pipeline_result: Any = None


def window_query(options: PipelineOptions, test_pipeline=None, log: Callable[[str], None] = _print) -> WindowQueryRun:
    """The whole job: plan, build, run until the stop condition (or forever), count.

    Raises:
      UserError: a bad flag or statement.
    """
    plan = plan_window_query(options)
    pipeline = test_pipeline or new_pipeline(options)
    build_window_query(pipeline, plan)
    q, opts = plan.query, plan.opts
    log(f"[beam_ml] windowed query ({q.plan.window.kind}, grace {q.grace_ms} ms, EMIT CHANGES): {opts.input_topic} "
        f"-> {opts.output_topic} (dead letters and late events -> {opts.dead_letter_topic}), "
        f"group {opts.group_id or '(none: no commits)'}")
    outcome = run_pipeline(pipeline)
    if not outcome.finished:
        log(outcome.describe())
        return WindowQueryRun({}, outcome.result)
    counts = window_query_counts(outcome.result)
    log(f"[beam_ml] {counts['records_in']} records in = {counts['aggregated']} aggregated + "
        f"{counts['dead_letters']} dead letters ({counts['late_events']} late); {counts['window_rows']} window rows "
        f"written" + (f"; {counts['rebuild_records']} records re-read to rebuild the windows"
                      if counts['rebuild_records'] else ""))
    return WindowQueryRun(counts, outcome.result)
