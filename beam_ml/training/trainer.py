"""Fitting one model on transformed arrays: the shared core of trials and the final training.

    x, y = load_splits(output_dir, spec, ["fold1", "fold2"])           # cached per process
    fitted = fit_model(params, spec.task, x, y, validation=(xv, yv), class_counts=[900, 100], seed=7)
    scores = predict_outputs(fitted.model, xv, spec.task)

Early stopping watches the validation loss and restores the best epoch's
weights; the learning rate halves on plateaus. With no validation data (the
final refit on train + validation) the epoch count and the learning-rate
schedule are given instead, taken from cross-validation. `backup_dir` makes a
fit resumable after a kill (Keras BackupAndRestore).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from beam_ml.spec import DatasetSpec
from beam_ml.training.data import stack_features
from beam_ml.training.models import build_model
from transforms.preprocessing import LABEL_KEY, transformed_feature_names

__all__ = ["FitResult", "auto_batch_size", "class_weights_from_counts", "load_splits", "fit_model",
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
    solver: Optional[dict] = None  # the exact linear fit: {"name": "lbfgs", "iterations", "converged", "C"}


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
        for name, value in _evaluate(self.model, self._x, self._y).items():
            logs[f"val_{name}"] = value


def _forward(model, x: np.ndarray, chunk: int) -> tf.Tensor:
    """The model's outputs on x (inference mode), called directly on chunks of `chunk` rows: no tf.data."""
    return tf.concat([model(x[i:i + chunk], training=False) for i in range(0, len(x), chunk)], axis=0)


def _evaluate(model, x: np.ndarray, y, chunk: int = 65536) -> dict[str, float]:
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


def fit_model(params: Mapping[str, Any], task: str, x: np.ndarray, y: np.ndarray,
              validation: Optional[tuple[np.ndarray, np.ndarray]], class_counts: Sequence[int], seed: int,
              patience: int = 5, verbose: int = 0, backup_dir: Optional[str] = None,
              lr_schedule: Optional[Sequence[float]] = None, extra_callbacks: Sequence[Any] = ()) -> FitResult:
    """Builds the model of `params` and fits it.

    Args:
      params: a parameter set (beam_ml.tuning.PARAM_KEYS).
      task: binary, multiclass or anomaly (the autoencoder fits on normal rows: label 0).
      x, y: training features and labels.
      validation: (x, y) for early stopping and the learning-rate plateaus, or
        None: then exactly params['epochs'] epochs run, with `lr_schedule`.
      class_counts: training rows per class (class weights).
      seed: model initialisation and shuffling seed.
      patience: epochs without validation-loss improvement before stopping.
      verbose: Keras progress output.
      backup_dir: BackupAndRestore state (resume after a kill), or None.
      lr_schedule: the learning rate of each epoch (without validation).
      extra_callbacks: more Keras callbacks (logs, CSV history).
    """
    keras.utils.set_random_seed(seed)
    autoencoder = task == "anomaly"
    if autoencoder:
        x = x[y == 0]
        y = y[y == 0]
        if validation is not None:
            xv, yv = validation
            validation = (xv[yv == 0], xv[yv == 0])
        target = x
    else:
        target = y
    batch_size = int(params.get("batch_size") or auto_batch_size(len(x)))
    weights = None if autoencoder else class_weights_from_counts(class_counts, params.get("class_weights", "auto"))
    model = build_model(task, x.shape[1], max(2, len(class_counts)), params["hidden_units"], params["dropout"],
                        params["optimizer"], params["learning_rate"], params.get("l2", 0.0))
    if params["optimizer"] == "lbfgs":
        hist, solver = _fit_exact_linear(model, task, x, y, validation, weights, float(params.get("l2", 0.0)),
                                         max(2, len(class_counts)))
        return FitResult(model=model, history=hist, best_epoch=1, batch_size=batch_size, class_weights=weights,
                         solver=solver)
    callbacks, early = trial_callbacks(validation, patience)
    if validation is None and lr_schedule:
        schedule = list(lr_schedule)
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: float(schedule[min(epoch, len(schedule) - 1)])))
    if backup_dir:
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    callbacks += list(extra_callbacks)
    history = model.fit(training_dataset(x, target, batch_size, seed), epochs=int(params["epochs"]),
                        class_weight=weights, callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    best_epoch = epochs_run
    if early is not None:
        if early.best_weights is not None:
            model.set_weights(early.best_weights)  # also when no early stop happened
        if "val_loss" in hist and hist["val_loss"]:
            best_epoch = int(np.argmin(hist["val_loss"])) + 1
    return FitResult(model=model, history=hist, best_epoch=max(1, best_epoch), batch_size=batch_size,
                     class_weights=weights)


def _fit_exact_linear(model, task: str, x: np.ndarray, y: np.ndarray,
                      validation: Optional[tuple[np.ndarray, np.ndarray]], weights: Optional[dict[int, float]],
                      l2: float, num_classes: int) -> tuple[dict, dict]:
    """Fits logistic (binary) or softmax (multiclass) regression exactly and loads it into the Keras model.

    scikit-learn's LogisticRegression (L-BFGS to convergence) minimizes
    C·Σ wᵢ·loss(xᵢ) + ½‖W‖², the intercept unpenalized, with wᵢ the class weight
    of row i (the same weights the other candidates train with). Keras' L2(l2)
    on the mean loss is the same objective with C = 1 / (2·n·l2); l2 = 0 means
    C = 1, scikit-learn's default (unpenalized, a separable dataset has no
    finite optimum). The fitted coefficients become the Dense layer's kernel and
    bias, so the exported model computes exactly predict_proba.

    Returns:
      (history: the final training and validation loss and metrics, one entry each;
       solver: {"name": "lbfgs", "C", "iterations", "converged"}).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    dense = model.layers[-1]
    dim = x.shape[1]
    outputs = 1 if task == "binary" else num_classes
    kernel = np.zeros((dim, outputs), np.float32)
    bias = np.zeros((outputs,), np.float32)
    present = np.unique(y).astype(int)
    iterations, converged = 0, True
    c = 1.0 if l2 <= 0 else 1.0 / (2.0 * len(x) * l2)
    if len(present) < 2:
        # One class only: every row gets it (a constant logit), nothing to fit.
        only = int(present[0]) if len(present) else 0
        if task == "binary":
            bias[0] = 12.0 if only == 1 else -12.0
        else:
            bias[:] = -12.0
            bias[only] = 12.0
    else:
        sample_weight = None if not weights else \
            np.asarray([weights[c] for c in range(len(weights))], np.float64)[y.astype(int)]
        clf = LogisticRegression(C=c, max_iter=2000, tol=1e-6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x.astype(np.float64), y.astype(int), sample_weight=sample_weight)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        iterations = int(np.max(clf.n_iter_))
        if task == "binary":
            kernel[:, 0] = clf.coef_[0]
            bias[0] = clf.intercept_[0]
        else:
            if clf.coef_.shape[0] == 1:  # two classes present of a multiclass task: one logit
                kernel[:, present[1]] = clf.coef_[0]
                bias[present[1]] = clf.intercept_[0]
            else:
                kernel[:, present] = clf.coef_.T
                bias[present] = clf.intercept_
            absent = np.setdiff1d(np.arange(num_classes), present)
            bias[absent] = -30.0  # a class the training rows never show: probability ~0
    dense.set_weights([kernel, bias])

    # The same loss (and metrics) the other candidates log: Keras' compiled ones, unweighted.
    hist = {k: [v] for k, v in _evaluate(model, x, y).items()}
    if validation is not None and len(validation[0]):
        hist.update({f"val_{k}": [v] for k, v in _evaluate(model, *validation).items()})
    return hist, {"name": "lbfgs", "C": c, "iterations": iterations, "converged": converged}


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
