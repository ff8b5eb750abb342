"""Beam counter namespaces shared by the pipelines, and reading counters after a run.

Every pipeline reports its row accounting through Beam counters, so the same
numbers appear on the Dataflow job page and in the run summary:

    READ        lines_in = rows_good + rows_dead             (every reader: CSV, Kafka, BigQuery);
                blank_lines (CSV blank lines: not records, not in lines_in)
    PREPROCESS  rows_train, rows_test, train_label_count/<class>
    PREDICT     rows_in = predictions + dead_letters (dead_<stage> per stage)
    INFERENCE   model_reloads
    SQL         rows_in = rows_out + rows_filtered + dead (the cleaning statement), lookup refreshes
    WRITE       rows_in = written + dead_schema + dead_rejected (the BigQuery writers)
    INGEST      records_in = rows_written + dead_letters (+ SQL rows_filtered), dead_<stage> (Kafka -> BigQuery)

    counts = {name: query_counter(result, PREDICT, name) for name in ("rows_in", "predictions")}
"""
from __future__ import annotations

from typing import Any

import apache_beam as beam

__all__ = ["READ", "PREPROCESS", "PREDICT", "INFERENCE", "SQL", "WRITE", "INGEST", "query_counter",
           "CountDeadLetters"]

READ = "beam_ml.read"
PREPROCESS = "beam_ml.preprocess"
PREDICT = "beam_ml.predict"
INFERENCE = "beam_ml.inference"
SQL = "beam_ml.sql"
WRITE = "beam_ml.write"
INGEST = "beam_ml.ingest"


def query_counter(result: Any, namespace: str, name: str) -> int:
    """The committed (else attempted) value of a Beam counter after a run; 0 when it never counted."""
    from apache_beam.metrics.metric import MetricsFilter

    res = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    total = 0
    for r in res:
        v = r.committed if r.committed is not None else r.attempted
        total += int(v or 0)
    return total


class CountDeadLetters(beam.DoFn):
    """Passes DeadLetters through, counting them: `total` and dead_<stage> in `namespace`.

    stream/batch predict: (PREDICT, "dead_letters"); rows a prediction table
    refused: (PREDICT, "dead_output"); Kafka -> BigQuery: (INGEST, "dead_letters").
    """

    def __init__(self, namespace: str = PREDICT, total: str = "dead_letters"):
        self._namespace = namespace
        self._total_name = total

    def setup(self):
        self._total = beam.metrics.Metrics.counter(self._namespace, self._total_name)
        self._stages: dict = {}

    def process(self, dead):
        self._total.inc()
        counter = self._stages.get(dead.stage)
        if counter is None:
            counter = self._stages[dead.stage] = beam.metrics.Metrics.counter(self._namespace, f"dead_{dead.stage}")
        counter.inc()
        yield dead
