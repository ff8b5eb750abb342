"""Keras (tf_keras, the Keras of tf.Transform's layer) models by task.

All models take one float32 [batch, D] input (see data.stack_features):
  binary      MLP → 1 sigmoid unit: P(positive class).
  multiclass  MLP → softmax over the classes.
  anomaly     autoencoder D → hidden → bottleneck → hidden → D, trained on the
              normal class; the score is the per-row reconstruction MSE.
"""
from __future__ import annotations

from typing import Sequence

import tf_keras as keras

__all__ = ["build_model", "make_optimizer"]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    return {
        "adam": keras.optimizers.Adam,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }[name](learning_rate=learning_rate)


def _mlp(x, hidden_units: Sequence[int], dropout: float, prefix: str):
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_dense_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x


def build_model(task: str, input_dim: int, num_classes: int, hidden_units: Sequence[int], dropout: float,
                optimizer: str = "adam", learning_rate: float = 1e-3) -> keras.Model:
    """Builds and compiles the model for a task.

    Args:
      task: 'binary', 'multiclass' or 'anomaly'.
      input_dim: width D of the stacked transformed features.
      num_classes: number of label classes.
      hidden_units: MLP layer sizes (the autoencoder mirrors them around a bottleneck).
      dropout: dropout rate after each hidden layer.
      optimizer: optimizer name; learning_rate: its initial learning rate.
    """
    inputs = keras.Input(shape=(input_dim,), name="features")
    opt = make_optimizer(optimizer, learning_rate)
    if task == "binary":
        x = _mlp(inputs, hidden_units, dropout, "mlp")
        # [batch, 1]: Keras' class-weighted losses need the trailing unit axis.
        out = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
        model = keras.Model(inputs, out, name="binary_mlp")
        model.compile(optimizer=opt, loss="binary_crossentropy", metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ])
    elif task == "multiclass":
        x = _mlp(inputs, hidden_units, dropout, "mlp")
        out = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        model = keras.Model(inputs, out, name="multiclass_mlp")
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    elif task == "anomaly":
        units = list(hidden_units)
        bottleneck = max(2, min(units[-1] // 2, input_dim // 2 or 1))
        x = _mlp(inputs, units, dropout, "encoder")
        code = keras.layers.Dense(bottleneck, activation="relu", name="bottleneck")(x)
        x = _mlp(code, list(reversed(units)), 0.0, "decoder")
        out = keras.layers.Dense(input_dim, activation=None, name="reconstruction")(x)
        model = keras.Model(inputs, out, name="autoencoder")
        model.compile(optimizer=opt, loss="mse")
    else:
        raise ValueError(f"unknown task {task!r}")
    return model
