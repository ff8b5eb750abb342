"""What a model family is: the tasks it serves, how its parameter sets read, how it is built, fitted and named.

A family subclasses `Family`, overrides what differs, and is listed once in
beam_ml.training.families.FAMILIES. Callers never look at a parameter set's
layers or optimizer to know what kind of model it is: they ask its family.

Describing and checking a set is pure; building and fitting import Keras and
TensorFlow when first called (beam_ml.training.models and .trainer are
deferred: planning a run, --help and the search space stay light).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from beam_ml.errors import UserError

if TYPE_CHECKING:
    from beam_ml.training.trainer import FitResult

__all__ = ["Family", "TASKS", "KERAS_OPTIMIZERS"]

TASKS = ("binary", "multiclass", "anomaly")
# The optimizers of beam_ml.training.models.make_optimizer.
KERAS_OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")


class Family:
    """A kind of model. Subclasses set `name` and `tasks` and implement `build`; the rest has defaults.

    Every method takes a parameter set: a dict over beam_ml.tuning.PARAM_KEYS
    whose `family` is this family's name (see `canonical`).
    """

    name: str = ""
    tasks: Sequence[str] = ()
    # Whether a search needs hidden layers for this family (the linear model has none).
    needs_hidden_units: bool = True

    def optimizers(self, task: Optional[str]) -> Sequence[str]:
        """The optimizers a set of this family may name for `task` (None: any task the family serves)."""
        return KERAS_OPTIMIZERS

    def check(self, params: Mapping[str, Any], task: str, where: str) -> None:
        """Raises UserError (naming `where`) when this family cannot fit `params` for `task`.

        The optimizer is checked by the registry (beam_ml.training.families.resolve), which knows every family.
        """
        if task not in self.tasks:
            raise UserError(f"{where}: family {self.name} fits {' or '.join(self.tasks)} tasks, not {task}")
        if self.needs_hidden_units and not params.get("hidden_units"):
            raise UserError(f"{where}: family {self.name} needs hidden layers (hidden_units, e.g. \"64,32\")")

    def canonical(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The set as this family reads it, with `family` set: values it ignores are reset, so equal models dedupe."""
        return dict(params, family=self.name)

    def build(self, params: Mapping[str, Any], task: str, input_dim: int, num_classes: int):
        """The compiled, untrained Keras model of `params` over [batch, input_dim] features."""
        raise NotImplementedError

    def fit(self, model, params: Mapping[str, Any], task: str, x: np.ndarray, y: np.ndarray, target: np.ndarray,
            validation: Optional[tuple[np.ndarray, np.ndarray]], weights: Optional[dict[int, float]],
            batch_size: int, seed: int, num_classes: int, numeric_columns: int = 0, **epoch_args: Any) -> "FitResult":
        """Fits the built `model`: by default epochs of minibatches (trainer.fit_epochs).

        Args:
          model: what `build` returned.
          x, y: training features and labels; target: what the model outputs (y, or x for an autoencoder).
          validation: (x, target) of the validation rows, or None.
          weights: class weights, or None; batch_size: rows per step; seed: shuffling seed.
          num_classes: label classes.
          numeric_columns: how many leading columns of x are z-scored numerics (the rest one-hot); a family whose
            fit depends on the columns' scale (the exact linear fit) standardises those on the rows it fits.
          **epoch_args: fit_epochs' patience, verbose, backup_dir, lr_schedule, extra_callbacks.
        """
        from beam_ml.training.trainer import FitResult, fit_epochs  # Keras + TensorFlow (see the module's doc)

        hist, best_epoch = fit_epochs(model, x, target, int(params["epochs"]), batch_size, weights, seed, validation,
                                      **epoch_args)
        return FitResult(model=model, history=hist, best_epoch=best_epoch, batch_size=batch_size,
                         class_weights=weights)

    def exact_solver(self, params: Mapping[str, Any]) -> Optional[str]:
        """The solver that fits `params` to its optimum in one go (no epochs to choose), or None."""
        return None

    def complexity(self, params: Mapping[str, Any]) -> int:
        """How complex the model is (the selection rule prefers simpler): its hidden units."""
        return int(sum(params.get("hidden_units") or []))

    def architecture(self, params: Mapping[str, Any]) -> str:
        """The first words of `describe`: the family and its layers ('mlp 64-32')."""
        return f"{self.name} " + "-".join(str(u) for u in params.get("hidden_units") or [])

    def training_words(self, params: Mapping[str, Any]) -> list[str]:
        """The middle words of `describe`: how the set trains ('dropout=0.2', 'adam lr=0.001', 'batch=64')."""
        words = [f"dropout={params['dropout']:g}"] if params.get("dropout") else []
        words.append(f"{params.get('optimizer', 'adam')} lr={params.get('learning_rate', 1e-3):g}")
        if params.get("batch_size"):
            words.append(f"batch={params['batch_size']}")
        if params.get("l2"):
            words.append(f"l2={params['l2']:g}")
        return words

    def describe(self, params: Mapping[str, Any]) -> str:
        """A short human name: 'mlp 64-32 dropout=0.2 adam lr=0.001 batch=64 l2=0.001 weights=none'."""
        weights = params.get("class_weights", "auto")
        return " ".join([self.architecture(params), *self.training_words(params),
                         *([] if weights == "auto" else [f"weights={weights}"])])
