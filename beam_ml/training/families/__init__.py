"""Model families: the registry, and what callers ask of a parameter set's family.

    params = resolve({"hidden_units": [], "optimizer": "lbfgs", ...}, task="binary")   # family: linear
    model = build_model(params, "binary", input_dim=12, num_classes=2)
    fitted = fit_model(params, "binary", x, y, validation=(xv, yv), class_counts=[900, 100], seed=7)
    of(params).describe(params)                                                          # 'linear lbfgs C=1'

A parameter set names its family (`family`: linear, mlp, autoencoder). Sets
written before the field existed (flags, --param_grid files, old metadata) say
it with their layers instead: `hidden_units: []` is linear, hidden layers are
an mlp (an autoencoder for anomaly); `family_name` is the one place that reads
them. A new family is one module (a `Family` subclass) plus one entry in
FAMILIES.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from beam_ml.errors import UserError
from beam_ml.training.families.autoencoder import AUTOENCODER
from beam_ml.training.families.base import Family
from beam_ml.training.families.linear import LINEAR
from beam_ml.training.families.mlp import MLP

if TYPE_CHECKING:
    from beam_ml.training.trainer import FitResult

__all__ = ["Family", "FAMILIES", "BASELINE", "OPTIMIZERS", "get", "of", "family_name", "resolve", "check_optimizer",
           "build_model", "fit_model"]

FAMILIES: dict[str, Family] = {f.name: f for f in (LINEAR, MLP, AUTOENCODER)}
# The family of the candidate every search holds (the selection rule's simplest model).
BASELINE = LINEAR
OPTIMIZERS: tuple[str, ...] = tuple(dict.fromkeys(o for f in FAMILIES.values() for o in f.optimizers(None)))


def get(name: str) -> Family:
    """The family called `name`; raises UserError naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"family {name!r}: expected one of {', '.join(FAMILIES)}") from None


def family_name(params: Mapping[str, Any], task: Optional[str] = None) -> str:
    """The family a set names, or, for sets without `family` (the old spelling), the one its layers imply."""
    if params.get("family"):
        return str(params["family"])
    if not params.get("hidden_units"):
        return LINEAR.name
    return AUTOENCODER.name if task == "anomaly" else MLP.name


def of(params: Mapping[str, Any], task: Optional[str] = None) -> Family:
    """The family of a parameter set."""
    return get(family_name(params, task))


def check_optimizer(params: Mapping[str, Any], task: Optional[str] = None, where: str = "") -> None:
    """Raises UserError when the set's family cannot fit with its optimizer (for `task`, or for any task if None)."""
    family = of(params, task)
    optimizer = params.get("optimizer")
    if optimizer is None or optimizer in family.optimizers(task):
        return
    who = " or ".join(f"the {f.name} model of a {' or '.join(t for t in f.tasks if optimizer in f.optimizers(t))} task"
                      for f in FAMILIES.values() if optimizer in f.optimizers(None))
    what = f"optimizer {optimizer} (--optimizer / --param_grid)" if not where else f"{where}: optimizer {optimizer}"
    raise UserError(f"{what} fits only {who}, not {family.describe(params)!r}" + (f" ({task})" if task else ""))


def resolve(params: Mapping[str, Any], task: str, where: str = "--param_grid") -> dict[str, Any]:
    """The set with its family named and checked for `task`, in the family's canonical form.

    Raises:
      UserError: the family does not serve `task`, lacks what it needs, or cannot use the optimizer.
    """
    family = of(params, task)
    family.check(params, task, where)
    check_optimizer(params, task)
    return family.canonical(params)


def build_model(params: Mapping[str, Any], task: str, input_dim: int, num_classes: int):
    """The compiled, untrained Keras model of a parameter set."""
    return of(params, task).build(params, task, input_dim, num_classes)


def fit_model(params: Mapping[str, Any], task: str, x: np.ndarray, y: np.ndarray,
              validation: Optional[tuple[np.ndarray, np.ndarray]], class_counts: Sequence[int], seed: int,
              patience: int = 5, verbose: int = 0, backup_dir: Optional[str] = None,
              lr_schedule: Optional[Sequence[float]] = None, extra_callbacks: Sequence[Any] = (),
              numeric_columns: int = 0) -> "FitResult":
    """Builds the model of `params` and fits it, as its family does.

    Args:
      params: a parameter set (beam_ml.tuning.PARAM_KEYS).
      task: binary, multiclass or anomaly (an anomaly model fits on normal rows: label 0).
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
      numeric_columns: how many leading columns of x are the transform's z-scored numerics
        (len(spec.numeric_columns)); the exact linear fit standardises them on these rows, as
        StandardScaler + LogisticRegression would.
    """
    import tf_keras as keras  # Keras + TensorFlow: deferred, see families.base

    from beam_ml.training.trainer import auto_batch_size, class_weights_from_counts

    keras.utils.set_random_seed(seed)
    family = of(params, task)
    if task == "anomaly":  # the model learns what normal rows look like
        x, y = x[y == 0], y[y == 0]
        if validation is not None:
            xv, yv = validation
            validation = (xv[yv == 0], xv[yv == 0])
        target, weights = x, None
    else:
        target = y
        weights = class_weights_from_counts(class_counts, params.get("class_weights", "auto"))
    batch_size = int(params.get("batch_size") or auto_batch_size(len(x)))
    num_classes = max(2, len(class_counts))
    model = family.build(params, task, x.shape[1], num_classes)
    return family.fit(model, params, task, x, y, target, validation, weights, batch_size, seed, num_classes,
                      numeric_columns=numeric_columns, patience=patience, verbose=verbose, backup_dir=backup_dir, lr_schedule=lr_schedule,
                      extra_callbacks=extra_callbacks)
