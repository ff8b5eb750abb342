"""From RunInference results to output records and dead letters.

    predictions, dead_parts = rows | 'RunInference' >> RunInferenceWithDeadLetters(handler)
    records = predictions | beam.Map(lambda kv: prediction_record(*kv, id_name="event_id"))

`rows` are (RowRef, raw row) pairs; the RowRef (where the row came from) rides
through RunInference as its key. The dead letters come back as a tuple of
PCollections, not one flattened PCollection: on the local FnApiRunner a Flatten
downstream of an unbounded read holds everything after it until the read ends
(verified with Beam 2.77), so streaming pipelines write each part separately.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from beam_ml.metrics import CountDeadLetters  # re-exported: the predict pipelines count with it
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.inference.handler import ServingModelHandler
from beam_ml.records import RowRef, raw_text

__all__ = ["RunInferenceWithDeadLetters", "CountDeadLetters", "prediction_record", "prediction_fields",
           "inference_dead_letters", "is_failure"]


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
    return prediction_fields(ref, result.inference, id_name)


def prediction_fields(ref: RowRef, inference: Mapping[str, Any], id_name: str = "id") -> dict[str, Any]:
    """`prediction_record` from a prediction dict (`ServingModelHandler.score_rows`) instead of a PredictionResult."""
    record: dict[str, Any] = {id_name: ref.id} if ref.id is not None else {}
    record["source"] = ref.source
    record["position"] = ref.position
    record["score"] = _json_safe(float(inference["score"]))
    record["class_id"] = int(inference["class_id"])
    record["class"] = inference["class"]
    record["threshold"] = float(inference["threshold"])
    record["model_version"] = int(inference["model_version"])
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
