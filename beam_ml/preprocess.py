"""The preprocessing half of training: CSV → split → tf.Transform → TFRecords.

    outputs = build_preprocess(pipeline, spec, PreprocessConfig(input_pattern=..., output_dir=...))

Reads CSV into RecordBatches (dead letters aside), splits rows train/eval by a
seeded hash of each row's key (or line number), analyzes on the train split
only (no leakage of eval statistics), transforms both splits with the same
transform graph and writes:

  <output_dir>/transform_fn/, transformed_metadata/    tf.Transform artifacts
  <output_dir>/data/train-*.tfrecord, eval-*.tfrecord  transformed tf.Examples
  <output_dir>/dead_letter/dead-*.jsonl                 rejected rows, with reasons
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from beam_ml.errors import DeadLetter
from beam_ml.io.csv import DEAD_TAG, ReadCsvBatches, stable_hash_fraction
from beam_ml.io.tfrecord import WriteTFRecordBatches
from beam_ml.spec import DatasetSpec
from transforms.preprocessing import make_preprocessing_fn, tensor_adapter_config

__all__ = ["PreprocessConfig", "build_preprocess", "write_dead_letters", "COUNTER_NAMESPACE"]

COUNTER_NAMESPACE = "beam_ml.preprocess"
TRAIN_PREFIX = "data/train"
EVAL_PREFIX = "data/eval"
DEAD_PREFIX = "dead_letter/dead"


@dataclasses.dataclass
class PreprocessConfig:
    input_pattern: Optional[str]
    output_dir: str
    eval_fraction: float = 0.3
    split_seed: int = 42
    chunk_bytes: int = 8 << 20


class _SplitDoFn(beam.DoFn):
    """Splits each batch into train (main) and eval (tagged) rows, keeping only model columns."""

    def __init__(self, spec: DatasetSpec, eval_fraction: float, seed: int, columns: list[str]):
        self._key = spec.key_column
        self._eval_fraction = eval_fraction
        self._seed = seed
        self._columns = columns
        self._train = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "rows_train")
        self._eval = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "rows_eval")

    def process(self, batch: pa.RecordBatch):
        is_eval = stable_hash_fraction(batch, self._key, self._seed) < self._eval_fraction
        model_cols = batch.select(self._columns)
        train, evals = model_cols.filter(pa.array(~is_eval)), model_cols.filter(pa.array(is_eval))
        if train.num_rows:
            self._train.inc(train.num_rows)
            yield train
        if evals.num_rows:
            self._eval.inc(evals.num_rows)
            yield beam.pvalue.TaggedOutput("eval", evals)


def write_dead_letters(dead: beam.PCollection, output_prefix: str, label: str = "WriteDeadLetters"):
    """Writes DeadLetters as JSON lines (an empty file when there are none)."""
    return (dead
            | f"{label}ToJson" >> beam.Map(DeadLetter.to_json)
            | label >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl"))


def build_preprocess(pipeline: beam.Pipeline, spec: DatasetSpec, config: PreprocessConfig,
                     source: Optional[beam.PTransform] = None) -> dict[str, Any]:
    """Adds read → split → analyze/transform → write steps to `pipeline`.

    Args:
      pipeline: the pipeline to extend (its options pick the runner).
      spec: the dataset spec.
      config: input, output and split settings.
      source: instead of reading `config.input_pattern`, a PTransform from the
        pipeline's start to a DoOutputsTuple with 'rows' (RecordBatches in the
        `arrow_schema_for(spec)` layout) and DEAD_TAG (DeadLetters).

    Returns:
      A dict of the key PCollections (for tests): 'rows' (RecordBatches read),
      'dead' (DeadLetters), 'train'/'eval' (raw split batches),
      'train_transformed'/'eval_transformed' ((RecordBatch, passthrough) tuples)
      and 'transform_fn'.
    """
    adapter = tensor_adapter_config(spec)
    columns = [f.name for f in adapter.arrow_schema]  # only model columns flow into tf.Transform
    if source is None:
        read = pipeline | "ReadCsv" >> ReadCsvBatches(config.input_pattern, spec, chunk_bytes=config.chunk_bytes)
    else:
        read = pipeline | "Read" >> source
    rows, dead = read["rows"], read[DEAD_TAG]
    split = rows | "SplitTrainEval" >> beam.ParDo(
        _SplitDoFn(spec, config.eval_fraction, config.split_seed, columns)).with_outputs("eval", main="train")
    train, evals = split["train"], split["eval"]

    tmp = os.path.join(config.output_dir, "tmp")
    with tft_beam.Context(temp_dir=tmp):
        (train_xf, train_meta), transform_fn = (
            (train, adapter)
            | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                make_preprocessing_fn(spec), output_record_batches=True))
        eval_xf, eval_meta = (
            ((evals, adapter), transform_fn)
            | "TransformEval" >> tft_beam.TransformDataset(output_record_batches=True))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(config.output_dir)
        for name, data, meta, prefix in (("Train", train_xf, train_meta, TRAIN_PREFIX),
                                         ("Eval", eval_xf, eval_meta, EVAL_PREFIX)):
            # tft's EncodeTransformedDataset emits one element per example; encoding
            # and writing whole batches keeps the per-row work in C++.
            encoder = (meta.deferred_metadata
                       | f"{name}ExampleEncoder" >> beam.Map(lambda m: RecordBatchToExamplesEncoder(m.schema)))
            _ = (data
                 | f"Encode{name}" >> beam.Map(lambda elem, coder: coder.encode(elem[0]),
                                               coder=beam.pvalue.AsSingleton(encoder))
                 | f"Write{name}" >> WriteTFRecordBatches(os.path.join(config.output_dir, prefix),
                                                          file_name_suffix=".tfrecord"))
    write_dead_letters(dead, os.path.join(config.output_dir, DEAD_PREFIX))
    return {"rows": rows, "dead": dead, "train": train, "eval": evals,
            "train_transformed": train_xf, "eval_transformed": eval_xf, "transform_fn": transform_fn}


def query_counter(result: beam.runners.runner.PipelineResult, namespace: str, name: str) -> Optional[int]:
    """The committed (or attempted) value of a Beam counter after a run."""
    from apache_beam.metrics.metric import MetricsFilter
    res = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    if not res:
        return 0
    total = 0
    for r in res:
        v = r.committed if r.committed is not None else r.attempted
        total += int(v or 0)
    return total
