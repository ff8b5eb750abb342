"""The linear family: logistic regression (binary), softmax regression (multiclass), a linear autoencoder (anomaly).

    params = {"family": "linear", "optimizer": "lbfgs", "l2": 0.0, ...}   # 'linear lbfgs C=1'

The simplest model of every task, and the baseline every search holds (see
`baseline`): with optimizer lbfgs a classifier is fitted exactly, as
scikit-learn's LogisticRegression (L-BFGS to convergence), instead of by epochs
of SGD; the linear autoencoder (a PCA-like projection to a bottleneck and back)
is trained by epochs like the other families.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from beam_ml.training.families.base import KERAS_OPTIMIZERS, TASKS, Family

if TYPE_CHECKING:
    from beam_ml.training.trainer import FitResult

__all__ = ["Linear", "LINEAR", "EXACT_OPTIMIZER", "EXACT_TASKS"]

# The exact fit: 'lbfgs' (L-BFGS on the L2-penalized log loss, scikit-learn's LogisticRegression objective).
EXACT_OPTIMIZER = "lbfgs"
EXACT_TASKS = ("binary", "multiclass")
# The linear autoencoder of a search trains by epochs: a convex model takes (and, in few epochs, needs) a larger step.
MIN_LEARNING_RATE = 0.01


class Linear(Family):
    name = "linear"
    tasks = TASKS
    needs_hidden_units = False

    def optimizers(self, task: Optional[str]) -> Sequence[str]:
        exact = task is None or task in EXACT_TASKS
        return (*KERAS_OPTIMIZERS, EXACT_OPTIMIZER) if exact else KERAS_OPTIMIZERS

    def canonical(self, params: Mapping[str, Any]) -> dict[str, Any]:
        # No hidden layers; dropout on the inputs of a linear model only adds noise.
        return dict(params, family=self.name, hidden_units=[], dropout=0.0)

    def baseline(self, params: Mapping[str, Any], task: str) -> dict[str, Any]:
        """The linear candidate added to a search that has none, from the search's first set.

        Logistic / softmax regression is fitted exactly (lbfgs, l2 0 = scikit-learn's C=1), so the
        candidate IS the usual LogisticRegression baseline on these features, not an approximation
        of it by a few epochs of SGD. The linear autoencoder (anomaly) trains like the others, with
        at least MIN_LEARNING_RATE.
        """
        linear = self.canonical(params)
        if task in EXACT_TASKS:
            return dict(linear, optimizer=EXACT_OPTIMIZER, l2=0.0)
        linear["learning_rate"] = max(float(linear["learning_rate"]), MIN_LEARNING_RATE)
        return linear

    def exact_solver(self, params: Mapping[str, Any]) -> Optional[str]:
        return "L-BFGS" if params.get("optimizer") == EXACT_OPTIMIZER else None

    def build(self, params: Mapping[str, Any], task: str, input_dim: int, num_classes: int):
        from beam_ml.training import models  # Keras (see families.base)

        # The exact fit sets the weights itself; Keras only needs an optimizer to compile the model it
        # scores and exports.
        optimizer = "sgd" if self.exact_solver(params) else params["optimizer"]
        l2 = float(params.get("l2", 0.0))
        if task == "anomaly":
            return models.autoencoder(input_dim, [], 0.0, optimizer, params["learning_rate"], l2,
                                      bottleneck=max(2, input_dim // 4), activation=None, name="linear_autoencoder")
        return models.classifier(task, input_dim, num_classes, [], 0.0, optimizer, params["learning_rate"], l2,
                                 name=f"{task}_linear")

    def fit(self, model, params: Mapping[str, Any], task: str, x: np.ndarray, y: np.ndarray, target: np.ndarray,
            validation: Optional[tuple[np.ndarray, np.ndarray]], weights: Optional[dict[int, float]],
            batch_size: int, seed: int, num_classes: int, numeric_columns: int = 0, **epoch_args: Any) -> "FitResult":
        from beam_ml.training.trainer import FitResult  # Keras + TensorFlow (see families.base)

        if not self.exact_solver(params):
            return super().fit(model, params, task, x, y, target, validation, weights, batch_size, seed, num_classes,
                               **epoch_args)
        hist, solver = _fit_exact(model, task, x, y, validation, weights, float(params.get("l2", 0.0)), num_classes,
                                  numeric_columns=numeric_columns)
        return FitResult(model=model, history=hist, best_epoch=1, batch_size=batch_size, class_weights=weights,
                         solver=solver)

    def architecture(self, params: Mapping[str, Any]) -> str:
        return self.name

    def training_words(self, params: Mapping[str, Any]) -> list[str]:
        if not self.exact_solver(params):
            return super().training_words(params)
        # An exact fit: no step size, batches or epochs.
        return [EXACT_OPTIMIZER + (f" l2={params['l2']:g}" if params.get("l2") else " C=1")]


LINEAR = Linear()


def _standardizer(x: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) that standardise the first `columns` columns of `x` on its own rows; the rest pass (0, 1).

    scikit-learn's StandardScaler: population standard deviation, a constant column keeps scale 1.
    """
    mean = np.zeros(x.shape[1], np.float64)
    scale = np.ones(x.shape[1], np.float64)
    if columns and len(x):
        block = x[:, :columns].astype(np.float64)
        mean[:columns] = block.mean(axis=0)
        std = block.std(axis=0)
        scale[:columns] = np.where(std > 0, std, 1.0)
    return mean, scale


def _fit_exact(model, task: str, x: np.ndarray, y: np.ndarray, validation: Optional[tuple[np.ndarray, np.ndarray]],
               weights: Optional[dict[int, float]], l2: float, num_classes: int,
               numeric_columns: int = 0) -> tuple[dict, dict]:
    """Fits logistic (binary) or softmax (multiclass) regression exactly and loads it into the Keras model.

    scikit-learn's LogisticRegression (L-BFGS to convergence) minimizes
    C·Σ wᵢ·loss(xᵢ) + ½‖W‖², the intercept unpenalized, with wᵢ the class weight
    of row i (the same weights the other candidates train with). Keras' L2(l2)
    on the mean loss is the same objective with C = 1 / (2·n·l2); l2 = 0 means
    C = 1, scikit-learn's default (unpenalized, a separable dataset has no
    finite optimum). The fitted coefficients become the Dense layer's kernel and
    bias, so the exported model computes exactly predict_proba.

    The first `numeric_columns` columns (the z-scored numerics) are standardised
    again on the rows being fitted before the fit, and the coefficients folded
    back through that affine map (the model still takes the transform's
    features). The penalty ½‖W‖² depends on each column's scale, and the
    transform's z-scores use the statistics of the rows it was analyzed on (the
    non-test rows): the final refit on every row, or a fold's trial, would
    otherwise be penalised on slightly different scales than
    StandardScaler + LogisticRegression on the rows fitted (ROC-AUC 0.0001-0.0003
    apart on bench_quality). One-hot columns are left as they are, as scikit-learn's
    one-hot encoder leaves them.

    Returns:
      (history: the final training and validation loss and metrics, one entry each;
       solver: {"name": "lbfgs", "C", "iterations", "converged"}).
    """
    # Deferred: scikit-learn costs ~1 s to import, and only this fit needs it (not planning, not the other families).
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from beam_ml.training.trainer import evaluate  # Keras + TensorFlow (see families.base)

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
        mean, scale = _standardizer(x, numeric_columns)
        clf = LogisticRegression(C=c, max_iter=2000, tol=1e-6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit((x.astype(np.float64) - mean) / scale, y.astype(int), sample_weight=sample_weight)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        iterations = int(np.max(clf.n_iter_))
        # w·(x - mean)/scale + b = (w/scale)·x + (b - (w/scale)·mean): the same model on the unstandardised x.
        coef = clf.coef_ / scale[np.newaxis, :]
        intercept = clf.intercept_ - coef @ mean
        if task == "binary":
            kernel[:, 0] = coef[0]
            bias[0] = intercept[0]
        else:
            if coef.shape[0] == 1:  # two classes present of a multiclass task: one logit
                kernel[:, present[1]] = coef[0]
                bias[present[1]] = intercept[0]
            else:
                kernel[:, present] = coef.T
                bias[present] = intercept
            absent = np.setdiff1d(np.arange(num_classes), present)
            bias[absent] = -30.0  # a class the training rows never show: probability ~0
    dense.set_weights([kernel, bias])

    # The same loss (and metrics) the other candidates log: Keras' compiled ones, unweighted.
    hist = {k: [v] for k, v in evaluate(model, x, y).items()}
    if validation is not None and len(validation[0]):
        hist.update({f"val_{k}": [v] for k, v in evaluate(model, *validation).items()})
    return hist, {"name": "lbfgs", "C": c, "iterations": iterations, "converged": converged}
