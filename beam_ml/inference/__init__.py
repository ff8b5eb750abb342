"""Beam RunInference over exported beam_ml models: raw rows in, predictions and dead letters out.

    handler = ServingModelHandler('out/fraud/model', reload_interval=10)
    predictions, dead_parts = rows | 'RunInference' >> RunInferenceWithDeadLetters(handler)

Modules: `handler` (ServingModelHandler: load, score, hot reload), `batches`
(a batch per element: one poll's records parsed, scored and formatted together), `outputs`
(RunInferenceWithDeadLetters, prediction records, dead letters, counting),
`events` (Kafka events -> (RowRef, row) or dead letters), `watch`
(WatchModelVersions, a side input of new versions for Dataflow).
"""
from beam_ml.inference.batches import (ParseEventBatchesFn, RowBatch, RowBatchModelHandler, ScoredBatch,
                                       ScoreRowBatches, parse_event_batch, scored_rows)
from beam_ml.inference.events import VALUE_FORMATS, ParseEventsFn, ValidateRowsFn, event_row
from beam_ml.inference.handler import ServingModelHandler, default_inference_fn
from beam_ml.inference.outputs import (CountDeadLetters, RunInferenceWithDeadLetters, inference_dead_letters,
                                       is_failure, prediction_fields, prediction_record)
from beam_ml.inference.watch import WatchModelVersions

__all__ = [
    "ServingModelHandler",
    "default_inference_fn",
    "RunInferenceWithDeadLetters",
    "CountDeadLetters",
    "prediction_record",
    "prediction_fields",
    "RowBatch",
    "ScoredBatch",
    "parse_event_batch",
    "ParseEventBatchesFn",
    "RowBatchModelHandler",
    "ScoreRowBatches",
    "scored_rows",
    "inference_dead_letters",
    "is_failure",
    "VALUE_FORMATS",
    "ParseEventsFn",
    "ValidateRowsFn",
    "event_row",
    "WatchModelVersions",
]
