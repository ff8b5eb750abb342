"""The exactly fitted linear candidate (optimizer lbfgs) IS scikit-learn's LogisticRegression, in Keras."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from beam_ml.training.families import fit_model
from beam_ml.training.trainer import predict_outputs

PARAMS = {"family": "linear", "hidden_units": [], "dropout": 0.0, "optimizer": "lbfgs", "learning_rate": 1e-3, "batch_size": 0,
          "epochs": 30, "class_weights": "auto", "l2": 0.0}


def _data(seed, n, d, classes, rate=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, classes))
    logits = x @ w + rng.normal(scale=2.0, size=(n, classes))
    if classes == 1:
        y = (logits[:, 0] > np.quantile(logits[:, 0], 1 - rate)).astype(np.int64)
    else:
        y = logits.argmax(axis=1).astype(np.int64)
    return x, y


def test_binary_equals_logistic_regression_c1_and_reports_its_solver():
    x, y = _data(0, 600, 8, 1, rate=0.4)
    xv, yv = _data(1, 200, 8, 1, rate=0.4)
    fitted = fit_model(PARAMS, "binary", x, y, validation=(xv, yv), class_counts=list(np.bincount(y)), seed=1)
    ours = predict_outputs(fitted.model, xv, "binary")
    ref = LogisticRegression(max_iter=5000).fit(x, y).predict_proba(xv)[:, 1]
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert fitted.solver["name"] == "lbfgs" and fitted.solver["converged"] and fitted.solver["C"] == 1.0
    assert fitted.best_epoch == 1 and len(fitted.history["loss"]) == len(fitted.history["val_loss"]) == 1
    assert fitted.class_weights is None  # 40% positives: 'auto' does not weight


def test_imbalanced_binary_uses_the_same_class_weights_as_the_other_candidates_and_l2_maps_to_c():
    x, y = _data(2, 1000, 6, 1, rate=0.1)
    counts = list(np.bincount(y))
    fitted = fit_model(dict(PARAMS, l2=0.01), "binary", x, y, validation=None, class_counts=counts, seed=1)
    w = fitted.class_weights
    assert w is not None and w[1] > w[0]
    c = 1.0 / (2 * len(x) * 0.01)
    assert fitted.solver["C"] == pytest.approx(c)
    ref = LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=np.where(y == 1, w[1], w[0]))
    np.testing.assert_allclose(predict_outputs(fitted.model, x, "binary"), ref.predict_proba(x)[:, 1], atol=2e-4)


def test_softmax_regression_and_a_class_the_training_rows_never_show():
    x, y = _data(3, 900, 10, 4)
    y[y == 3] = 2  # class 3 never appears in training
    fitted = fit_model(PARAMS, "multiclass", x, y, validation=None, class_counts=[1, 1, 1, 1], seed=1)
    probs = predict_outputs(fitted.model, x, "multiclass")
    ref = LogisticRegression(max_iter=5000).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(probs[:, :3], ref, atol=2e-4)
    assert probs[:, 3].max() < 1e-9


def test_one_class_only_is_a_constant_model_not_a_crash():
    x, _ = _data(4, 50, 3, 1, rate=0.5)
    fitted = fit_model(PARAMS, "binary", x, np.ones(50, np.int64), validation=None, class_counts=[0, 50], seed=1)
    assert (predict_outputs(fitted.model, x, "binary") > 0.99).all()


def test_numeric_columns_are_standardised_on_the_rows_fitted_as_standard_scaler_does():
    # The transform z-scores with the statistics of other rows (the non-test split); the fit on these rows must
    # still be StandardScaler + LogisticRegression(C=1) on them, the one-hot columns after them left as they are.
    from sklearn.pipeline import make_pipeline
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    x, y = _data(5, 500, 5, 1, rate=0.45)
    x[:, :3] = x[:, :3] * np.float32([0.7, 1.3, 1.05]) + np.float32([0.2, -0.1, 0.05])  # off-z numerics
    x[:, 3:] = (x[:, 3:] > 0).astype(np.float32)  # two one-hot-like columns
    fitted = fit_model(PARAMS, "binary", x, y, validation=None, class_counts=list(np.bincount(y)), seed=1,
                       numeric_columns=3)
    scaled = ColumnTransformer([("num", StandardScaler(), [0, 1, 2])], remainder="passthrough")
    ref = make_pipeline(scaled, LogisticRegression(max_iter=5000, tol=1e-8)).fit(x, y).predict_proba(x)[:, 1]
    np.testing.assert_allclose(predict_outputs(fitted.model, x, "binary"), ref, atol=2e-4)
    unscaled = LogisticRegression(max_iter=5000, tol=1e-8).fit(x, y).predict_proba(x)[:, 1]
    assert np.abs(unscaled - ref).max() > 1e-3  # the standardisation changes the fit (the test can fail)

    multi_x, multi_y = _data(6, 600, 4, 3)
    multi_x[:, :2] *= np.float32([2.0, 0.5])
    fitted = fit_model(PARAMS, "multiclass", multi_x, multi_y, validation=None, class_counts=[1, 1, 1], seed=1,
                       numeric_columns=2)
    scaled = ColumnTransformer([("num", StandardScaler(), [0, 1])], remainder="passthrough")
    ref = make_pipeline(scaled, LogisticRegression(max_iter=5000, tol=1e-8)).fit(multi_x, multi_y)
    np.testing.assert_allclose(predict_outputs(fitted.model, multi_x, "multiclass"), ref.predict_proba(multi_x),
                               atol=2e-4)
