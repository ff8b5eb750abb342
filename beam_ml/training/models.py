"""Keras (tf_keras, the Keras of tf.Transform's layer) models by task.

All models take one float32 [batch, D] input (see data.stack_features):
  binary      MLP → 1 sigmoid unit: P(positive class).
  multiclass  MLP → softmax over the classes.
  anomaly     autoencoder D → hidden → bottleneck → hidden → D, trained on the
              normal class; the score is the per-row reconstruction MSE.

With no hidden layers (`hidden_units=[]`) each is the linear model of its
task: logistic regression, softmax regression, and a linear autoencoder (a
PCA-like projection to the bottleneck and back).
"""
from __future__ import annotations

from typing import Sequence

import tf_keras as keras

__all__ = ["build_model", "make_optimizer"]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "lbfgs":
        # The exact linear fit sets the weights itself (trainer._fit_exact_linear); Keras only
        # needs an optimizer to compile the model it scores and exports.
        name = "sgd"
    return {
        "adam": keras.optimizers.Adam,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }[name](learning_rate=learning_rate)


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def _mlp(x, hidden_units: Sequence[int], dropout: float, prefix: str, l2: float = 0.0):
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_dense_{i}",
                               kernel_regularizer=_regularizer(l2))(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x


def build_model(task: str, input_dim: int, num_classes: int, hidden_units: Sequence[int], dropout: float,
                optimizer: str = "adam", learning_rate: float = 1e-3, l2: float = 0.0) -> keras.Model:
    """Builds and compiles the model for a task.

    Args:
      task: 'binary', 'multiclass' or 'anomaly'.
      input_dim: width D of the stacked transformed features.
      num_classes: number of label classes.
      hidden_units: MLP layer sizes (the autoencoder mirrors them around a bottleneck); [] = linear.
      dropout: dropout rate after each hidden layer.
      optimizer: optimizer name; learning_rate: its initial learning rate.
      l2: L2 penalty on every kernel (0: none).
    """
    inputs = keras.Input(shape=(input_dim,), name="features")
    opt = make_optimizer(optimizer, learning_rate)
    if task == "binary":
        x = _mlp(inputs, hidden_units, dropout, "mlp", l2)
        # [batch, 1]: Keras' class-weighted losses need the trailing unit axis.
        out = keras.layers.Dense(1, activation="sigmoid", name="probability", kernel_regularizer=_regularizer(l2))(x)
        model = keras.Model(inputs, out, name="binary_mlp" if hidden_units else "binary_linear")
        model.compile(optimizer=opt, loss="binary_crossentropy", metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ])  # few metrics: each one costs time on every step of every trial
    elif task == "multiclass":
        x = _mlp(inputs, hidden_units, dropout, "mlp", l2)
        out = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 kernel_regularizer=_regularizer(l2))(x)
        model = keras.Model(inputs, out, name="multiclass_mlp" if hidden_units else "multiclass_linear")
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    elif task == "anomaly":
        units = list(hidden_units)
        linear = not units
        bottleneck = max(2, input_dim // 4) if linear else max(2, min(units[-1] // 2, input_dim // 2 or 1))
        x = _mlp(inputs, units, dropout, "encoder", l2)
        code = keras.layers.Dense(bottleneck, activation=None if linear else "relu", name="bottleneck")(x)
        x = _mlp(code, list(reversed(units)), 0.0, "decoder", l2)
        out = keras.layers.Dense(input_dim, activation=None, name="reconstruction")(x)
        model = keras.Model(inputs, out, name="linear_autoencoder" if linear else "autoencoder")
        model.compile(optimizer=opt, loss="mse")
    else:
        raise ValueError(f"unknown task {task!r}")
    return model
