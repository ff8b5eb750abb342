"""Keras training over the transformed TFRecords, evaluation, export and report.

    summary = train_and_evaluate(output_dir, spec, TrainConfig(epochs=30))

Resumes an interrupted run: BackupAndRestore keeps the last finished epoch's
state under <output_dir>/checkpoints/backup and `fit` continues from there.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from beam_ml.export import export_model
from beam_ml.spec import DatasetSpec
from beam_ml.training import evaluate, report
from beam_ml.training.data import feature_dim, make_dataset, tfrecord_files
from beam_ml.training.models import build_model
from transforms.preprocessing import transformed_feature_names

__all__ = ["TrainConfig", "train_and_evaluate", "class_weights_from_counts"]


@dataclasses.dataclass
class TrainConfig:
    hidden_units: Sequence[int] = (64, 32)
    dropout: float = 0.2
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 0  # 0: auto_batch_size(train rows)
    epochs: int = 30
    early_stopping_patience: int = 5
    class_weights: str = "auto"  # auto | balanced | none
    seed: int = 42
    verbose: int = 2
    dataset_name: str = ""


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


def _label_counts(output_dir: str, spec: DatasetSpec) -> list[int]:
    """Train-split class counts, counted by the preprocessing pipeline (counts.json)."""
    with tf.io.gfile.GFile(os.path.join(output_dir, "counts.json")) as f:
        by_value = json.load(f).get("train_label_counts", {})
    return [int(by_value.get(c, 0)) for c in spec.label_classes]


def _collect(ds: tf.data.Dataset, model: keras.Model, autoencoder: bool):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    x = np.concatenate(xs) if xs else np.zeros((0, model.input_shape[-1]), np.float32)
    y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
    out = model.predict(x, batch_size=4096, verbose=0)
    if autoencoder:
        out = np.mean(np.square(out - x), axis=1)
    return y, out


def train_and_evaluate(output_dir: str, spec: DatasetSpec, config: TrainConfig) -> dict:
    """Trains, evaluates on the eval split, exports a new model version and writes the report.

    Args:
      output_dir: holds transform_fn/ and data/ from preprocessing; receives
        model/<version>/, checkpoints/, logs/, metrics.json, report.md, *.png.
      spec: the dataset spec used for preprocessing.
      config: model and training settings.

    Returns:
      A summary dict (also the core of metrics.json).
    """
    start = time.time()
    keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(output_dir)
    feature_spec = tft_output.transformed_feature_spec()
    names = transformed_feature_names(spec)
    dim = feature_dim(feature_spec, names)
    counts = _label_counts(output_dir, spec)
    autoencoder = spec.task == "anomaly"
    train_files, eval_files = tfrecord_files(output_dir, "train"), tfrecord_files(output_dir, "eval")

    batch_size = config.batch_size or auto_batch_size(sum(counts))
    normal = 0 if autoencoder else None  # the autoencoder learns what normal rows look like
    train_ds = make_dataset(train_files, feature_spec, names, batch_size, shuffle=True, seed=config.seed,
                            label_filter=normal, autoencoder=autoencoder)
    val_ds = make_dataset(eval_files, feature_spec, names, 4096, shuffle=False, label_filter=normal,
                          autoencoder=autoencoder)
    weights = None if autoencoder else class_weights_from_counts(counts, config.class_weights)

    model = build_model(spec.task, dim, spec.num_classes, config.hidden_units, config.dropout,
                        config.optimizer, config.learning_rate)
    ckpt_dir = os.path.join(output_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(ckpt_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(ckpt_dir, "best.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(1, config.early_stopping_patience // 2), min_lr=1e-6),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), histogram_freq=0),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
    ]
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, class_weight=weights,
                        callbacks=callbacks, verbose=config.verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}

    # Metrics on every eval row (for the autoencoder, anomalies included).
    eval_all = make_dataset(eval_files, feature_spec, names, 4096, shuffle=False)
    y, out = _collect(eval_all, model, autoencoder)
    if spec.task == "multiclass":
        metrics = evaluate.multiclass_metrics(y, out, spec.label_classes)
        threshold = 0.5
    else:
        scores = out if autoencoder else np.asarray(out).reshape(-1)
        metrics = evaluate.binary_metrics(y, scores)
        threshold = metrics["threshold"]

    summary = {
        "dataset": config.dataset_name,
        "task": spec.task,
        "label": spec.label,
        "classes": ", ".join(spec.label_classes),
        "train_label_counts": ", ".join(f"{c}={n}" for c, n in zip(spec.label_classes, counts)),
        "class_weights": json.dumps(weights) if weights else "none",
        "input_dim": dim,
        "batch_size": batch_size,
        "epochs_run": len(hist.get("loss", [])),
        "decision_threshold": threshold,
        "train_seconds": round(time.time() - start, 1),
    }
    version_dir = export_model(os.path.join(output_dir, "model"), tft_output, model, spec, threshold,
                               metadata={"metrics": {k: v for k, v in metrics.items()
                                                     if isinstance(v, (int, float)) or v is None}})
    # The Keras model over transformed features, kept for skew checks against the export.
    model.save(os.path.join(output_dir, "keras_model"), save_format="tf", include_optimizer=False)
    summary["model_version_dir"] = version_dir
    report_path = report.write_report(output_dir, summary, hist, metrics, spec.label_classes, version_dir)
    result = {"summary": summary, "eval": metrics, "history": hist, "report": report_path}
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    return result
