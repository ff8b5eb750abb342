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
import zlib
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow_transform.beam as tft_beam
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.io.batches import LINE_COLUMN, as_list_array
from beam_ml.io.csv import ReadCsvBatches
from beam_ml.io.tfrecord import WriteTFRecordBatches
from beam_ml.spec import DatasetSpec
from transforms.preprocessing import make_preprocessing_fn, tensor_adapter_config, to_transform_batch

__all__ = ["PreprocessConfig", "PreprocessOutputs", "build_preprocess", "write_dead_letters", "stable_hash_fraction",
           "label_counter_name"]
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


class PreprocessOutputs(NamedTuple):
    """The key PCollections of a preprocessing pipeline (for tests and for later stages).

    Attributes:
      rows: RecordBatches read (`beam_ml.io.batches.arrow_schema_for(spec)` layout).
      dead: DeadLetters of the read.
      marked: model columns plus SPLIT_COLUMN, per batch.
      transformed: (RecordBatch, passthrough) tuples out of tf.Transform.
      transform_fn: the analyzed transform graph.
    """

    rows: beam.PCollection
    dead: beam.PCollection
    marked: beam.PCollection
    transformed: beam.PCollection
    transform_fn: beam.PCollection


# 0 = train, 1 = eval, as list<int8>: it rides through tf.Transform as a passthrough
# column, and tf.Transform requires those to be one-element lists.
SPLIT_COLUMN = "__split__"
TRAIN, EVAL = 0, 1


def label_counter_name(value: str) -> str:
    return f"train_label_count/{value}"


def stable_hash_fraction(batch: pa.RecordBatch, key_column: Optional[str], seed: int) -> np.ndarray:
    """A deterministic value in [0, 1) per row, from its key or else its line number.

    Used for the train/eval split: the same row always lands in the same split,
    whatever the runner, bundle sizes or worker count.
    """
    if key_column:
        keys = batch.column(key_column).to_pylist()
        h = np.fromiter((zlib.crc32(k.encode("utf-8")) for k in keys), dtype=np.uint64, count=len(keys))
    else:
        h = batch.column(LINE_COLUMN).to_numpy().astype(np.uint64)
    # splitmix64 finalizer: spreads consecutive line numbers uniformly.
    with np.errstate(over="ignore"):
        x = h + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _SplitDoFn(beam.DoFn):
    """Marks each row train or eval (a seeded hash), keeps only model columns, counts train labels."""

    def __init__(self, spec: DatasetSpec, eval_fraction: float, seed: int, columns: list[str],
                 counted: bool = True):
        self._counted = counted
        self._key = spec.key_column
        self._label = spec.label
        self._classes = list(spec.label_classes)
        self._eval_fraction = eval_fraction
        self._seed = seed
        self._columns = columns
        self._train = beam.metrics.Metrics.counter(metrics.PREPROCESS, "rows_train")
        self._eval = beam.metrics.Metrics.counter(metrics.PREPROCESS, "rows_eval")
        # Class counts of the train split, for class weights: counted here rather
        # than by a tf.Transform vocabulary analyzer, which costs seconds of graph.
        self._label_counts = {c: beam.metrics.Metrics.counter(metrics.PREPROCESS, label_counter_name(c))
                              for c in self._classes}

    def process(self, batch: pa.RecordBatch):
        is_eval = stable_hash_fraction(batch, self._key, self._seed) < self._eval_fraction
        if self._counted:
            n_eval = int(is_eval.sum())
            self._train.inc(batch.num_rows - n_eval)
            self._eval.inc(n_eval)
            labels = batch.column(self._label).flatten().filter(pa.array(~is_eval))
            for item in pc.value_counts(labels).to_pylist():
                value = item["values"].decode("utf-8") if isinstance(item["values"], bytes) else str(item["values"])
                if value in self._label_counts:
                    self._label_counts[value].inc(item["counts"])
        split = as_list_array(pa.array(is_eval.astype(np.int8)))
        yield pa.RecordBatch.from_arrays(batch.select(self._columns).columns + [split],
                                         names=self._columns + [SPLIT_COLUMN])


class _EncodeSplitDoFn(beam.DoFn):
    """Encodes transformed batches to tf.Examples, train rows to main and eval rows tagged 'eval'."""

    def process(self, element, coder):
        batch, _ = element
        split = batch.column(SPLIT_COLUMN).flatten().to_numpy(zero_copy_only=False)
        features = batch.drop_columns([SPLIT_COLUMN])
        for which, tag in ((TRAIN, None), (EVAL, "eval")):
            rows = features.filter(pa.array(split == which))
            if rows.num_rows:
                encoded = coder.encode(rows)
                yield encoded if tag is None else beam.pvalue.TaggedOutput(tag, encoded)


def _only_split(batch: pa.RecordBatch, which: int):
    rows = batch.filter(pc.equal(batch.column(SPLIT_COLUMN).flatten(), which))
    if rows.num_rows:
        yield rows


def write_dead_letters(dead: beam.PCollection, output_prefix: str, label: str = "WriteDeadLetters"):
    """Writes DeadLetters as JSON lines (an empty file when there are none)."""
    return (dead
            | f"{label}ToJson" >> beam.Map(DeadLetter.to_json)
            | label >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl"))


def build_preprocess(pipeline: beam.Pipeline, spec: DatasetSpec, config: PreprocessConfig,
                     source: Optional[beam.PTransform] = None) -> PreprocessOutputs:
    """Adds read → split → analyze/transform → write steps to `pipeline`.

    Args:
      pipeline: the pipeline to extend (its options pick the runner).
      spec: the dataset spec.
      config: input, output and split settings.
      source: instead of reading `config.input_pattern`, a PTransform from the
        pipeline's start to a DoOutputsTuple with 'rows' (RecordBatches in the
        `arrow_schema_for(spec)` layout) and DEAD_TAG (DeadLetters).

    Returns:
      The key PCollections (PreprocessOutputs).
    """
    # Only model columns flow into tf.Transform, as its blocks (transforms/preprocessing.py).
    columns = spec.feature_columns + [spec.label]
    adapter = tensor_adapter_config(spec, passthrough=[pa.field(SPLIT_COLUMN, pa.list_(pa.int8()))])
    if source is None:
        read = pipeline | "ReadCsv" >> ReadCsvBatches(config.input_pattern, spec, chunk_bytes=config.chunk_bytes)
    else:
        read = pipeline | "Read" >> source
    rows, dead = read["rows"], read[DEAD_TAG]

    def mark(rows_in: beam.PCollection, step: str, counted: bool) -> beam.PCollection:
        return (rows_in
                | f"SplitTrainEval{step}" >> beam.ParDo(
                    _SplitDoFn(spec, config.eval_fraction, config.split_seed, columns, counted))
                | f"ToTransformInputs{step}" >> beam.Map(to_transform_batch, spec, passthrough=[SPLIT_COLUMN]))

    marked = mark(rows, "", counted=True)
    train = marked | "TrainRows" >> beam.FlatMap(_only_split, TRAIN)
    if source is None:
        # Files are read twice, the second time uncounted, for the transform pass: with
        # one read, the runner keeps every row in memory between the analysis (which
        # must see all train rows first) and the transform; a second read streams.
        again = pipeline | "ReadCsvForTransform" >> ReadCsvBatches(
            config.input_pattern, spec, chunk_bytes=config.chunk_bytes, validate=False, counted=False)
        to_transform = mark(again["rows"], "ForTransform", counted=False)
    else:
        to_transform = marked

    tmp = os.path.join(config.output_dir, "tmp")
    # Analyze the train split only (no eval statistics leak into the transform),
    # then transform train and eval in ONE pass, the split riding along as a
    # passthrough column: one transform graph load and stage instead of two.
    with tft_beam.Context(temp_dir=tmp, passthrough_keys={SPLIT_COLUMN}):
        transform_fn = (train, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(spec))
        transformed, meta = (((to_transform, adapter), transform_fn)
                             | "Transform" >> tft_beam.TransformDataset(output_record_batches=True))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(config.output_dir)
        # tft's EncodeTransformedDataset emits one element per example; encoding and
        # writing whole batches keeps the per-row work in C++.
        encoder = (meta.deferred_metadata
                   | "ExampleEncoder" >> beam.Map(lambda m: RecordBatchToExamplesEncoder(m.schema)))
        encoded = transformed | "EncodeExamples" >> beam.ParDo(
            _EncodeSplitDoFn(), coder=beam.pvalue.AsSingleton(encoder)).with_outputs("eval", main="train")
        for name, prefix in (("train", TRAIN_PREFIX), ("eval", EVAL_PREFIX)):
            _ = encoded[name] | f"Write{name.title()}" >> WriteTFRecordBatches(
                os.path.join(config.output_dir, prefix), file_name_suffix=".tfrecord")
    write_dead_letters(dead, os.path.join(config.output_dir, DEAD_PREFIX))
    return PreprocessOutputs(rows=rows, dead=dead, marked=marked, transformed=transformed, transform_fn=transform_fn)
