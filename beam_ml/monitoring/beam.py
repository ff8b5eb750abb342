"""The monitor's Beam pieces: training statistics inside the train pipeline, and the serving-side monitor.

Training (one read of the input; two combines over the same PCollection):

    stats = marked_batches | "TrainingStatistics" >> TrainingStatisticsTransform(spec)   # one dict
    # quantile sketch per numeric feature (ApproximateQuantiles) -> bin edges (side input)
    # -> per-batch histograms -> CombineGlobally(HistogramCombineFn): mergeable, bounded accumulators

Serving (stream_predict, batch_predict): `MonitorBatchesFn` watches each
ScoredBatch (rows kept: `RowBatchModelHandler(keep_rows=True)`) in one DoFn,
windows by count or duration inside the DoFn (no Beam windows: on the local
runner they fire only when the source stops), and emits lists of (key, value)
Kafka messages: every record on the main output, alerts also on 'alerts'.
Dead letters of the other stages reach it through `TallyDeadLetters`, a
per-process tally (one per monitor token): on a runner with several worker
processes each monitor counts the dead letters of its own process.
"""
from __future__ import annotations

import collections
import json
import operator
import threading
import time
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.errors import UserError
from beam_ml.io.kafka import WriteToKafka
from beam_ml.model_store import load_model_metadata, model_root_of, resolve_version_dir
from beam_ml.monitoring.drift import ColumnBatch, WindowAccumulator
from beam_ml.monitoring.follow import LabelReader
from beam_ml.monitoring.prom import serve_metrics
from beam_ml.monitoring.table import WriteMonitorRecordsToBigQuery
from beam_ml.monitoring.stats import (MAX_TRACKED_VALUES, NUMERIC_BINS, TOP_VALUES, CategoricalStats, NumericStats,
                                      ScoreStats, TrainingStatistics, bin_edges, category_counts, numeric_counts,
                                      prune_counts, read_training_statistics, write_training_statistics)
from beam_ml.monitoring.window import LabelJoin, VersionFollower, WindowMonitor, clean_record, encode_record, window_records

__all__ = ["TrainingStatisticsTransform", "HistogramCombineFn", "batch_histograms", "score_stats_from_evaluation",
           "write_model_statistics", "plan_monitor", "WatchPredictions", "WatchBatchPredictions", "MonitorBatchesFn", "TallyDeadLetters", "dead_tally"]

# ----------------------------------------------------------------------------- training statistics


def _numeric_column(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, int]:
    """(present values, missing rows) of a list<float> column: a null or empty list, or NaN, is missing."""
    col = batch.column(name)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64)
    nan = np.isnan(values)
    return values[~nan], int((lengths == 0).sum()) + int(nan.sum())


def _category_column(batch: pa.RecordBatch, name: str) -> tuple[list, int]:
    col = batch.column(name)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
              for v in pc.list_flatten(col).to_pylist() if v is not None]
    blank = sum(1 for v in values if v == "")
    return [v for v in values if v != ""], int((lengths == 0).sum()) + blank


def _train_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    # deferred: beam_ml.preprocess imports tf.Transform; only training batches carry its split column
    from beam_ml.preprocess import SPLIT_COLUMN, TRAIN

    return batch.filter(pc.equal(pc.list_flatten(batch.column(SPLIT_COLUMN)), TRAIN))


def _numeric_samples(batch: pa.RecordBatch, numeric: Sequence[str]):
    batch = _train_rows(batch)
    for name in numeric:
        values, _ = _numeric_column(batch, name)
        finite = values[np.isfinite(values)]
        if len(finite):
            yield name, finite.tolist()  # floats, not numpy scalars: cheap for the combiner to pickle


def batch_histograms(batch: pa.RecordBatch, spec_features: dict, edges: dict, train_only: bool = True) -> dict:
    """The partial accumulator of one batch: per feature counts (see HistogramCombineFn)."""
    if train_only:
        batch = _train_rows(batch)
    acc: dict[str, dict] = {}
    for name, kind in spec_features.items():
        if kind == "numeric":
            values, missing = _numeric_column(batch, name)
            e = edges.get(name, [])
            finite = values[np.isfinite(values)]
            acc[name] = {"counts": numeric_counts(values, e).tolist(), "missing": missing, "rows": batch.num_rows,
                         "min": float(finite.min()) if len(finite) else None,
                         "max": float(finite.max()) if len(finite) else None}
        else:
            values, missing = _category_column(batch, name)
            acc[name] = {"values": category_counts(values), "other": 0, "missing": missing, "rows": batch.num_rows}
    return acc


def _merge_min(a, b, fn):
    return b if a is None else a if b is None else fn(a, b)


class HistogramCombineFn(beam.CombineFn):
    """Sums per-batch histograms (`batch_histograms`); categorical counts are pruned to MAX_TRACKED_VALUES."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, partial):
        return self.merge_accumulators([acc, partial])

    def merge_accumulators(self, accumulators):
        out: dict[str, dict] = {}
        for acc in accumulators:
            for name, part in acc.items():
                into = out.get(name)
                if into is None:
                    out[name] = into = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                                        for k, v in part.items()}
                    continue
                into["missing"] += part["missing"]
                into["rows"] += part["rows"]
                if "counts" in part:
                    into["counts"] = [a + b for a, b in zip(into["counts"], part["counts"])]
                    into["min"] = _merge_min(into["min"], part["min"], min)
                    into["max"] = _merge_min(into["max"], part["max"], max)
                else:
                    values = into["values"]
                    for k, v in part["values"].items():
                        values[k] = values.get(k, 0) + v
                    into["other"] += part["other"]
                    if len(values) > MAX_TRACKED_VALUES:  # bounded memory: keep the largest
                        into["values"], dropped = prune_counts(values, MAX_TRACKED_VALUES // 2)
                        into["other"] += dropped
        return out

    def extract_output(self, acc):
        return acc


def _statistics(acc: dict, spec_features: dict, edges: dict) -> dict:
    features = {}
    rows = 0
    for name, kind in spec_features.items():
        part = acc.get(name)
        if kind == "numeric":
            e = edges.get(name, [])
            part = part or {"counts": [0] * (len(e) + 1), "missing": 0, "rows": 0, "min": None, "max": None}
            features[name] = NumericStats(edges=list(e), counts=part["counts"], missing=part["missing"],
                                          rows=part["rows"], min=part["min"], max=part["max"])
        else:
            part = part or {"values": {}, "other": 0, "missing": 0, "rows": 0}
            top, other = prune_counts(part["values"], TOP_VALUES)
            features[name] = CategoricalStats(counts=top, other=other + part["other"], missing=part["missing"],
                                              rows=part["rows"])
        rows = max(rows, features[name].rows)
    return TrainingStatistics(features=features, scores=None, rows=rows).to_dict()


class TrainingStatisticsTransform(beam.PTransform):
    """Marked training batches (SPLIT_COLUMN present) -> one dict: TrainingStatistics.to_dict() without scores.

    Args:
      spec: the DatasetSpec.
      bins: numeric bins (quantile edges from an ApproximateQuantiles sketch).
    """

    def __init__(self, spec, bins: int = NUMERIC_BINS):
        super().__init__()
        self._features = {c: ("categorical" if c in spec.categorical_columns else "numeric")
                          for c in spec.feature_columns}
        self._bins = bins

    def expand(self, batches):
        numeric = [c for c, k in self._features.items() if k == "numeric"]
        edges = (batches
                 | "NumericSamples" >> beam.FlatMap(_numeric_samples, numeric)
                 | "Quantiles" >> beam.CombinePerKey(beam.transforms.stats.ApproximateQuantilesCombineFn.create(
                     num_quantiles=self._bins + 1, epsilon=1e-3, input_batched=True))
                 | "BinEdges" >> beam.MapTuple(lambda name, q: (name, bin_edges(q))))
        edges_side = beam.pvalue.AsDict(edges)
        return (batches
                | "Histograms" >> beam.Map(lambda b, e: batch_histograms(b, self._features, e), e=edges_side)
                | "MergeHistograms" >> beam.CombineGlobally(HistogramCombineFn())
                | "Statistics" >> beam.Map(lambda acc, e: _statistics(acc, self._features, e), e=edges_side))


def score_stats_from_evaluation(acc: dict, task: str, threshold: float, bins: int = 20) -> Optional[dict]:
    """The test split's ScoreStats (as a dict) from the evaluation accumulator (`beam_ml.evaluation.accumulate`).

    Binary/anomaly: its [negatives, positives] score histogram over [0, 1], summed and coarsened to `bins`;
    multiclass: the top-probability calibration counts. The positive rate is the share at or above the threshold.
    """
    # deferred: beam_ml.evaluation imports scikit-learn and TensorFlow signatures; only training calls this
    from beam_ml.evaluation import OVERALL

    overall = acc.get(OVERALL) if acc else None
    if not overall:
        return None
    if "hist" in overall:
        fine = np.asarray(overall["hist"]).sum(axis=0)
        tp, fp, tn, fn = (int(x) for x in overall["at_threshold"])
        rows = tp + fp + tn + fn
        positive_rate = (tp + fp) / rows if rows else None
    else:
        fine = np.asarray(overall["cal"][0])
        positive_rate = None
    if len(fine) % bins == 0:
        counts = fine.reshape(bins, -1).sum(axis=1)
    else:  # fewer fine bins than asked (calibration's 10): keep them
        counts = fine
    return ScoreStats(counts=[int(c) for c in counts], positive_rate=positive_rate, threshold=float(threshold),
                      task=task).to_dict()


# ----------------------------------------------------------------------------- serving


_HAS_ERROR = operator.methodcaller("__contains__", "error")
_TALLY_LOCK = threading.Lock()
_TALLIES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def dead_tally(token: str) -> dict[str, int]:
    """Takes (and resets) the dead letters counted per stage under `token` in this process."""
    with _TALLY_LOCK:
        counts = dict(_TALLIES.pop(token, {}))
    return counts


class TallyDeadLetters(beam.DoFn):
    """Counts DeadLetters per stage for the monitor of the same token (a leaf: outputs nothing)."""

    def __init__(self, token: str):
        self._token = token

    def process(self, dead):
        with _TALLY_LOCK:
            _TALLIES[self._token][getattr(dead, "stage", "unknown") or "unknown"] += 1


class MonitorBatchesFn(beam.DoFn):
    """ScoredBatch (rows kept) -> lists of (key, value) monitoring messages; alerts also tagged 'alerts'.

    Args:
      model_dir: the served model (its training statistics are read at setup, local or gs://).
      window: the WindowSpec.
      thresholds: the Thresholds.
      token: the TallyDeadLetters token of this pipeline's dead letters.
      source: what is monitored (the input topic or file), copied into every record.
      label_topic / kafka_config / positive_label: delayed ground truth on a topic (optional).
      metrics_port: serve /metrics (Prometheus) on 127.0.0.1:<port> from this process (0 = off).
    """

    def __init__(self, model_dir: str, window, thresholds, token: str, source: str = "",
                 label_topic: Optional[str] = None, kafka_config=None,
                 positive_label: Optional[str] = None, metrics_port: int = 0, metrics_host: str = "127.0.0.1"):
        self._model_dir = model_dir
        self._window = window
        self._thresholds = thresholds
        self._token = token
        self._source = source
        self._label_topic = label_topic
        self._kafka = kafka_config
        self._positive_label = positive_label
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._windows = beam.metrics.Metrics.counter("beam_ml.monitor", "windows")
        self._alerts = beam.metrics.Metrics.counter("beam_ml.monitor", "alerts")
        self._bad = beam.metrics.Metrics.counter("beam_ml.monitor", "bad_rows")

    def setup(self):
        # deferred, and here rather than at the first window: importing it (scikit-learn, seconds) inside
        # process() stalled the stream it watches (bench_monitor, 2026-12-06)
        import beam_ml.evaluation  # noqa: F401  pylint: disable=unused-import

        version_dir, _, _ = load_model_metadata(self._model_dir)
        stats = read_training_statistics(version_dir)
        if stats is None:
            raise RuntimeError(f"--monitor: {version_dir} has no training statistics (assets.extra/monitoring.json); "
                               "retrain it with this version of beam_ml")
        labels = LabelJoin(self._positive_label) if self._label_topic else None
        self.monitor = WindowMonitor(stats, self._window, self._thresholds, source=self._source, labels=labels)
        # a hot-reloaded version is compared with its own training statistics from its first prediction on
        self._versions = VersionFollower(self.monitor, version_dir, model_root_of(self._model_dir))
        self._labels = (LabelReader(self._kafka.client_kwargs(), self._label_topic, "label")
                        if self._label_topic else None)
        self._gauges = None
        if self._metrics_port:
            self._gauges = serve_metrics(self._metrics_port, self._metrics_host)

    def _emit(self, records: list):
        if not records:
            return
        records = [clean_record(r) for r in records]
        alerts = [r for r in records if r["type"] == "alert"]
        for r in records:
            if r["type"] == "monitoring":
                self._windows.inc()
                self._bad.inc(r["events"]["bad_rows"])
                if self._gauges is not None:
                    self._gauges.update(r)
        self._alerts.inc(len(alerts))
        yield [encode_record(r) for r in records]
        if alerts:
            yield beam.pvalue.TaggedOutput("alerts", [encode_record(a) for a in alerts])

    def process(self, scored):
        m = self.monitor
        for stage, n in dead_tally(self._token).items():
            m.dead(stage, n)
        if self._labels is not None:
            m.labels(self._labels.drain())
        refs = scored.refs
        if scored.columns:  # the features as the model got them (RowBatchModelHandler, keep_rows)
            rows = ColumnBatch(scored.columns, len(refs))
        else:
            rows = scored.rows if scored.rows is not None else [None] * len(refs)
        now_ms = time.time() * 1000.0
        predictions = scored.predictions
        failed = sum(map(_HAS_ERROR, predictions))
        if failed:  # inference failures: counted as dead letters, kept out of the window's figures
            m.dead("inference", failed)
            kept = [i for i, p in enumerate(predictions) if "error" not in p]
            rows = rows.take(kept) if isinstance(rows, ColumnBatch) else [rows[i] for i in kept]
            refs, predictions = [refs[i] for i in kept], [predictions[i] for i in kept]
        ids = [ref.id for ref in refs]
        latencies = [now_ms - float(value) for ref in refs for name, value in ref.carry
                     if name == "event_ts" and value is not None]
        switched = self._versions.served({p.get("model_version") for p in predictions})
        yield from self._emit(switched + m.observe(rows, predictions, latencies, ids))

    def finish_bundle(self):
        # A due duration window closes here too. On an idle stream the Kafka read ends a bundle at every empty
        # poll (--poll_timeout), so windows close on time without events (a timer would not fire on the local
        # runner while the source runs).
        m = self.monitor
        if m.window.kind != "duration":
            return
        if self._labels is not None:
            m.labels(self._labels.drain())
        now = time.time()
        for out in self._emit(m.tick()):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value, now))
            else:
                yield GlobalWindows.windowed_value(out, now)

    def teardown(self):
        if getattr(self, "_labels", None) is not None:
            self._labels.stop()


def write_model_statistics(_, stats: dict, test_accumulator: dict, final: dict, task: str) -> dict:
    """Completes the training statistics with the test split's scores and writes them beside the exported model.

    Returns the statistics dict (the training report shows them).
    """
    stats = dict(stats)
    stats["scores"] = score_stats_from_evaluation(test_accumulator, task, final["threshold"])
    write_training_statistics(final["version_dir"], TrainingStatistics.from_dict(stats))
    return stats


def plan_monitor(settings, model_dir: str):
    """`settings` (MonitorOptions.validated(): None without --monitor) once the model is known to have statistics.

    Raises:
      UserError: a model without training statistics.
    """
    if settings is None:
        return None
    version_dir = resolve_version_dir(model_dir)
    if read_training_statistics(version_dir) is None:
        raise UserError(f"--monitor: {version_dir} has no training statistics (assets.extra/monitoring.json): "
                        "train it again with this beam_ml to monitor it")
    if settings.table is not None and settings.table.endpoint is not None:
        settings.table.endpoint.announce("writes")  # fails fast when nothing answers there
    return settings


class WatchPredictions(beam.PTransform):
    """(scored batches, tuple of dead-letter PCollections) -> monitoring records to their topics.

    Returns the DoOutputsTuple of MonitorBatchesFn ('records' and 'alerts': lists of (key, value) messages).
    """

    def __init__(self, settings, model_dir: str, source: str, kafka_config=None,
                 positive_label: Optional[str] = None, producer_config: Optional[dict] = None):
        super().__init__()
        self._settings = settings
        self._model_dir = model_dir
        self._source = source
        self._kafka = kafka_config
        self._positive_label = positive_label
        self._producer = producer_config or {}

    def expand(self, inputs):
        scored, dead_parts = inputs
        s = self._settings
        token = uuid.uuid4().hex
        for i, part in enumerate(dead_parts):
            _ = part | f"TallyDead{i}" >> beam.ParDo(TallyDeadLetters(token))
        out = scored | "Watch" >> beam.ParDo(MonitorBatchesFn(
            self._model_dir, s.window, s.thresholds, token, source=self._source, label_topic=s.label_topic,
            kafka_config=self._kafka, positive_label=self._positive_label, metrics_port=s.metrics_port,
            metrics_host=s.metrics_host)).with_outputs("alerts", main="records")
        if s.topic:
            _ = out.records | "WriteMonitorRecords" >> WriteToKafka(None, s.topic, client_config=self._kafka,
                                                                    producer_config=self._producer)
        if s.alert_topic:
            _ = out.alerts | "WriteAlerts" >> WriteToKafka(None, s.alert_topic, client_config=self._kafka,
                                                           producer_config=self._producer)
        if s.table is not None:  # monitoring and alert records, one row each (kind column)
            _ = out.records | "WriteMonitorTable" >> WriteMonitorRecordsToBigQuery(s.table)
        return out


class _WindowCombineFn(beam.CombineFn):
    """Batches of (row, prediction) -> one WindowAccumulator (mergeable: counts over the training buckets)."""

    def __init__(self, stats: dict):
        self._stats = stats

    def create_accumulator(self):
        return WindowAccumulator(TrainingStatistics.from_dict(self._stats))

    def add_input(self, acc, batch):
        acc.add_rows([row for row, _ in batch])
        acc.add_predictions([p for _, p in batch])
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        first = next(accumulators)
        for acc in accumulators:
            first.merge(acc)
        return first

    def extract_output(self, acc):
        return acc


def _batch_records(acc, dead: dict, thresholds, source: str, start: float) -> list:
    for stage, n in dead.items():
        acc.add_dead(stage, n)
    window = {"id": 0, "kind": "all", "size": None, "start_ts": int(start * 1000), "end_ts": int(time.time() * 1000)}
    return [clean_record(r) for r in window_records(acc, window, thresholds, source)]


class WatchBatchPredictions(beam.PTransform):
    """batch_predict --monitor: (PCollection[(RowRef, PredictionResult)], PCollection[DeadLetter]) -> the records.

    The whole input is one window (kind 'all'): one monitoring record and its alerts, written to
    --monitor_topic (and alerts to --alert_topic) and/or --monitor_table or, without either, as JSON lines to
    `output_path`.
    """

    def __init__(self, settings, version_dir: str, source: str, kafka_config=None, output_path: Optional[str] = None):
        super().__init__()
        self._settings = settings
        self._stats = read_training_statistics(version_dir).to_dict()
        self._source = source
        self._kafka = kafka_config
        self._output_path = output_path

    def expand(self, inputs):
        predictions, dead = inputs
        s = self._settings
        dead_counts = (dead
                       | "DeadStages" >> beam.Map(lambda d: getattr(d, "stage", "unknown") or "unknown")
                       | "CountDeadStages" >> beam.combiners.Count.PerElement())
        records = (predictions
                   | "RowAndPrediction" >> beam.Map(lambda kv: (kv[1].example, kv[1].inference))
                   | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=2000)
                   | "Accumulate" >> beam.CombineGlobally(_WindowCombineFn(self._stats))
                   | "Records" >> beam.Map(_batch_records, beam.pvalue.AsDict(dead_counts), s.thresholds,
                                           self._source, time.time()))
        if s.topic:
            _ = (records | "EncodeRecords" >> beam.Map(lambda rs: [encode_record(r) for r in rs])
                 | "WriteMonitorRecords" >> WriteToKafka(None, s.topic, client_config=self._kafka))
        if s.alert_topic:
            _ = (records | "EncodeAlerts" >> beam.Map(lambda rs: [encode_record(r) for r in rs if r["type"] == "alert"])
                 | "WriteAlerts" >> WriteToKafka(None, s.alert_topic, client_config=self._kafka))
        if s.table is not None:
            _ = records | "WriteMonitorTable" >> WriteMonitorRecordsToBigQuery(s.table)
        if self._output_path:
            _ = (records | "RecordLines" >> beam.FlatMap(lambda rs: [json.dumps(r) for r in rs])
                 | "WriteMonitorFile" >> beam.io.WriteToText(self._output_path, shard_name_template=""))
        return records
