"""Beam RunInference over an exported beam_ml model: raw rows in, predictions out.

Beam's TensorFlow handlers load models with `tf.keras.models.load_model` and call
`model(tf.stack(batch))`: they cannot feed raw dict rows to a SavedModel that
embeds the tf.Transform graph, and they break with Keras 3. `ServingModelHandler`
is a `ModelHandler[dict, PredictionResult, ServingModel]` over `tf.saved_model.load`
instead (through `beam_ml.serving.ServingModel`):

    rows = ...  # PCollection[(RowRef, dict)]: raw records that passed validation
    predictions, dead_parts = rows | 'RunInference' >> RunInferenceWithDeadLetters(
        ServingModelHandler('out/fraud/model', reload_interval=10))

Sample command lines (the pipelines built on this module):

    python -m pipelines.batch_predict --model_dir=out/fraud/model --input=new.csv --output=preds.jsonl
    python -m pipelines.stream_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --output_topic=predictions --dead_letter_topic=transactions-dlq --streaming

Hot reload. A new version (`model/<n+1>/`, written atomically by
`beam_ml.export`) is picked up while a pipeline runs, in one of two ways:

* In-band polling (`ServingModelHandler(reload_interval=S)`): at most every S
  seconds, `run_inference` lists the versions under the model root and loads
  a newer complete one. Works on every runner, including the local
  FnApiRunner, because it needs no side input, timer or trigger.
* Beam's side input (`WatchModelVersions` as RunInference's
  `model_metadata_pcoll`): the usual Dataflow mechanism. It does NOT work on
  the local FnApiRunner (verified with Beam 2.77): a stage whose side input
  comes from a never-ending splittable DoFn is only scheduled once that DoFn
  finishes, and each deferred bundle re-commits everything the producer has
  emitted so far, so `AsSingleton` sees duplicates and fails. (Beam's own
  `WatchFilePattern` additionally uses a processing-time trigger, which
  crashes there.)

Failures. When a batch fails, `ServingModelHandler` re-scores its rows one at
a time, so a single poisoned row does not take its batch with it; rows that
still fail become `DeadLetter(stage='inference')` with the exception as the
reason (`RunInferenceWithDeadLetters`, which also keeps RunInference's own
exception handling as a backstop).

Streaming on the local FnApiRunner: steps fused with the unbounded read
stream bundle by bundle, but a Flatten (or a GroupByKey) after it holds its
output until the read ends. Nothing here flattens; dead letters come back as a
tuple of PCollections for the caller to write one by one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler, ModelMetadata, PredictionResult,
                                           RunInference)
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.export import MODEL_METADATA, list_versions
from beam_ml.records import raw_text, validate_record
from beam_ml.serving import ServingModel, resolve_version_dir
from beam_ml.spec import DatasetSpec

__all__ = [
    "RowRef",
    "ServingModelHandler",
    "RunInferenceWithDeadLetters",
    "WatchModelVersions",
    "default_inference_fn",
    "model_root_of",
    "prediction_record",
    "is_failure",
    "inference_dead_letters",
    "METRICS_NAMESPACE",
    "PREDICT_NAMESPACE",
    "DEAD_TAG",
    "ParseEventsFn",
    "VALUE_FORMATS",
    "ValidateRowsFn",
    "CountDeadLetters",
    "load_model_metadata",
    "event_row",
]

_LOGGER = logging.getLogger(__name__)

METRICS_NAMESPACE = "beam_ml.inference"
# Row accounting of the predict pipelines (rows in = predictions + dead letters).
PREDICT_NAMESPACE = "beam_ml.predict"


InferenceFn = Callable[[ServingModel, Sequence[Mapping[str, Any]]], list]


class RowRef(NamedTuple):
    """Where a row came from, carried beside it through RunInference as its key.

    Attributes:
      source: a file path or a Kafka `topic/partition`.
      position: the file line (1-based, header = 1) or the Kafka offset.
      id: the row's id: the spec's key column, an event_id, or None.
      carry: (name, value) pairs copied into the prediction record untouched
        (a label kept for evaluation, event timestamps, ...).
    """

    source: str
    position: Optional[int]
    id: Optional[str] = None
    carry: tuple = ()


def default_inference_fn(model: ServingModel, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Scores a batch of validated raw records with the model's serve_dict signature."""
    return model.predict_records(list(batch))


def model_root_of(model_dir: str) -> Optional[str]:
    """The directory whose integer subdirectories are versions, or None when pinned.

    `model_dir` may be a model root (`out/fraud/model`), a train output dir
    (`out/fraud`) or one version directory (`out/fraud/model/3`); a version
    directory pins that version, so there is nothing to watch.
    """
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return None
    if os.path.isdir(os.path.join(model_dir, "model")) and not list_versions(model_dir):
        return os.path.join(model_dir, "model")
    return model_dir


class ServingModelHandler(ModelHandler[Mapping[str, Any], PredictionResult, ServingModel]):
    """Loads a beam_ml SavedModel with tf.saved_model.load and scores raw dict rows.

    Each PredictionResult's `inference` is a dict: score, class_id, class,
    (probabilities), threshold and model_version; its `model_id` is the
    version directory. No validation happens here: validate rows first
    (`beam_ml.serving.validate_record`).
    """

    def __init__(self, model_dir: str, *, min_batch_size: int = 1, max_batch_size: int = 256,
                 reload_interval: Optional[float] = None, inference_fn: Optional[InferenceFn] = None,
                 clock: Callable[[], float] = time.monotonic):
        """Configures the handler; nothing is loaded until a worker calls load_model.

        Args:
          model_dir: a model root (latest version is served), a train output
            directory, or one version directory (pinned, never reloaded).
          min_batch_size: RunInference's BatchElements lower bound.
          max_batch_size: RunInference's BatchElements upper bound.
          reload_interval: seconds between checks for a newer version inside
            run_inference (in-band hot reload); None disables it, 0 checks on
            every batch.
          inference_fn: `(model, batch) -> [prediction dict]`; injected by tests
            (default `default_inference_fn`).
          clock: monotonic seconds, for the reload schedule. *For testing.*
        """
        super().__init__()
        if min_batch_size < 1 or max_batch_size < min_batch_size:
            raise ValueError(f"batch sizes: expected 1 <= min_batch_size <= max_batch_size, "
                             f"got {min_batch_size}, {max_batch_size}")
        if reload_interval is not None and reload_interval < 0:
            raise ValueError(f"reload_interval: expected >= 0 seconds, got {reload_interval}")
        self._model_dir = model_dir
        self._model_path: Optional[str] = None  # set by update_model_path
        self._min_batch_size = min_batch_size
        self._max_batch_size = max_batch_size
        self._reload_interval = reload_interval
        self._inference_fn = inference_fn or default_inference_fn
        self._clock = clock
        self._init_reload_state()

    def _init_reload_state(self) -> None:
        self._reloaded: Optional[ServingModel] = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in ("_reloaded", "_lock", "_next_check"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_reload_state()

    # ------------------------------------------------------------ ModelHandler
    def load_model(self) -> ServingModel:
        """Loads the version set by update_model_path, else the latest under model_dir."""
        return ServingModel.load(self._model_path or self._model_dir)

    def update_model_path(self, model_path: Optional[str] = None) -> None:
        """Serves `model_path` (a version directory) from the next load_model on.

        Called by RunInference when its `model_metadata_pcoll` side input names
        a new model_id; an empty path keeps the current model (Beam passes ''
        when a side input carries no new model).
        """
        if model_path:
            self._model_path = model_path

    def run_inference(self, batch: Sequence[Mapping[str, Any]], model: ServingModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        """Scores a batch; one PredictionResult per row, naming the model version.

        When the batch fails, its rows are scored one at a time, so one
        poisoned row does not take its batch with it; a row that fails alone
        gets `inference = {'error': reason}` (see `is_failure`), which
        RunInferenceWithDeadLetters turns into a dead letter.
        """
        model = self._maybe_reload(model)
        try:
            predictions = self._score(model, batch)
        except Exception as e:  # pylint: disable=broad-except
            if len(batch) == 1:
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, "failed_rows").inc()
                predictions = [{"error": f"inference failed: {e!r}"}]
            else:
                predictions = [self._score_alone(model, row) for row in batch]
        extra = {"threshold": model.threshold, "model_version": model.version}
        return [PredictionResult(row, p if "error" in p else {**p, **extra}, model.path)
                for row, p in zip(batch, predictions)]

    def _score(self, model: ServingModel, batch: Sequence[Mapping[str, Any]]) -> list:
        predictions = self._inference_fn(model, batch)
        if len(predictions) != len(batch):
            raise RuntimeError(f"inference returned {len(predictions)} predictions for {len(batch)} rows")
        return predictions

    def _score_alone(self, model: ServingModel, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._score(model, [row])[0]
        except Exception as e:  # pylint: disable=broad-except
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "failed_rows").inc()
            return {"error": f"inference failed: {e!r}"}

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # Never max_batch_duration_secs: its stateful batching needs processing-time
        # timers, which crash on the local FnApiRunner.
        return {"min_batch_size": self._min_batch_size, "max_batch_size": self._max_batch_size}

    def get_num_bytes(self, batch: Sequence[Mapping[str, Any]]) -> int:
        return sum(sys.getsizeof(row) for row in batch)

    # -------------------------------------------------------------- hot reload
    def _maybe_reload(self, model: ServingModel) -> ServingModel:
        """The newest model this handler knows of, checking the model root when due."""
        if self._reload_interval is None:
            return model
        with self._lock:
            current = self._reloaded if self._reloaded is not None and self._reloaded.version > model.version \
                else model
            now = self._clock()
            if now < self._next_check:
                return current
            self._next_check = now + self._reload_interval
            root = model_root_of(self._model_dir)
            versions = list_versions(root) if root else []
            if not versions or versions[-1] <= current.version:
                return current
            path = os.path.join(root, str(versions[-1]))
            try:
                fresh = ServingModel(path)
            except Exception as e:  # a broken export must not stop serving the current one
                _LOGGER.warning("Hot reload: cannot load %s, keeping version %d: %s", path, current.version, e)
                return current
            _LOGGER.info("Hot reload: model version %d -> %d (%s)", current.version, fresh.version, path)
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "model_reloads").inc()
            self._reloaded = fresh
            # Later loads by RunInference (a new worker, a retried bundle) start here too.
            self._model_path = path
            return fresh


# ------------------------------------------------------------------ outputs
def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def prediction_record(ref: RowRef, result: PredictionResult, id_name: str = "id") -> dict[str, Any]:
    """One flat output record: the row's id, its prediction, the model version and carried fields.

    Args:
      ref: where the row came from.
      result: the PredictionResult of ServingModelHandler.
      id_name: the output field holding `ref.id` (e.g. the key column, 'event_id').

    Returns:
      A JSON-serialisable dict.
    """
    inference = result.inference
    record: dict[str, Any] = {id_name: ref.id} if ref.id is not None else {}
    record.update(source=ref.source, position=ref.position, score=_json_safe(float(inference["score"])),
                  class_id=int(inference["class_id"]), **{"class": inference["class"]},
                  threshold=float(inference["threshold"]), model_version=int(inference["model_version"]))
    if "probabilities" in inference:
        record["probabilities"] = [float(x) for x in inference["probabilities"]]
    for name, value in ref.carry:
        record[name] = value
    return record


def inference_dead_letters(failed: tuple, mask_columns: Sequence[str] = ()) -> list[DeadLetter]:
    """Dead letters for one element of RunInference's `failed_inferences` output.

    Args:
      failed: `(batch, (exception type, repr, traceback lines))`, where the
        batch holds (RowRef, row) pairs.
      mask_columns: PII columns to mask in the echoed row.

    Returns:
      One DeadLetter(stage='inference') per row of the batch.
    """
    batch, (_, exc_repr, _) = failed
    reason = f"inference failed: {exc_repr}"
    return [DeadLetter(ref.source, ref.position, reason, raw_text(row, mask_columns), stage="inference")
            for ref, row in batch]


def is_failure(result: PredictionResult) -> bool:
    """Whether ServingModelHandler could not score this row (its inference holds 'error')."""
    return "error" in result.inference


class _SplitFailuresFn(beam.DoFn):
    def __init__(self, mask_columns: Sequence[str]):
        self._mask_columns = tuple(mask_columns)

    def process(self, element):
        ref, result = element
        if is_failure(result):
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                ref.source, ref.position, result.inference["error"], raw_text(result.example, self._mask_columns),
                stage="inference"))
        else:
            yield element


class RunInferenceWithDeadLetters(beam.PTransform):
    """RunInference on (RowRef, row) pairs; rows whose inference fails become dead letters.

    Returns `(predictions, dead_letters)`: a PCollection of (RowRef,
    PredictionResult) pairs and a tuple of PCollections of
    DeadLetter(stage='inference') -- rows the handler could not score even
    alone, and (a backstop) batches RunInference's exception handling caught.
    The dead letters are a tuple, not one flattened PCollection, because on
    the local FnApiRunner a Flatten downstream of an unbounded read holds
    everything after it until the read ends (verified with Beam 2.77); write
    each part separately in streaming pipelines.
    """

    def __init__(self, handler: ServingModelHandler,
                 model_metadata_pcoll: Optional[beam.PCollection] = None, mask_columns: Sequence[str] = ()):
        """Args:
          handler: the ServingModelHandler (its batch sizes drive batching).
          model_metadata_pcoll: optional ModelMetadata side input for hot reload
            on runners with streaming side inputs (see WatchModelVersions).
          mask_columns: PII columns masked in dead letters (the spec's 'mask' role).
        """
        super().__init__()
        self._handler = handler
        self._mask_columns = tuple(mask_columns)
        self._model_metadata = model_metadata_pcoll

    def expand(self, rows):
        results, failed = rows | "RunInference" >> RunInference(
            KeyedModelHandler(self._handler), model_metadata_pcoll=self._model_metadata).with_exception_handling()
        split = results | "SplitFailures" >> beam.ParDo(_SplitFailuresFn(self._mask_columns)).with_outputs(
            DEAD_TAG, main="predictions")
        failed_batches = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
            inference_dead_letters, self._mask_columns)
        return split.predictions, (split[DEAD_TAG], failed_batches)


# ------------------------------------------------------- events and rows
def load_model_metadata(model_dir: str) -> tuple[str, dict[str, Any], DatasetSpec]:
    """(version dir, beam_ml.json contents, spec) of the version `model_dir` serves; no TensorFlow.

    Raises:
      UserError: naming --model_dir when there is no beam_ml export there.
    """
    version_dir = resolve_version_dir(model_dir)
    path = os.path.join(version_dir, MODEL_METADATA)
    if not os.path.isfile(path):
        raise UserError(f"--model_dir: {version_dir} has no {MODEL_METADATA}; not a beam_ml export")
    with open(path) as f:
        meta = json.load(f)
    return version_dir, meta, DatasetSpec.from_dict(meta["spec"], source=path)


VALUE_FORMATS = ("json", "csv")


def event_row(record: Any, spec: DatasetSpec, id_field: str = "event_id",
              value_format: str = "json") -> tuple[RowRef, dict[str, Any]]:
    """Parses a Kafka record whose value is an event into (RowRef, row).

    Values are JSON objects, or (value_format='csv') CSV lines whose fields are
    the spec's columns in spec order (`beam_ml.io.kafka_formats.encode_csv_line`);
    CSV cells arrive as strings and are typed by the same validation as JSON.

    The event id is the event's `id_field`, else the spec's key column, else
    the Kafka key, else `topic/partition/offset`. The RowRef carries the
    Kafka key, the record timestamp (`event_ts`, ms) and `produce_ts` when the
    event has one.

    Args:
      record: a `beam_ml.io.kafka.KafkaRecord`.
      spec: the model's dataset spec.
      id_field: the event field holding its id.
      value_format: 'json' or 'csv'.

    Raises:
      ValueError: the value is not a UTF-8 JSON object / a CSV line with the
        spec's columns (the message says why).
    """
    from beam_ml.io.kafka_formats import parse_csv_line, parse_json_object

    if value_format == "csv":
        row = parse_csv_line(record.value, spec.column_names)
    else:
        row = parse_json_object(record.value)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    event_id = row.get(id_field)
    if event_id is None and spec.key_column:
        event_id = row.get(spec.key_column)
    if event_id is None:
        event_id = key if key is not None else f"{record.topic}/{record.partition}/{record.offset}"
    carry: list[tuple[str, Any]] = [("key", key), ("event_ts", int(record.timestamp))]
    if "produce_ts" in row:
        carry.append(("produce_ts", row["produce_ts"]))
    return RowRef(f"{record.topic}/{record.partition}", int(record.offset), str(event_id), tuple(carry)), row


class ParseEventsFn(beam.DoFn):
    """KafkaRecord -> (RowRef, row); undecodable values -> DeadLetter(stage='parse') tagged DEAD_TAG.

    With validate=True it also does ValidateRowsFn's job (stage='validate'):
    one step instead of two per streamed event, which is measurable on the
    local runner where every step costs per-element overhead.
    """

    def __init__(self, spec: DatasetSpec, id_field: str = "event_id", value_format: str = "json",
                 validate: bool = False):
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"value_format must be one of {VALUE_FORMATS}, got {value_format!r}")
        self._spec = spec
        self._id_field = id_field
        self._value_format = value_format
        self._validate = validate
        self._in = beam.metrics.Metrics.counter(PREDICT_NAMESPACE, "rows_in")

    def process(self, record):
        self._in.inc()
        try:
            ref, row = event_row(record, self._spec, self._id_field, self._value_format)
        except ValueError as e:
            raw = record.value.decode("utf-8", "replace") if isinstance(record.value, bytes) else repr(record.value)
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                f"{record.topic}/{record.partition}", int(record.offset), str(e), raw, stage="parse"))
            return
        reason = validate_record(row, self._spec) if self._validate else None
        if reason is None:
            yield ref, row
        else:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                ref.source, ref.position, reason, raw_text(row, self._spec.mask_columns), stage="validate"))


class ValidateRowsFn(beam.DoFn):
    """(RowRef, row) that the model can score pass; others -> DeadLetter(stage='validate') tagged DEAD_TAG."""

    def __init__(self, spec: DatasetSpec):
        self._spec = spec

    def process(self, element):
        ref, row = element
        reason = validate_record(row, self._spec)
        if reason is None:
            yield element
        else:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                ref.source, ref.position, reason, raw_text(row, self._spec.mask_columns), stage="validate"))


class CountDeadLetters(beam.DoFn):
    """Passes dead letters through, counting them (total and per stage) for the row accounting."""

    def __init__(self):
        self._total = beam.metrics.Metrics.counter(PREDICT_NAMESPACE, "dead_letters")

    def process(self, dead: DeadLetter):
        self._total.inc()
        beam.metrics.Metrics.counter(PREDICT_NAMESPACE, f"dead_{dead.stage}").inc()
        yield dead


# ------------------------------------------------------------ version watch
class _VersionRestrictionProvider(RestrictionProvider):
    """The restriction is the range of version numbers not yet announced."""

    def initial_restriction(self, element) -> OffsetRange:
        return OffsetRange(1, sys.maxsize)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> float:
        return 1.0  # unknown and unbounded: never let a runner read it as 2**63


class _MinWatermarkProvider(WatermarkEstimatorProvider):
    # Not ManualWatermarkEstimator.default_provider(): Beam 2.77 starts it at None.
    def initial_estimator_state(self, element, restriction):
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state or MIN_TIMESTAMP)


class _WatchVersionsDoFn(beam.DoFn):
    """Polls `list_versions(model_root)`; claims and announces each newer complete version.

    Claiming version n in the offset tracker moves the restriction to
    [n + 1, ...), so a resumed or checkpointed watch never announces a version
    twice without needing state. Between polls it checkpoints with
    `defer_remainder` (ProcessContinuation.resume breaks on the FnApiRunner).
    """

    def __init__(self, interval: float, stop_after: Optional[float]):
        self._interval = interval
        self._stop_after = stop_after

    @beam.DoFn.unbounded_per_element()
    def process(self, element: tuple[str, float],
                tracker=beam.DoFn.RestrictionParam(_VersionRestrictionProvider()),
                watermark_estimator=beam.DoFn.WatermarkEstimatorParam(_MinWatermarkProvider())):
        model_root, started = element
        restriction = tracker.current_restriction()
        if self._stop_after is not None and time.time() >= started + self._stop_after:
            tracker.try_claim(restriction.stop)  # done: no residual
            return
        versions = [v for v in list_versions(model_root) if v >= restriction.start]
        if versions:
            latest = versions[-1]
            if not tracker.try_claim(latest):
                return
            now = Timestamp.now()
            watermark_estimator.set_watermark(now)
            yield beam.window.TimestampedValue(
                ModelMetadata(model_id=os.path.join(model_root, str(latest)), model_name=str(latest)), now)
        tracker.defer_remainder(Duration(seconds=self._interval))


class WatchModelVersions(beam.PTransform):
    """PBegin -> PCollection[ModelMetadata]: each newer version under a model root, once.

    Meant as RunInference's `model_metadata_pcoll` on runners with streaming
    side inputs (Dataflow). The output is in the global window with a
    data-driven trigger (every element fires; no processing-time trigger).
    Not usable as a live side input on the local FnApiRunner: see the module
    docstring.
    """

    def __init__(self, model_root: str, interval: float = 10.0, stop_after: Optional[float] = None):
        """Args:
          model_root: the directory holding version directories.
          interval: seconds between polls.
          stop_after: stop watching after this many seconds (None: never).
        """
        super().__init__()
        self._model_root = model_root
        self._interval = interval
        self._stop_after = stop_after

    def expand(self, pbegin):
        root = self._model_root
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "StartWatch" >> beam.Map(lambda _: (root, time.time()))
                | "PollVersions" >> beam.ParDo(_WatchVersionsDoFn(self._interval, self._stop_after))
                | "GlobalWindow" >> beam.WindowInto(
                    window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING))
