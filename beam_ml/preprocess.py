"""The preprocessing half of training: CSV → split → tf.Transform → TFRecords per split and fold.

    outputs = build_preprocess(pipeline, spec, PreprocessConfig(input_pattern=..., output_dir=..., cv_folds=5))

Reads CSV into RecordBatches (dead letters aside) and splits the good rows:

* test (a seeded hash of each row's key, or line number, below `test_fraction`):
  held out first, never analyzed, never trained or tuned on;
* the rest into `cv_folds` folds, stratified: within each label class a row's
  fold is where a second hash falls among that class's exact quantiles of it,
  so every fold holds the same number of rows of each class (±1). Training
  without tuning validates on fold 0; k-fold CV rotates the validation fold.

tf.Transform is analyzed once on all non-test rows (the folds together; see
the README for why this leaks nothing that matters), and every split is
transformed with the same graph and written:

  <output_dir>/transform_fn/, transformed_metadata/          tf.Transform artifacts
  <output_dir>/data/fold-<j>-*.tfrecord, data/test-*.tfrecord  transformed tf.Examples
  <output_dir>/dead_letter/dead-*.jsonl                       rejected rows, with reasons

The row counts per split and class are data (`PreprocessOutputs.split_counts`),
so later stages read them as side inputs on any runner.
"""
from __future__ import annotations

import dataclasses
import os
import zlib
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow_transform.beam as tft_beam
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from beam_ml import fs, metrics
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.io.batches import LINE_COLUMN, as_list_array
from beam_ml.io.csv import ReadCsvBatches
from beam_ml.io.files import match_files, resolve_compression
from beam_ml.io.tfrecord import WriteSplitTFRecordBatches
from beam_ml.spec import DatasetSpec
from transforms.preprocessing import LABEL_KEY, make_preprocessing_fn, tensor_adapter_config, to_transform_batch

__all__ = ["PreprocessConfig", "PreprocessOutputs", "reads_once", "build_preprocess", "write_dead_letters",
           "stable_hash_fraction", "fold_boundaries", "assign_folds", "split_prefix", "split_names", "TEST_SPLIT", "fold_split"]
DEAD_PREFIX = "dead_letter/dead"
TEST_SPLIT = "test"


def fold_split(fold: int) -> str:
    """The split name of fold `fold` ("fold0", "fold1", ...)."""
    return f"fold{fold}"


def split_names(cv_folds: int) -> list[str]:
    """Every split a run writes: the folds, then test."""
    return [fold_split(j) for j in range(cv_folds)] + [TEST_SPLIT]


def split_prefix(split: str) -> str:
    """The TFRecord path prefix of a split under the output dir (data/fold-0, data/test)."""
    return "data/test" if split == TEST_SPLIT else f"data/fold-{int(split[len('fold'):])}"


@dataclasses.dataclass
class PreprocessConfig:
    """Input, output and split settings.

    Attributes:
      input_pattern: the CSV path or glob (None with a `source`).
      output_dir: where artifacts go.
      test_fraction: share of good rows held out as the test split.
      cv_folds: folds the remaining rows are divided into (stratified).
      split_seed: seed of both split hashes.
      chunk_bytes: CSV chunk size per read element.
      read_once_bytes: input files up to this size in total (compressed ones
        counted at COMPRESSED_RATIO times theirs) are read once, their rows
        kept by the runner between analysis and transform; larger inputs are
        read a second time for the transform pass, so their rows stream.
    """

    input_pattern: Optional[str]
    output_dir: str
    test_fraction: float = 0.2
    cv_folds: int = 5
    split_seed: int = 42
    chunk_bytes: int = 8 << 20
    read_once_bytes: int = 32 << 20


# What a compressed CSV is assumed to expand to, when deciding whether to read it once.
COMPRESSED_RATIO = 8


def reads_once(pattern: str, read_once_bytes: int) -> bool:
    """Whether the files of `pattern` are small enough to read once (see PreprocessConfig.read_once_bytes)."""
    try:
        files = match_files(pattern)
    except Exception:  # pylint: disable=broad-except  # the read itself reports a bad pattern, naming the flag
        return False
    total = sum(size * (1 if resolve_compression(path) == "uncompressed" else COMPRESSED_RATIO)
                for path, size in files)
    return total <= read_once_bytes


class PreprocessOutputs(NamedTuple):
    """The key PCollections of a preprocessing pipeline (for tests and for later stages).

    Attributes:
      rows: RecordBatches read (`beam_ml.io.batches.arrow_schema_for(spec)` layout).
      dead: DeadLetters of the read.
      marked: model columns plus SPLIT_COLUMN and FOLD_HASH_COLUMN, per batch.
      transformed: (RecordBatch, passthrough) tuples out of tf.Transform.
      transform_fn: the analyzed transform graph.
      test_rows: the raw test rows (model columns), per batch: evaluation scores
        them with the exported model, as serving will.
      split_counts: one dict {split: {label class: rows}} for every split of
        `split_names(cv_folds)`.
      written: the TFRecord file names and the transform_fn's completion: as a
        side input, it holds a stage back until every training input exists.
      dead_written: the dead-letter file names, once they are written.
    """

    rows: beam.PCollection
    dead: beam.PCollection
    marked: beam.PCollection
    transformed: beam.PCollection
    transform_fn: beam.PCollection
    test_rows: beam.PCollection
    split_counts: beam.PCollection
    written: beam.PCollection
    dead_written: beam.PCollection


# 0 = train (some fold), 1 = test, as list<int8>; and the fold hash as list<float64>.
# Both ride through tf.Transform as passthrough columns, which tf.Transform
# requires to be one-element lists.
SPLIT_COLUMN = "__split__"
FOLD_HASH_COLUMN = "__fold_hash__"
TRAIN, TEST = 0, 1
_FOLD_SEED_OFFSET = 7919  # the fold hash must be independent of the test hash


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


def fold_boundaries(quantiles: Sequence[float], cv_folds: int) -> np.ndarray:
    """The fold hash values where folds 1..k-1 start, from one class's quantiles of that hash.

    Args:
      quantiles: Beam's ApproximateQuantiles output for the class: [min, q1..q(k-1), max],
        or every value, sorted, when the class has fewer than k+1 rows.
      cv_folds: k.
    """
    q = np.asarray(sorted(quantiles), dtype=np.float64)
    if len(q) >= cv_folds + 1:
        # Beam's j-th quantile is the row of rank floor(j (n - 1) / k): the LAST row
        # of fold j - 1 (see assign_folds), which balances the folds to ±1.
        return q[1:cv_folds]
    return q[:-1]  # fewer rows than folds: one row per fold, the rest empty


def assign_folds(fold_hash: np.ndarray, class_ids: np.ndarray, boundaries: dict) -> np.ndarray:
    """Each row's fold: how many of its class's boundaries lie strictly below its fold hash."""
    folds = np.zeros(len(fold_hash), dtype=np.int64)
    for c, b in boundaries.items():
        rows = class_ids == c
        if rows.any():
            folds[rows] = np.searchsorted(np.asarray(b), fold_hash[rows], side="left")
    return folds


class _SplitDoFn(beam.DoFn):
    """Marks each row train or test (a seeded hash) and gives it a fold hash; keeps only model columns.

    Side output 'fold_hashes': (class index, fold hashes of that class's train rows) per batch, for the
    per-class quantiles that make stratified folds.
    """

    def __init__(self, spec: DatasetSpec, test_fraction: float, seed: int, columns: list[str],
                 counted: bool = True):
        self._counted = counted  # False on the transform pass's re-read: no counts, no fold hashes
        self._key = spec.key_column
        self._label = spec.label
        self._classes = [c.encode("utf-8") for c in spec.label_classes]
        self._test_fraction = test_fraction
        self._seed = seed
        self._columns = columns
        self._train = beam.metrics.Metrics.counter(metrics.PREPROCESS, "rows_train")
        self._test = beam.metrics.Metrics.counter(metrics.PREPROCESS, "rows_test")

    def process(self, batch: pa.RecordBatch):
        is_test = stable_hash_fraction(batch, self._key, self._seed) < self._test_fraction
        fold_hash = stable_hash_fraction(batch, self._key, self._seed + _FOLD_SEED_OFFSET)
        if self._counted:
            n_test = int(is_test.sum())
            self._train.inc(batch.num_rows - n_test)
            self._test.inc(n_test)
            labels = batch.column(self._label).flatten()
            for c, value in enumerate(self._classes):
                is_class = pc.equal(labels, pa.scalar(value, pa.binary())).to_numpy(zero_copy_only=False)
                hashes = fold_hash[is_class & ~is_test]
                if len(hashes):
                    # Python floats: the quantile combiner keeps (and pickles, between stages and for
                    # Beam's size sampling) its elements one by one; as numpy scalars that pickling took
                    # 1.5 s of a 6.7 s 200k-row run, as floats 0.01 s.
                    yield beam.pvalue.TaggedOutput("fold_hashes", (c, hashes.tolist()))
        split = as_list_array(pa.array(is_test.astype(np.int8)))
        yield pa.RecordBatch.from_arrays(batch.select(self._columns).columns
                                         + [split, as_list_array(pa.array(fold_hash))],
                                         names=self._columns + [SPLIT_COLUMN, FOLD_HASH_COLUMN])


class _EncodeSplitDoFn(beam.DoFn):
    """Encodes transformed batches to tf.Examples as (split, records) ('fold<j>' or 'test'), and counts them.

    Side output 'counts': {split: {class index: rows}} per batch.
    """

    def __init__(self, cv_folds: int):
        self._cv_folds = cv_folds

    def process(self, element, coder, quantiles):
        batch, _ = element
        boundaries = {c: fold_boundaries(q, self._cv_folds) for c, q in quantiles}
        split = batch.column(SPLIT_COLUMN).flatten().to_numpy(zero_copy_only=False)
        labels = batch.column(LABEL_KEY).flatten().to_numpy(zero_copy_only=False)
        fold_hash = batch.column(FOLD_HASH_COLUMN).flatten().to_numpy(zero_copy_only=False)
        which = np.where(split == TEST, -1, assign_folds(fold_hash, labels, boundaries))
        features = batch.drop_columns([SPLIT_COLUMN, FOLD_HASH_COLUMN])
        counts = {}
        for j in np.unique(which):
            name = TEST_SPLIT if j < 0 else fold_split(int(j))
            mask = which == j
            rows = features.filter(pa.array(mask))
            classes, n = np.unique(labels[mask], return_counts=True)
            counts[name] = {int(c): int(k) for c, k in zip(classes, n)}
            yield name, coder.encode(rows)
        yield beam.pvalue.TaggedOutput("counts", counts)


def _merge_counts(dicts, splits: Sequence[str], classes: Sequence[str]) -> dict:
    """{split: {class name: rows}} with every split and class present (zeros included)."""
    out = {s: {c: 0 for c in classes} for s in splits}
    for d in dicts:
        for s, by_class in d.items():
            for c, n in by_class.items():
                out[s][classes[int(c)]] += n
    return out


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
        `arrow_schema_for(spec)` layout) and DEAD_TAG (DeadLetters). If it has
        an `again()` method, that PTransform (the same rows, uncounted) feeds the
        transform pass, so rows stream instead of being held in memory.

    Returns:
      The key PCollections (PreprocessOutputs).
    """
    # Only model columns flow into tf.Transform, as its blocks (transforms/preprocessing.py).
    columns = spec.feature_columns + [spec.label]
    passthrough = [SPLIT_COLUMN, FOLD_HASH_COLUMN]
    adapter = tensor_adapter_config(spec, passthrough=[pa.field(SPLIT_COLUMN, pa.list_(pa.int8())),
                                                       pa.field(FOLD_HASH_COLUMN, pa.list_(pa.float64()))])
    if source is None:
        read = pipeline | "ReadCsv" >> ReadCsvBatches(config.input_pattern, spec, chunk_bytes=config.chunk_bytes)
    else:
        read = pipeline | "Read" >> source
    rows, dead = read["rows"], read[DEAD_TAG]
    split = rows | "SplitTrainTest" >> beam.ParDo(
        _SplitDoFn(spec, config.test_fraction, config.split_seed, columns)).with_outputs("fold_hashes", main="marked")
    fold_hashes, marked = split["fold_hashes"], split["marked"]
    test_rows = marked | "TestRows" >> beam.FlatMap(_only_split, TEST)
    to_inputs = marked | "ToTransformInputs" >> beam.Map(to_transform_batch, spec, passthrough=passthrough)
    train = to_inputs | "TrainRows" >> beam.FlatMap(_only_split, TRAIN)
    small = bool(config.input_pattern) and reads_once(config.input_pattern, config.read_once_bytes)
    if source is None and not small:
        # Large inputs are read twice, the second time uncounted, for the transform pass:
        # with one read, the runner keeps every row in memory between the analysis (which
        # must see all train rows first) and the transform; a second read streams.
        # Small ones are read once: a second read costs more (its stages) than it saves.
        again = pipeline | "ReadCsvForTransform" >> ReadCsvBatches(
            config.input_pattern, spec, chunk_bytes=config.chunk_bytes, validate=False, counted=False)
        to_transform = (again["rows"]
                        | "SplitForTransform" >> beam.ParDo(
                            _SplitDoFn(spec, config.test_fraction, config.split_seed, columns, counted=False))
                        | "ToTransformInputsForTransform" >> beam.Map(
                            to_transform_batch, spec, passthrough=passthrough))
    elif hasattr(source, "again") and not small:
        # The same rows read again, uncounted (e.g. CSV cleaned by --sql): streams like the CSV re-read above.
        again = pipeline | "ReadForTransform" >> source.again()
        to_transform = (again["rows"]
                        | "SplitForTransform" >> beam.ParDo(
                            _SplitDoFn(spec, config.test_fraction, config.split_seed, columns, counted=False))
                        | "ToTransformInputsForTransform" >> beam.Map(
                            to_transform_batch, spec, passthrough=passthrough))
    else:
        to_transform = to_inputs
    # k+1 quantiles per class: [min, the k-1 fold starts, max]. A small epsilon
    # keeps them exact up to ~1e4 rows per class (balanced folds where it matters).
    quantiles = fold_hashes | "FoldQuantiles" >> beam.CombinePerKey(
        beam.transforms.stats.ApproximateQuantilesCombineFn.create(
            num_quantiles=config.cv_folds + 1, epsilon=1e-4, input_batched=True))

    tmp = os.path.join(config.output_dir, "tmp")
    splits = split_names(config.cv_folds)
    # Analyze the non-test rows only (no test statistics leak into the transform),
    # then transform every split in ONE pass, the split riding along as a
    # passthrough column: one transform graph load and stage instead of several.
    with tft_beam.Context(temp_dir=tmp, passthrough_keys={SPLIT_COLUMN, FOLD_HASH_COLUMN}):
        transform_fn = (train, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(spec))
        transformed, meta = (((to_transform, adapter), transform_fn)
                             | "Transform" >> tft_beam.TransformDataset(output_record_batches=True))
        transform_fn_done = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(config.output_dir)
        # tft's EncodeTransformedDataset emits one element per example; encoding and
        # writing whole batches keeps the per-row work in C++.
        encoder = (meta.deferred_metadata
                   | "ExampleEncoder" >> beam.Map(lambda m: RecordBatchToExamplesEncoder(m.schema)))
        encoded = transformed | "EncodeExamples" >> beam.ParDo(
            _EncodeSplitDoFn(config.cv_folds), coder=beam.pvalue.AsSingleton(encoder),
            quantiles=beam.pvalue.AsList(quantiles)).with_outputs("counts", main="encoded")
        # Every split through one sink (Beam's file sink costs several stages per output).
        records = encoded["encoded"] | "WriteSplits" >> WriteSplitTFRecordBatches(
            {name: fs.join(config.output_dir, split_prefix(name)) for name in splits},
            temp_dir=fs.join(config.output_dir, "data", ".tmp"), file_name_suffix=".tfrecord")
        written = [transform_fn_done, records]
    split_counts = (encoded["counts"]
                    | "CountSplits" >> beam.combiners.ToList()
                    | "MergeCounts" >> beam.Map(_merge_counts, splits, list(spec.label_classes)))
    written = tuple(written) | "AllWritten" >> beam.Flatten()
    dead_written = write_dead_letters(dead, os.path.join(config.output_dir, DEAD_PREFIX))
    return PreprocessOutputs(rows=rows, dead=dead, marked=marked, transformed=transformed, transform_fn=transform_fn,
                             test_rows=test_rows, split_counts=split_counts, written=written,
                             dead_written=dead_written)
