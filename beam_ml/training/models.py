"""Keras (tf_keras, the Keras of tf.Transform's layer) building blocks the model families share.

All models take one float32 [batch, D] input (see data.stack_features):
  classifier   optional hidden layers → 1 sigmoid unit (binary: P(positive class))
               or a softmax over the classes (multiclass).
  autoencoder  D → hidden → bottleneck → hidden → D, trained on the normal
               class; the score is the per-row reconstruction MSE.

Which layers a model gets is its family's choice (beam_ml.training.families);
these functions only assemble and compile what they are given.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tf_keras as keras

__all__ = ["make_optimizer", "classifier", "autoencoder"]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    return {
        "adam": keras.optimizers.Adam,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }[name](learning_rate=learning_rate)


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def _dense_stack(x, hidden_units: Sequence[int], dropout: float, prefix: str, l2: float = 0.0):
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_dense_{i}",
                               kernel_regularizer=_regularizer(l2))(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x


def classifier(task: str, input_dim: int, num_classes: int, hidden_units: Sequence[int], dropout: float,
               optimizer: str, learning_rate: float, l2: float, name: str) -> keras.Model:
    """A compiled binary (1 sigmoid unit) or multiclass (softmax) classifier.

    Args:
      task: 'binary' or 'multiclass'.
      input_dim: width D of the stacked transformed features.
      num_classes: number of label classes (multiclass outputs).
      hidden_units: ReLU layer sizes before the output layer ([]: the output layer alone, a linear model).
      dropout: dropout rate after each hidden layer.
      optimizer, learning_rate: a make_optimizer name and its initial step.
      l2: L2 penalty on every kernel (0: none).
      name: the Keras model's name.
    """
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = _dense_stack(inputs, hidden_units, dropout, "mlp", l2)
    if task == "binary":
        # [batch, 1]: Keras' class-weighted losses need the trailing unit axis.
        out = keras.layers.Dense(1, activation="sigmoid", name="probability", kernel_regularizer=_regularizer(l2))(x)
        loss, metrics = "binary_crossentropy", [keras.metrics.BinaryAccuracy(name="accuracy"),
                                                keras.metrics.AUC(name="auc")]
    elif task == "multiclass":
        out = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 kernel_regularizer=_regularizer(l2))(x)
        loss, metrics = "sparse_categorical_crossentropy", [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        raise ValueError(f"a classifier is binary or multiclass, not {task!r}")
    model = keras.Model(inputs, out, name=name)
    # Few metrics: each one costs time on every step of every trial.
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics)
    return model


def autoencoder(input_dim: int, hidden_units: Sequence[int], dropout: float, optimizer: str, learning_rate: float,
                l2: float, bottleneck: int, activation: Optional[str], name: str) -> keras.Model:
    """A compiled autoencoder: encoder `hidden_units` → `bottleneck` → the mirrored decoder → D, MSE loss.

    Dropout applies to the encoder only; `activation` is the bottleneck's (None: linear).
    """
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = _dense_stack(inputs, hidden_units, dropout, "encoder", l2)
    code = keras.layers.Dense(bottleneck, activation=activation, name="bottleneck")(x)
    x = _dense_stack(code, list(reversed(hidden_units)), 0.0, "decoder", l2)
    out = keras.layers.Dense(input_dim, activation=None, name="reconstruction")(x)
    model = keras.Model(inputs, out, name=name)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss="mse")
    return model
