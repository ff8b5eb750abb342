"""The autoencoder family (anomaly): D → hidden → bottleneck → mirrored hidden → D, trained on the normal class.

    params = {"family": "autoencoder", "hidden_units": [64, 32], "dropout": 0.2, "optimizer": "adam", ...}

A row's anomaly score is its reconstruction error (trainer.predict_outputs).
"""
from __future__ import annotations

from typing import Any, Mapping

from beam_ml.training.families.base import Family

__all__ = ["AUTOENCODER", "Autoencoder"]


class Autoencoder(Family):
    name = "autoencoder"
    tasks = ("anomaly",)

    def build(self, params: Mapping[str, Any], task: str, input_dim: int, num_classes: int):
        from beam_ml.training import models  # Keras (see families.base)

        units = list(params["hidden_units"])
        # Half the last hidden layer, at most half the input: the code cannot copy its input through.
        bottleneck = max(2, min(units[-1] // 2, input_dim // 2 or 1))
        return models.autoencoder(input_dim, units, params["dropout"], params["optimizer"], params["learning_rate"],
                                  float(params.get("l2", 0.0)), bottleneck=bottleneck, activation="relu",
                                  name="autoencoder")


AUTOENCODER = Autoencoder()
