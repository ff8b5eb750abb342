"""Serving a batch per element: one poll's Kafka records are parsed, validated, scored and formatted together.

    polls = p | ReadFromKafka(..., batches=True)                    # list[KafkaRecord] per poll
    parsed = polls | beam.ParDo(ParseEventBatchesFn(spec)).with_outputs(DEAD_TAG, main="rows")
    scored, dead_parts = parsed.rows | ScoreRowBatches(RowBatchModelHandler("out/fraud/model"))
    for ref, prediction in scored_rows(one_scored_batch)[0]: ...

Why: on the local runner every step costs a per-element overhead, which
dominated stream_predict when each event was an element of ~5 steps. Here
each step runs once per poll (up to --max_batch_size records) and the
per-record work is plain Python over a list; the model is called once per
poll (`ServingModel.predict_columns` on column arrays). The per-row pieces
(`beam_ml.inference.events`, `RunInferenceWithDeadLetters`) stay for
batch_predict and per-element pipelines; both make the same decisions
(`event_row`, `validate_record`, `ServingModelHandler.score_rows`).
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.formats import RecordFormat, kafka_dead_letter
from beam_ml.inference.events import EventParserFn, event_format, event_row, invalid_row
from beam_ml.inference.handler import ServingModelHandler
from beam_ml.records import raw_text, validate_record
from beam_ml.serving import ServingModel
from beam_ml.spec import DatasetSpec

__all__ = ["RowBatch", "ScoredBatch", "parse_event_batch", "ParseEventBatchesFn", "RowBatchModelHandler",
           "ScoreRowBatches", "scored_rows"]


class RowBatch(NamedTuple):
    """Scorable rows and where each came from (`beam_ml.records.RowRef`), in the same order."""

    refs: list
    rows: list


class ScoredBatch(NamedTuple):
    """A RowBatch with one prediction dict per row (or {'error': reason} for a row that failed alone).

    `rows` is None when every row was scored: the rows are only needed for
    dead letters, and a smaller element is cheaper for Beam to size (it
    pickles sampled elements to estimate PCollection sizes).
    """

    refs: list
    rows: Optional[list]
    predictions: list
    # --monitor: the rows' feature columns as the model got them (`records_to_columns`), or None
    columns: Optional[dict] = None


def parse_event_batch(records: Sequence[Any], spec: DatasetSpec, id_field: str = "event_id",
                      value_format: Union[str, RecordFormat] = "json", validate: bool = True
                      ) -> tuple[RowBatch, list[DeadLetter]]:
    """Parses (and validates) Kafka records into a RowBatch, and dead letters for the rest.

    Args:
      records: `KafkaRecord`s.
      spec: the served model's dataset spec.
      id_field: the event field holding its id (see `event_row`).
      value_format: a `beam_ml.formats` RecordFormat, or 'json' / 'csv'.
      validate: check each row with `validate_record` (stage 'validate').

    Returns:
      (RowBatch of the good rows, dead letters naming topic/partition and
      offset, stage 'parse' or 'validate'), in record order.
    """
    refs, rows, dead = [], [], []
    mask = spec.mask_columns
    fmt = event_format(value_format, spec)
    for record in records:
        try:
            ref, row = event_row(record, spec, id_field, fmt)
        except ValueError as e:
            dead.append(kafka_dead_letter(record, str(e), fmt))
            continue
        reason = validate_record(row, spec) if validate else None
        if reason is None:
            refs.append(ref)
            rows.append(row)
        else:
            dead.append(invalid_row(ref, reason, row, spec))
    return RowBatch(refs, rows), dead


class ParseEventBatchesFn(EventParserFn):
    """list[KafkaRecord] -> one RowBatch (main output) + DeadLetter(stage='parse'|'validate') tagged DEAD_TAG."""

    def __init__(self, spec: DatasetSpec, id_field: str = "event_id",
                 value_format: Union[str, RecordFormat] = "json", validate: bool = True):
        super().__init__(spec, id_field, value_format, validate)

    def process(self, records: Sequence[Any]):
        self._in.inc(len(records))
        batch, dead = parse_event_batch(records, self._spec, self._id_field, self._value_format, self._validate)
        if batch.rows:
            yield batch
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)


class RowBatchModelHandler(ServingModelHandler):
    """A ServingModelHandler whose examples are RowBatches: one model call per RunInference batch of them.

    RunInference's own batching is set to one RowBatch per call: a RowBatch
    is already one poll's worth of rows, and merging several would hold the
    first until the bundle ends (BatchElements' time-based flush needs
    processing-time timers, which the local runner lacks). Hot reload,
    per-row fallback on a failing batch and the model version in every
    prediction are ServingModelHandler's (`score_rows`).
    """

    # --monitor reads every scored row's features: each ScoredBatch keeps the columns the model got.
    keep_rows = False

    def run_inference(self, batch: Sequence[RowBatch], model: ServingModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[ScoredBatch]:
        rows = [row for b in batch for row in b.rows]
        columns: Optional[dict] = {} if self.keep_rows else None
        _, predictions = self.score_rows(model, rows, columns_out=columns)
        out, i = [], 0
        for b in batch:
            n = len(b.rows)
            scored = predictions[i:i + n]
            failed = any("error" in p for p in scored)
            cols = {k: v[i:i + n] for k, v in columns.items()} if columns else None
            # the monitor reads the model's columns; the rows only when there are none (an injected inference_fn)
            keep = failed or (self.keep_rows and cols is None)
            out.append(ScoredBatch(b.refs, b.rows if keep else None, scored, cols))
            i += n
        return out

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}

    def get_num_bytes(self, batch: Sequence[RowBatch]) -> int:
        # Only feeds RunInference's byte metric; the row count is a cheap stand-in.
        return sum(len(b.rows) for b in batch)


def _failed_batch_dead_letters(failed: tuple, mask_columns: Sequence[str]) -> list[DeadLetter]:
    batch, (_, exc_repr, _) = failed
    reason = f"inference failed: {exc_repr}"
    return [DeadLetter(ref.source, ref.position, reason, raw_text(row, mask_columns), stage="inference")
            for b in batch for ref, row in zip(b.refs, b.rows)]


class ScoreRowBatches(beam.PTransform):
    """RunInference on RowBatches -> (PCollection[ScoredBatch], (PCollection[DeadLetter],)).

    Rows that fail even alone stay in their ScoredBatch with an 'error'
    prediction (split them off with `scored_rows`); the dead-letter part
    is the backstop for a whole call that raised (RunInference's exception
    handling), one DeadLetter(stage='inference') per row. The model
    metadata side input (Dataflow hot reload) works as for
    RunInferenceWithDeadLetters.
    """

    def __init__(self, handler: RowBatchModelHandler, model_metadata_pcoll: Optional[beam.PCollection] = None,
                 mask_columns: Sequence[str] = ()):
        super().__init__()
        self._handler = handler
        self._model_metadata = model_metadata_pcoll
        self._mask_columns = tuple(mask_columns)

    def expand(self, batches):
        scored, failed = batches | "RunInference" >> RunInference(
            self._handler, model_metadata_pcoll=self._model_metadata).with_exception_handling()
        dead = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_dead_letters, self._mask_columns)
        return scored, (dead,)


def scored_rows(scored: ScoredBatch, mask_columns: Sequence[str] = ()) -> tuple[list, list[DeadLetter]]:
    """Splits a ScoredBatch into [(RowRef, prediction dict)] and DeadLetter(stage='inference') for failed rows."""
    good, dead = [], []
    rows = scored.rows if scored.rows is not None else [None] * len(scored.refs)
    for ref, row, p in zip(scored.refs, rows, scored.predictions):
        if "error" in p:
            dead.append(DeadLetter(ref.source, ref.position, p["error"], raw_text(row, mask_columns),
                                   stage="inference"))
        else:
            good.append((ref, p))
    return good, dead
