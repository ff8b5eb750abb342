"""The mlp family: ReLU hidden layers (with dropout) under a sigmoid (binary) or softmax (multiclass) output.

    params = {"family": "mlp", "hidden_units": [64, 32], "dropout": 0.2, "optimizer": "adam", ...}
"""
from __future__ import annotations

from typing import Any, Mapping

from beam_ml.training.families.base import Family

__all__ = ["MLP", "Mlp"]


class Mlp(Family):
    name = "mlp"
    tasks = ("binary", "multiclass")

    def build(self, params: Mapping[str, Any], task: str, input_dim: int, num_classes: int):
        from beam_ml.training import models  # Keras (see families.base)

        return models.classifier(task, input_dim, num_classes, params["hidden_units"], params["dropout"],
                                 params["optimizer"], params["learning_rate"], float(params.get("l2", 0.0)),
                                 name=f"{task}_mlp")


MLP = Mlp()
