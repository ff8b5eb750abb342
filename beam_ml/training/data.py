"""tf.data input over the transformed TFRecords, and the one feature-stacking function.

`stack_features` turns a dict of transformed features into the model's single
[batch, D] input. Training and the exported serving graph both call it, so the
feature order and shapes cannot differ between them.
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

import tensorflow as tf

from transforms.preprocessing import LABEL_KEY

__all__ = ["stack_features", "make_dataset", "feature_dim", "tfrecord_files"]


def stack_features(features: dict, names: Sequence[str]) -> tf.Tensor:
    """Concatenates features in `names` order into a float32 [batch, D] tensor."""
    parts = []
    for name in names:
        x = tf.cast(features[name], tf.float32)
        if x.shape.rank == 1:
            x = tf.expand_dims(x, -1)
        parts.append(x)
    return tf.concat(parts, axis=-1)


def feature_dim(feature_spec: dict, names: Sequence[str]) -> int:
    dim = 0
    for name in names:
        shape = feature_spec[name].shape
        dim += int(shape[0]) if len(shape) else 1
    return dim


def tfrecord_files(output_dir: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(output_dir, "data", f"{split}-*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no {split} TFRecords under {output_dir}/data")
    return files


def make_dataset(files: Sequence[str], feature_spec: dict, names: Sequence[str], batch_size: int,
                 shuffle: bool, seed: int = 42, label_filter: Optional[int] = None,
                 autoencoder: bool = False) -> tf.data.Dataset:
    """A (features [b, D], label [b]) dataset, cached in memory after parsing.

    Args:
      files: transformed TFRecord files.
      feature_spec: the transformed feature spec (tft_output.transformed_feature_spec()).
      names: model input feature names, in order.
      batch_size: rows per training batch.
      shuffle: shuffle rows each epoch (deterministic with `seed`).
      label_filter: keep only rows with this label index (autoencoders train on normal rows).
      autoencoder: yield (x, x) instead of (x, label).
    """
    spec = {k: v for k, v in feature_spec.items() if k in set(names) | {LABEL_KEY}}
    ds = tf.data.TFRecordDataset(list(files))
    ds = ds.batch(4096).map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda f: (stack_features(f, names), f[LABEL_KEY]), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch()
    if label_filter is not None:
        ds = ds.filter(lambda x, y: tf.equal(y, label_filter))
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(65536, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if autoencoder:
        ds = ds.map(lambda x, y: (x, x))
    return ds.prefetch(tf.data.AUTOTUNE)
