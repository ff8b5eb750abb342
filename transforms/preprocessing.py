"""tf.Transform preprocessing built from a dataset spec: one analyzer pass for every column.

    batch = to_transform_batch(reader_batch, spec)          # the reader's layout → the transform's
    fn = make_preprocessing_fn(spec)
    (data, transform_fn) = ((batches, tensor_adapter_config(spec))
                            | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))

Raw inputs of the transform graph are blocks, not one tensor per column: every
numeric column together as NUMERIC_BLOCK, float32 [batch, N] (NaN = missing),
every categorical column as CATEGORICAL_BLOCK, string [batch, C] ("" = missing),
and the label as bytes [batch]. `transform_inputs` builds them from one tensor
per raw column (the serving signatures' inputs), so training and serving feed
the graph the same way. Outputs:

  numeric_xf        float32 [batch, N]   z-score per column with train-split statistics over
                                         present values; missing → the spec default (before
                                         analysis), else the mean (→ 0); a constant column → x - mean.
  <categorical>_xf  float32 [batch, K+1] one-hot over the column's train vocabulary (top K by
                                         frequency, ties by value, K = max_categories) with one
                                         OOV bucket last; missing → spec default, else OOV.
  label             int64   [batch]      index into spec.label_classes (-1 if unknown).

Why blocks and one analyzer: tf.Transform expands each analyzer into dozens of
Beam transforms and each input column into its own tensor conversion, so a
per-column formulation costs seconds per categorical column and per hundred
numeric columns before any row is read (1,500 rows with 15 categoricals took
over a minute). Here one `ptransform_analyzer` computes every mean, variance
and vocabulary in a single combine over the train split (`StatsAndVocabularies`,
tested against numpy), and the one-hot widths are static, so the transformed
schema is fixed-length.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public.tfxio import TensorAdapterConfig

from beam_ml.spec import DatasetSpec

__all__ = [
    "LABEL_KEY",
    "NUMERIC_BLOCK",
    "CATEGORICAL_BLOCK",
    "NUMERIC_XF",
    "transformed_name",
    "make_preprocessing_fn",
    "raw_feature_spec",
    "tensor_adapter_config",
    "to_transform_batch",
    "transform_inputs",
    "transformed_feature_names",
    "StatsAndVocabularies",
]

LABEL_KEY = "label"
NUMERIC_BLOCK = "__numeric__"
CATEGORICAL_BLOCK = "__categorical__"
NUMERIC_XF = "numeric_xf"


def transformed_name(name: str) -> str:
    return f"{name}_xf"


def raw_feature_spec(spec: DatasetSpec, with_label: bool = True) -> dict[str, tf.io.FixedLenFeature]:
    """tf.Example parsing spec for raw rows (one feature per column): absent features parse as missing."""
    fs = {}
    for c in spec.columns:
        if c.role == "numeric":
            fs[c.name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
        elif c.role == "categorical" or (c.role == "label" and with_label):
            fs[c.name] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    return fs


def _dense(column: str, size: Optional[int] = None) -> schema_pb2.TensorRepresentation:
    rep = schema_pb2.TensorRepresentation()
    rep.dense_tensor.column_name = column
    if size is not None:
        rep.dense_tensor.shape.dim.add().size = size  # [batch, size]; without: [batch]
    return rep


def tensor_adapter_config(spec: DatasetSpec, with_label: bool = True,
                          passthrough: Sequence[pa.Field] = ()) -> TensorAdapterConfig:
    """How tf.Transform turns `to_transform_batch`'s RecordBatches into the graph's raw input tensors.

    Args:
      spec: the dataset spec.
      with_label: the label column is among the inputs.
      passthrough: extra Arrow fields the batches carry (e.g. a split marker),
        with no tensor representation.
    """
    fields, reps = [], {}
    if spec.numeric_columns:
        fields.append(pa.field(NUMERIC_BLOCK, pa.list_(pa.float32())))
        reps[NUMERIC_BLOCK] = _dense(NUMERIC_BLOCK, len(spec.numeric_columns))
    if spec.categorical_columns:
        fields.append(pa.field(CATEGORICAL_BLOCK, pa.list_(pa.binary())))
        reps[CATEGORICAL_BLOCK] = _dense(CATEGORICAL_BLOCK, len(spec.categorical_columns))
    if with_label:
        fields.append(pa.field(spec.label, pa.list_(pa.binary())))
        reps[spec.label] = _dense(spec.label)
    return TensorAdapterConfig(pa.schema(fields + list(passthrough)), reps)


def _block(columns: Sequence[pa.Array], value_type: pa.DataType) -> pa.ListArray:
    """Row-major list<value_type> of len(columns) values per row, from one-value-per-row list columns."""
    rows, width = len(columns[0]), len(columns)
    flat = pa.concat_arrays([c.flatten().cast(value_type) for c in columns])  # column-major
    order = np.arange(rows * width, dtype=np.int64).reshape(width, rows).T.ravel()  # → row-major
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pc.take(flat, pa.array(order)))


def to_transform_batch(batch: pa.RecordBatch, spec: DatasetSpec, with_label: bool = True,
                       passthrough: Sequence[str] = ()) -> pa.RecordBatch:
    """A reader batch (one list column per feature, `beam_ml.io.batches` layout) in the transform's layout."""
    arrays, names = [], []
    if spec.numeric_columns:
        arrays.append(_block([batch.column(n) for n in spec.numeric_columns], pa.float32()))
        names.append(NUMERIC_BLOCK)
    if spec.categorical_columns:
        arrays.append(_block([batch.column(n) for n in spec.categorical_columns], pa.binary()))
        names.append(CATEGORICAL_BLOCK)
    if with_label:
        arrays.append(batch.column(spec.label))
        names.append(spec.label)
    for name in passthrough:
        arrays.append(batch.column(name))
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def transform_inputs(raw: Mapping[str, tf.Tensor], spec: DatasetSpec) -> dict[str, tf.Tensor]:
    """The graph's raw inputs from one [batch] tensor per raw column (as the serving signatures take them)."""
    inputs = {}
    if spec.numeric_columns:
        inputs[NUMERIC_BLOCK] = tf.stack([tf.cast(raw[n], tf.float32) for n in spec.numeric_columns], axis=1)
    if spec.categorical_columns:
        inputs[CATEGORICAL_BLOCK] = tf.stack([raw[n] for n in spec.categorical_columns], axis=1)
    if spec.label in raw:
        inputs[spec.label] = raw[spec.label]
    return inputs


def transformed_feature_names(spec: DatasetSpec) -> list[str]:
    """Model input names, in the order the model concatenates them."""
    names = [NUMERIC_XF] if spec.numeric_columns else []
    return names + [transformed_name(n) for n in spec.categorical_columns]


class _StatsCombineFn(beam.CombineFn):
    """Per numeric column: count, mean, M2 of present values; per categorical column: value counts."""

    def __init__(self, n_numeric: int, n_categorical: int):
        self._n = n_numeric
        self._c = n_categorical

    def create_accumulator(self):
        zeros = np.zeros(self._n, np.float64)
        return [zeros, zeros.copy(), zeros.copy(), [{} for _ in range(self._c)]]

    def add_input(self, acc, batch):
        inputs = list(batch)
        if self._n:
            x = np.asarray(inputs.pop(0), np.float64).reshape(-1, self._n)
            present = ~np.isnan(x)
            count = present.sum(axis=0).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(count > 0, np.nansum(x, axis=0) / np.maximum(count, 1), 0.0)
                m2 = np.nansum(np.where(present, (x - mean) ** 2, 0.0), axis=0)
            acc = self._merge_numeric(acc, count, mean, m2)
        if self._c:
            s = np.asarray(inputs.pop(0), dtype=object).reshape(-1, self._c)
            for i, counts in enumerate(acc[3]):
                column = pa.array(s[:, i], pa.binary())
                for item in pc.value_counts(column).to_pylist():
                    value = item["values"]
                    if value:  # "" is a missing value: never a vocabulary entry
                        counts[value] = counts.get(value, 0) + item["counts"]
        return acc

    @staticmethod
    def _merge_numeric(acc, count, mean, m2):
        # Chan et al.'s parallel update: exact, and stable for large values (times, amounts).
        n_a, mean_a, m2_a, cats = acc
        total = n_a + count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - mean_a
            new_mean = np.where(total > 0, mean_a + delta * count / np.maximum(total, 1), 0.0)
            new_m2 = m2_a + m2 + delta ** 2 * n_a * count / np.maximum(total, 1)
        return [total, new_mean, new_m2, cats]

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        out = accumulators[0]
        for acc in accumulators[1:]:
            if self._n:
                out = self._merge_numeric(out, acc[0], acc[1], acc[2])
            for mine, theirs in zip(out[3], acc[3]):
                for value, n in theirs.items():
                    mine[value] = mine.get(value, 0) + n
        return out

    def extract_output(self, acc):
        return acc


class StatsAndVocabularies(beam.PTransform):
    """tf.Transform analyzer: numeric means and population standard deviations, and top-k vocabularies.

    Input: tf.Transform's batches of the analyzer inputs ([x [b, N]] and/or
    [s [b, C]], numpy). Output: PCollections of one ndarray each, in this
    order: mean [N] and std [N] (float32; when N > 0), vocabulary [C, K] (bytes,
    padded with b""; when C > 0), where column c keeps its `top_k[c]` most
    frequent non-empty values, ordered like tf.Transform's vocabularies
    (descending count, then descending value).
    """

    def __init__(self, n_numeric: int, top_k: Sequence[int]):
        super().__init__()
        self._n = n_numeric
        self._top_k = list(top_k)

    def _outputs(self, acc):
        out = []
        if self._n:
            count, mean, m2 = acc[0], acc[1], acc[2]
            with np.errstate(invalid="ignore", divide="ignore"):
                var = np.where(count > 0, m2 / np.maximum(count, 1), 0.0)
            out += [mean.astype(np.float32), np.sqrt(var).astype(np.float32)]
        if self._top_k:
            width = max(self._top_k)
            vocab = np.full((len(self._top_k), width), b"", dtype=object)
            for i, (counts, k) in enumerate(zip(acc[3], self._top_k)):
                ranked = sorted(((n, value) for value, n in counts.items()), reverse=True)[:k]
                for j, (_, value) in enumerate(ranked):
                    vocab[i, j] = value
            out.append(vocab)
        return [beam.pvalue.TaggedOutput(str(i), v) for i, v in enumerate(out)]

    def expand(self, batches):
        n_outputs = (2 if self._n else 0) + (1 if self._top_k else 0)
        tags = [str(i) for i in range(n_outputs)]
        outputs = (batches
                   | "Combine" >> beam.CombineGlobally(_StatsCombineFn(self._n, len(self._top_k)))
                   | "Extract" >> beam.FlatMap(self._outputs).with_outputs(*tags))
        return tuple(outputs[t] for t in tags)


def make_preprocessing_fn(spec: DatasetSpec) -> Callable[[dict], dict]:
    """Builds the preprocessing_fn for a spec.

    Args:
      spec: the dataset spec; its numeric and categorical columns are features.

    Returns:
      A preprocessing_fn(inputs) -> outputs for tft_beam.AnalyzeAndTransformDataset,
      over `tensor_adapter_config(spec)`'s inputs. When the label is among the
      inputs it is encoded; serving graphs simply have no label input.
    """
    numeric = [c for c in spec.columns if c.role == "numeric"]
    categorical = [c for c in spec.columns if c.role == "categorical"]
    label, classes = spec.label, list(spec.label_classes)
    top_k = [c.max_categories for c in categorical]

    def preprocessing_fn(inputs: dict) -> dict:
        outputs, analyzer_inputs, dtypes, shapes = {}, [], [], []
        if numeric:
            x = tf.cast(inputs[NUMERIC_BLOCK], tf.float32)
            defaults = tf.constant([np.nan if c.default is None else float(c.default) for c in numeric], tf.float32)
            x = tf.where(tf.math.is_nan(x), defaults[tf.newaxis, :], x)
            analyzer_inputs.append(x)
            dtypes += [tf.float32, tf.float32]
            shapes += [[len(numeric)], [len(numeric)]]
        if categorical:
            s = tf.strings.strip(inputs[CATEGORICAL_BLOCK])
            defaults = tf.constant([(c.default or "").encode("utf-8") for c in categorical])
            s = tf.where(tf.equal(s, b""), defaults[tf.newaxis, :], s)  # "" stays "" without a default
            analyzer_inputs.append(s)
            dtypes.append(tf.string)
            shapes.append([len(categorical), max(top_k)])
        stats = tft.experimental.ptransform_analyzer(
            analyzer_inputs, StatsAndVocabularies(len(numeric), top_k), dtypes, shapes,
            name="stats_and_vocabularies")
        if numeric:
            mean, std = stats[0], stats[1]
            centered = x - mean[tf.newaxis, :]
            z = tf.where(tf.not_equal(std, 0.0)[tf.newaxis, :], centered / tf.where(std == 0.0, 1.0, std), centered)
            outputs[NUMERIC_XF] = tf.where(tf.math.is_nan(x), 0.0, z)  # missing → the mean → 0
        if categorical:
            vocab = stats[-1]
            for i, c in enumerate(categorical):
                value = s[:, i:i + 1]
                hits = tf.logical_and(tf.equal(value, vocab[i:i + 1, :c.max_categories]), tf.not_equal(value, b""))
                hits = tf.cast(hits, tf.float32)  # [batch, K]: at most one 1 (vocabulary values are unique)
                oov = 1.0 - tf.reduce_sum(hits, axis=1, keepdims=True)
                outputs[transformed_name(c.name)] = tf.concat([hits, oov], axis=1)
        if label in inputs:
            # [batch, classes] equality instead of a lookup table: a table built inside
            # tf.Transform's traced function is re-initialized on every batch (and
            # warns each time); the class list is small and known from the spec.
            matches = tf.equal(tf.expand_dims(inputs[label], 1), tf.constant(classes)[tf.newaxis, :])
            index = tf.argmax(tf.cast(matches, tf.int64), axis=1)
            outputs[LABEL_KEY] = tf.where(tf.reduce_any(matches, axis=1), index, tf.constant(-1, tf.int64))
        return outputs

    return preprocessing_fn
