"""tf.Transform preprocessing built from a dataset spec.

    fn = make_preprocessing_fn(spec)
    (dataset, transform_fn) = (batches, tensor_adapter_config(spec)) | tft_beam.AnalyzeAndTransformDataset(fn)

Raw inputs are dense [batch] tensors: numeric float32 with NaN for missing,
categorical bytes with b"" for missing, the label as bytes. Outputs:

  <numeric>_xf      float32 [batch]      z-score with train-split statistics over
                                         present values; missing → the spec default
                                         (before analysis), else the mean (→ 0).
  <categorical>_xf  float32 [batch, K+1] one-hot over the train vocabulary (top K
                                         by frequency, K = max_categories) with one
                                         OOV bucket; missing → spec default, else OOV.
  label             int64   [batch]      index into spec.label_classes (-1 if unknown).

The one-hot width K+1 is static, so the transformed schema is fixed-length.
"""
from __future__ import annotations

import re
from typing import Callable

import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public.tfxio import TensorAdapterConfig

from beam_ml.io.csv import arrow_schema_for
from beam_ml.spec import DatasetSpec

__all__ = [
    "LABEL_KEY",
    "transformed_name",
    "make_preprocessing_fn",
    "raw_feature_spec",
    "tensor_adapter_config",
    "transformed_feature_names",
]

LABEL_KEY = "label"


def transformed_name(name: str) -> str:
    return f"{name}_xf"


def _safe(name: str) -> str:
    """A TF op/file-safe version of a column name (headers may hold spaces, $, ...)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def vocab_name(name: str) -> str:
    return f"vocab_{_safe(name)}"


def raw_feature_spec(spec: DatasetSpec, with_label: bool = True) -> dict[str, tf.io.FixedLenFeature]:
    """tf.Example parsing spec for raw rows: absent features parse as missing."""
    fs = {}
    for c in spec.columns:
        if c.role == "numeric":
            fs[c.name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
        elif c.role == "categorical" or (c.role == "label" and with_label):
            fs[c.name] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    return fs


def tensor_adapter_config(spec: DatasetSpec, with_label: bool = True) -> TensorAdapterConfig:
    """How tf.Transform turns the reader's RecordBatches into raw [batch] tensors."""
    reps = {}
    for c in spec.columns:
        if c.role in ("numeric", "categorical") or (c.role == "label" and with_label):
            rep = schema_pb2.TensorRepresentation()
            rep.dense_tensor.column_name = c.name  # shape [] per row → a [batch] tensor
            reps[c.name] = rep
    arrow_schema = pa.schema([f for f in arrow_schema_for(spec, with_label) if f.name in reps])
    return TensorAdapterConfig(arrow_schema, reps)


def transformed_feature_names(spec: DatasetSpec) -> list[str]:
    """Model input names, in spec order (the order the model concatenates them)."""
    return [transformed_name(n) for n in spec.feature_columns]


def _zscore_numerics(inputs: dict, numeric: list) -> dict:
    """Z-scores every numeric column with ONE element-wise analyzer.

    One analyzer (not one per column) keeps the Beam graph small: tf.Transform
    expands each analyzer into dozens of Beam transforms, and with 30 columns the
    per-column form spent most of a run building and translating the graph.
    Statistics are over present values only (as sklearn's StandardScaler does
    with NaN); a missing value then becomes the mean, i.e. 0.
    """
    cols = []
    for name, default in numeric:
        x = tf.cast(inputs[name], tf.float32)
        if default is not None:
            x = tf.where(tf.math.is_nan(x), tf.constant(float(default), tf.float32), x)
        cols.append(x)
    x = tf.stack(cols, axis=1)  # [batch, n]
    idx = tf.where(tf.logical_not(tf.math.is_nan(x)))
    present = tf.SparseTensor(idx, tf.gather_nd(x, idx), tf.shape(x, out_type=tf.int64))
    z = tft.scale_to_z_score(present, elementwise=True, name="zscore_numeric")
    z = tf.cast(tf.sparse.to_dense(z, default_value=0.0), tf.float32)
    z = tf.ensure_shape(tf.reshape(z, [-1, len(numeric)]), [None, len(numeric)])
    return {transformed_name(name): z[:, i] for i, (name, _) in enumerate(numeric)}


def make_preprocessing_fn(spec: DatasetSpec) -> Callable[[dict], dict]:
    """Builds the preprocessing_fn for a spec.

    Args:
      spec: the dataset spec; its numeric and categorical columns are features.

    Returns:
      A preprocessing_fn(inputs) -> outputs for tft_beam.AnalyzeAndTransformDataset.
      When the label is among the inputs it is encoded; serving graphs simply
      have no label input.
    """
    numeric = [(c.name, c.default) for c in spec.columns if c.role == "numeric"]
    categorical = [(c.name, c.default, c.max_categories) for c in spec.columns if c.role == "categorical"]
    label, classes = spec.label, list(spec.label_classes)

    def preprocessing_fn(inputs: dict) -> dict:
        outputs = _zscore_numerics(inputs, numeric) if numeric else {}
        for name, default, k in categorical:
            x = tf.strings.strip(inputs[name])
            if default is not None:
                x = tf.where(tf.equal(x, b""), tf.constant(default.encode("utf-8")), x)
            # Missing stays b"": filtered out of the vocabulary, so it maps to OOV.
            idx = tft.compute_and_apply_vocabulary(
                x, top_k=k, num_oov_buckets=1,
                vocab_filename=vocab_name(name), name=vocab_name(name))
            # Index < vocab size + 1 <= k + 1, so a width of k + 1 always fits.
            outputs[transformed_name(name)] = tf.one_hot(idx, depth=k + 1, dtype=tf.float32)
        if label in inputs:
            # [batch, classes] equality instead of a lookup table: a table built inside
            # tf.Transform's traced function is re-initialized on every batch (and
            # warns each time); the class list is small and known from the spec.
            matches = tf.equal(tf.expand_dims(inputs[label], 1), tf.constant(classes)[tf.newaxis, :])
            index = tf.argmax(tf.cast(matches, tf.int64), axis=1)
            outputs[LABEL_KEY] = tf.where(tf.reduce_any(matches, axis=1), index, tf.constant(-1, tf.int64))
        return outputs

    return preprocessing_fn
