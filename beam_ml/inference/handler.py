"""ServingModelHandler: a Beam ModelHandler over an exported beam_ml model, with hot reload.

Beam's TensorFlow handlers load models with `tf.keras.models.load_model` and call
`model(tf.stack(batch))`: they cannot feed raw dict rows to a SavedModel that
embeds the tf.Transform graph, and they break with Keras 3. This handler is a
`ModelHandler[dict, PredictionResult, ServingModel]` over `tf.saved_model.load`
instead (through `beam_ml.serving.ServingModel`):

    handler = ServingModelHandler("out/fraud/model", max_batch_size=256, reload_interval=10)
    results = rows | RunInference(KeyedModelHandler(handler))

Hot reload. A new version (`model/<n+1>/`, written atomically by
`beam_ml.export`) is picked up while a pipeline runs, in one of two ways:

* In-band polling (`reload_interval=S`): at most every S seconds,
  `run_inference` lists the versions under the model root and loads a newer
  complete one. Works on every runner, including the local FnApiRunner,
  because it needs no side input, timer or trigger.
* Beam's side input (`beam_ml.inference.watch.WatchModelVersions` as
  RunInference's `model_metadata_pcoll`, which calls `update_model_path`): the
  usual Dataflow mechanism. It does NOT work on the local FnApiRunner
  (verified with Beam 2.77): a stage whose side input comes from a
  never-ending splittable DoFn is only scheduled once that DoFn finishes.

Pauses. Once a model is loaded, the objects alive then (TensorFlow, Beam, the
model) are frozen out of CPython's cyclic collector (`settle_heap`): its full
collections otherwise walk those millions of objects every few seconds of
streaming, stopping the whole worker for 0.3-0.5 s each time, which made the
stream's p99 latency.

Failures. When a batch fails, the handler re-scores its rows one at a time, so
a single poisoned row does not take its batch with it; a row that still fails
gets `inference = {'error': reason}` (see `beam_ml.inference.outputs`).
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_ml import metrics
from beam_ml.model_store import list_versions, model_root_of
from beam_ml.records import records_to_columns
from beam_ml.serving import ServingModel

__all__ = ["ServingModelHandler", "default_inference_fn", "InferenceFn", "settle_heap"]

_LOGGER = logging.getLogger(__name__)

InferenceFn = Callable[[ServingModel, Sequence[Mapping[str, Any]]], list]


def settle_heap() -> None:
    """Collects garbage once, then freezes every object alive into CPython's permanent generation.

    A full (generation 2) collection scans every tracked object. With TensorFlow,
    Beam and a model loaded that is millions of objects: measured in stream_predict,
    a 0.3-0.5 s stop of the whole worker every 5-15 s, the tail of its latency.
    Frozen objects are neither scanned nor freed, so a reload unfreezes first:
    a model no longer referenced is collected then (at most one stale model lives on).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def default_inference_fn(model: ServingModel, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Scores a batch of validated raw records with the model's serve_dict signature."""
    return model.predict_records(list(batch))


class ServingModelHandler(ModelHandler[Mapping[str, Any], PredictionResult, ServingModel]):
    """Loads a beam_ml SavedModel with tf.saved_model.load and scores raw dict rows.

    Each PredictionResult's `inference` is a dict: score, class_id, class,
    (probabilities), threshold and model_version; its `model_id` is the
    version directory. No validation happens here: validate rows first
    (`beam_ml.records.validate_record`).
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
        model = ServingModel.load(self._model_path or self._model_dir)
        settle_heap()
        return model

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
        model, predictions = self.score_rows(model, batch)
        return [PredictionResult(row, p, model.path) for row, p in zip(batch, predictions)]

    def score_rows(self, model: ServingModel, rows: Sequence[Mapping[str, Any]],
                   columns_out: Optional[dict] = None) -> tuple[ServingModel, list[dict[str, Any]]]:
        """Scores rows with the newest model (hot reload); one prediction dict per row.

        Each prediction holds score, class_id, class (, probabilities),
        threshold and model_version, or only {'error': reason} for a row that
        fails even when scored alone (the rows of a failing batch are scored
        one at a time).

        Args:
          columns_out: a dict to receive the rows' feature columns as the model got them
            (`records_to_columns` under the scoring model's spec), for a caller that reads them too
            (--monitor); left empty when an injected inference_fn scores.

        Returns:
          (the model that scored them, the predictions in row order).
        """
        model = self._maybe_reload(model)
        columns = None
        if columns_out is not None and self._inference_fn is default_inference_fn and rows:
            try:
                columns = records_to_columns(rows, model.spec)
            except Exception:  # pylint: disable=broad-except  # the model call below fails the same way, row by row
                pass
            else:
                columns_out.update(columns)
        try:
            predictions = (self._score(model, rows) if columns is None
                           else self._checked(model.predict_records(rows, columns=columns), rows))
        except Exception as e:  # pylint: disable=broad-except
            if len(rows) == 1:
                beam.metrics.Metrics.counter(metrics.INFERENCE, "failed_rows").inc()
                predictions = [{"error": f"inference failed: {e!r}"}]
            else:
                predictions = [self._score_alone(model, row) for row in rows]
        extra = {"threshold": model.threshold, "model_version": model.version}
        return model, [p if "error" in p else {**p, **extra} for p in predictions]

    @staticmethod
    def _checked(predictions: list, batch: Sequence[Any]) -> list:
        if len(predictions) != len(batch):
            raise RuntimeError(f"inference returned {len(predictions)} predictions for {len(batch)} rows")
        return predictions

    def _score(self, model: ServingModel, batch: Sequence[Mapping[str, Any]]) -> list:
        return self._checked(self._inference_fn(model, batch), batch)

    def _score_alone(self, model: ServingModel, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._score(model, [row])[0]
        except Exception as e:  # pylint: disable=broad-except
            beam.metrics.Metrics.counter(metrics.INFERENCE, "failed_rows").inc()
            return {"error": f"inference failed: {e!r}"}

    def get_metrics_namespace(self) -> str:
        return metrics.INFERENCE

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
            beam.metrics.Metrics.counter(metrics.INFERENCE, "model_reloads").inc()
            self._reloaded = fresh
            settle_heap()
            # Later loads by RunInference (a new worker, a retried bundle) start here too.
            self._model_path = path
            return fresh
