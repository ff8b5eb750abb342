"""Fitting models on transformed arrays: the family-independent core of trials and the final training.

    x, y = load_splits(output_dir, spec, ["fold1", "fold2"])           # cached per process
    hist, best_epoch = fit_epochs(model, x, y, epochs=30, batch_size=64, weights=None, seed=7,
                                  validation=(xv, yv))                # what a family's fit calls
    scores = predict_outputs(model, xv, spec.task)

A parameter set's model is built and fitted by its family
(beam_ml.training.families.fit_model); this module holds what they share.

Early stopping watches the validation loss and restores the best epoch's
weights; the learning rate halves on plateaus. With no validation data (the
final refit on train + validation) the epoch count and the learning-rate
schedule are given instead, taken from cross-validation. `backup_dir` makes a
fit resumable after a kill (Keras BackupAndRestore).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from beam_ml.spec import DatasetSpec
from beam_ml.training.data import stack_features
from transforms.preprocessing import LABEL_KEY, transformed_feature_names

__all__ = ["FitResult", "auto_batch_size", "class_weights_from_counts", "load_splits", "fit_epochs", "evaluate",
           "predict_outputs", "limit_threads", "split_files", "training_dataset", "trial_callbacks"]


def auto_batch_size(train_rows: int) -> int:
    """About 100 steps per epoch: small data still gets enough updates, big data fast epochs."""
    return int(min(512, max(32, train_rows // 100)))


def class_weights_from_counts(counts: Sequence[int], mode: str) -> Optional[dict[int, float]]:
    """Balanced class weights (n / (k * n_c)), or None when not wanted.

    'auto' weights only imbalanced data: the rarest class under a third of the commonest.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none" or len(counts) == 0 or counts.min() <= 0:
        return None
    if mode == "auto" and counts.min() / counts.max() >= 1 / 3:
        return None
    w = counts.sum() / (len(counts) * counts)
    return {i: float(v) for i, v in enumerate(w)}


def limit_threads(threads: int) -> bool:
    """Caps TensorFlow's intra- and inter-op threads of this process; False if TF was already running.

    Several trials training at once on a small machine thrash when each uses
    every core; one thread each is faster in total for these small models.
    """
    if threads <= 0:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        return True
    except RuntimeError:  # the runtime is initialized: only the environment could have set it
        return False


def split_files(output_dir: str, split: str) -> list[str]:
    """The TFRecord files of one split ('fold0'... or 'test'); gs:// works (tf.io.gfile)."""
    from beam_ml.preprocess import split_prefix

    return sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/{split_prefix(split)}-*.tfrecord"))


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _read_split(output_dir: str, spec: DatasetSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_transform as tft

    feature_spec = tft.TFTransformOutput(output_dir).transformed_feature_spec()
    names = transformed_feature_names(spec)
    wanted = {k: v for k, v in feature_spec.items() if k in set(names) | {LABEL_KEY}}
    xs, ys = [], []
    files = split_files(output_dir, split)
    if files:
        ds = tf.data.TFRecordDataset(files).batch(8192).map(lambda s: tf.io.parse_example(s, wanted))
        for f in ds:
            xs.append(stack_features(f, names).numpy())
            ys.append(f[LABEL_KEY].numpy())
    if not xs:
        from beam_ml.training.data import feature_dim

        return np.zeros((0, feature_dim(feature_spec, names)), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def load_splits(output_dir: str, spec: DatasetSpec, splits: Sequence[str],
                cache_key: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """(features [rows, D] float32, labels [rows]) of the given splits, concatenated in order.

    Each split is read once per process and `cache_key` (a run id: files of
    another run under the same output dir must not be served from memory).
    """
    xs, ys = [], []
    for split in splits:
        key = (cache_key, output_dir, split)
        with _CACHE_LOCK:
            if cache_key is None or key not in _CACHE:
                if cache_key is not None:
                    for old in [k for k in _CACHE if k[0] != cache_key]:
                        del _CACHE[old]  # one run's data at a time
                value = _read_split(output_dir, spec, split)
                if cache_key is None:
                    xs.append(value[0]), ys.append(value[1])
                    continue
                _CACHE[key] = value
            x, y = _CACHE[key]
        xs.append(x), ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def training_dataset(x: np.ndarray, target: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """(features, target) batches in a fresh order each epoch (a full shuffle, seeded), for Model.fit.

    What fit(x, y, shuffle=True) feeds, without Keras' array adapter: tearing
    that adapter's pipeline down (an autotuned parallel map) stalled ~1.1 s
    after about half of a trial's fits (with its validation callbacks) on a
    2-core machine, in a 2-second trial; this pipeline (no autotuning, no
    parallel map) never did in the same runs (benchmarks/bench_feed.py). Each
    epoch (each new iterator, as Model.fit makes one per epoch) draws one seed,
    permutes all row indices in one op and slices batches from the permutation,
    as Keras' adapter does: a shuffle buffer would cost a pass per element.
    """
    n = len(x)
    xs, ts = tf.constant(x), tf.constant(target)
    starts = tf.range(0, n, batch_size, dtype=tf.int64)

    def epoch(draw):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([draw, 0]))

        def batch(start):
            rows = order[start:start + batch_size]
            return tf.gather(xs, rows), tf.gather(ts, rows)

        return tf.data.Dataset.from_tensor_slices(starts).map(batch)

    ds = (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
          .take(1)
          .flat_map(epoch)
          .prefetch(1)
          .apply(tf.data.experimental.assert_cardinality(int(starts.shape[0]))))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    return ds.with_options(options)


@dataclasses.dataclass
class FitResult:
    model: Any
    history: dict
    best_epoch: int
    batch_size: int
    class_weights: Optional[dict]
    solver: Optional[dict] = None  # a family fitted exactly says how: {"name", "iterations", "converged", ...}


class _Validation(keras.callbacks.Callback):
    """After each epoch, what `fit(validation_data=...)` would log (val_loss and val_<metric>), computed
    as Keras' test_step computes it, in one eager forward pass.

    Keras' own evaluate loop costs ~35 ms per epoch over that pass for these small models: a
    10-epoch fit on 12k rows took 2.31 s with it and 1.96 s with this, alone and back to back
    (best of 8); inside bench_tune's 85 trials the summed trial time moved only 231 → 228 s. It must
    come before the callbacks that read val_loss (EarlyStopping, ReduceLROnPlateau); Keras appends
    its History and progress bar after the user's callbacks, so they see the values.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__()
        self._x, self._y = x, tf.constant(y)  # converted once, not every epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self._x) == 0:
            return
        for name, value in evaluate(self.model, self._x, self._y).items():
            logs[f"val_{name}"] = value


def _forward(model, x: np.ndarray, chunk: int) -> tf.Tensor:
    """The model's outputs on x (inference mode), called directly on chunks of `chunk` rows: no tf.data."""
    return tf.concat([model(x[i:i + chunk], training=False) for i in range(0, len(x), chunk)], axis=0)


def evaluate(model, x: np.ndarray, y, chunk: int = 65536) -> dict[str, float]:
    """The compiled loss (with regularization) and metrics of `model` on (x, y), as Keras' test_step
    computes them, in one eager pass (x in chunks). Resets the model's metric state."""
    pred = _forward(model, x, chunk)
    y = tf.convert_to_tensor(y)
    model.reset_metrics()
    model.compute_loss(y=y, y_pred=pred)
    return {name: float(value) for name, value in model.compute_metrics(None, y, pred, None).items()}


class _LearningRateLog(keras.callbacks.Callback):
    """Records the learning rate each epoch ran with (history['lr'])."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))


def trial_callbacks(validation: Optional[tuple[np.ndarray, np.ndarray]], patience: int) -> tuple[list, Any]:
    """fit_model's Keras callbacks: the learning-rate log and, with validation data, the per-epoch
    validation pass (first: the others read val_loss), early stopping and plateaus.

    Returns:
      (the callbacks, the EarlyStopping callback or None).
    """
    callbacks: list = [_LearningRateLog()]
    if validation is None:
        return callbacks, None
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    return [_Validation(*validation), *callbacks, early,
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, patience // 2),
                                              min_lr=1e-6)], early


def fit_epochs(model, x: np.ndarray, target: np.ndarray, epochs: int, batch_size: int,
               weights: Optional[dict[int, float]], seed: int, validation: Optional[tuple[np.ndarray, np.ndarray]],
               patience: int = 5, verbose: int = 0, backup_dir: Optional[str] = None,
               lr_schedule: Optional[Sequence[float]] = None, extra_callbacks: Sequence[Any] = ()) -> tuple[dict, int]:
    """Trains a compiled Keras model by epochs of minibatches: what every family that is not fitted exactly does.

    Early stopping watches the validation loss and restores the best epoch's
    weights; the learning rate halves on plateaus. Without validation data
    exactly `epochs` epochs run, with `lr_schedule`.

    Args:
      model: the compiled model (its family built it).
      x, target: training features and what the model learns to output (labels, or x for an autoencoder).
      epochs: most epochs.
      batch_size: rows per step.
      weights: class weights, or None.
      seed: shuffling seed.
      validation: (x, target) for early stopping and the plateaus, or None.
      patience: epochs without validation-loss improvement before stopping.
      verbose: Keras progress output.
      backup_dir: BackupAndRestore state (resume after a kill), or None.
      lr_schedule: the learning rate of each epoch (without validation).
      extra_callbacks: more Keras callbacks (logs, CSV history).

    Returns:
      (history: per-epoch losses, metrics and learning rates; the best epoch, 1-based).
    """
    callbacks, early = trial_callbacks(validation, patience)
    if validation is None and lr_schedule:
        schedule = list(lr_schedule)
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: float(schedule[min(epoch, len(schedule) - 1)])))
    if backup_dir:
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    callbacks += list(extra_callbacks)
    history = model.fit(training_dataset(x, target, batch_size, seed), epochs=int(epochs),
                        class_weight=weights, callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    best_epoch = len(hist.get("loss", []))
    if early is not None:
        if early.best_weights is not None:
            model.set_weights(early.best_weights)  # also when no early stop happened
        if "val_loss" in hist and hist["val_loss"]:
            best_epoch = int(np.argmin(hist["val_loss"])) + 1
    return hist, max(1, best_epoch)


def predict_outputs(model, x: np.ndarray, task: str) -> np.ndarray:
    """Scores (binary: P(positive); anomaly: reconstruction MSE) or probabilities [rows, classes]."""
    if len(x) == 0:
        return np.zeros((0,), np.float32)
    out = _forward(model, x, 8192).numpy()
    if task == "anomaly":
        return np.mean(np.square(out - x), axis=1)
    if task == "binary":
        return np.asarray(out).reshape(-1)
    return np.asarray(out)
