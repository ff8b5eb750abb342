"""Test-split evaluation from histograms against exact sklearn values; validation metrics; fold assignment."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from beam_ml import evaluation
from beam_ml.preprocess import assign_folds, fold_boundaries


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(20, 3000), st.floats(0.02, 0.6))
def test_histogram_areas_match_sklearn_within_a_bin(seed, n, rate):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    if y.min() == y.max():
        y[0], y[1] = 0, 1
    scores = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    acc = evaluation.accumulate("binary", y, scores, 0.5, 2)
    m = evaluation.evaluation_report(acc, "binary", ["no", "yes"], 0.5)
    # A positive and a negative in the same bin count as a tie (half a pair): that is the only difference.
    bins = np.clip((scores * evaluation.BINS).astype(int), 0, evaluation.BINS - 1)
    shared = sum(int(((bins[y == 1] == b).sum()) * ((bins[y == 0] == b).sum())) for b in np.unique(bins))
    bound = 0.5 * shared / (y.sum() * (1 - y).sum())
    assert abs(m["roc_auc"] - skm.roc_auc_score(y, scores)) <= bound + 1e-9
    # Average precision over the histogram is sklearn's on the binned scores, exactly (on the raw
    # scores it differs by up to a few hundredths on small samples, where one bin holds several rows).
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, bins), abs=1e-9)
    # Counts at the decision threshold are exact.
    pred = scores >= 0.5
    assert (m["tp"], m["fp"]) == (int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()))
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["rows"] == n and m["positives"] == int(y.sum())


def test_merging_batches_equals_one_batch_and_slices_partition_the_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    s = rng.random(1000)
    color = np.array(["red", "blue", "green", "blue"] * 250, dtype=object)
    whole = evaluation.accumulate("binary", y, s, 0.4, 2, {"color": color})
    parts = [evaluation.accumulate("binary", y[i:i + 300], s[i:i + 300], 0.4, 2, {"color": color[i:i + 300]})
             for i in range(0, 1000, 300)]
    fn = evaluation.EvaluateCombineFn()
    merged = fn.merge_accumulators([fn.add_input(fn.create_accumulator(), p) for p in parts])
    a = evaluation.evaluation_report(whole, "binary", ["0", "1"], 0.4)
    b = evaluation.evaluation_report(merged, "binary", ["0", "1"], 0.4)
    assert a["roc_auc"] == b["roc_auc"] and a["confusion_matrix"] == b["confusion_matrix"]
    rows = {r["value"]: r["rows"] for r in b["slices"]["color"]}
    assert rows == {"blue": 500, "red": 250, "green": 250}
    assert sum(r["tp"] for r in b["slices"]["color"]) == b["tp"]


def test_threshold_table_calibration_and_at_half():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    s = np.array([0.05, 0.15, 0.45, 0.55, 0.65, 0.95, 0.35, 0.75])
    m = evaluation.evaluation_report(evaluation.accumulate("binary", y, s, 0.5, 2), "binary", ["0", "1"], 0.5)
    row = next(r for r in m["threshold_table"] if r["threshold"] == 0.5)
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 1)
    assert m["at_0.5"]["tp"] == 3
    cal = m["calibration"]
    assert sum(cal["count"]) == 8 and all(0 <= f <= 1 for f in cal["fraction_positive"])
    assert m["threshold_table"][0]["recall"] == 1.0  # threshold 0.05 flags everything


def test_multiclass_confusion_per_class_and_label_slices():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.8 + 0.2 / 3
    m = evaluation.evaluation_report(evaluation.accumulate("multiclass", y, probs, 0.5, 3), "multiclass",
                                     ["a", "b", "c"], 0.5)
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"]["recall"] == 1.0 and m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert [r["value"] for r in m["slices"]["label"]] == ["a", "b", "c"]


def test_anomaly_scores_are_binned_by_rank_and_the_threshold_is_exact():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.1).astype(int)
    s = rng.exponential(1.0, 2000) * (1 + 3 * y)  # unbounded reconstruction errors
    m = evaluation.evaluation_report(evaluation.accumulate("anomaly", y, s, 2.0, 2), "anomaly", ["0", "1"], 2.0)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=5e-3)
    assert m["tp"] == int(((s >= 2.0) & (y == 1)).sum())
    assert "calibration" not in m


def test_validation_metrics_and_best_threshold():
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    m = evaluation.validation_metrics("binary", y, s, target_precision=0.99)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["threshold"] == pytest.approx(0.35) and m["f1"] == pytest.approx(6 / 7)
    assert m["recall_at_precision"] == pytest.approx(2 / 3)
    one_class = evaluation.validation_metrics("binary", np.zeros(3), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(one_class["roc_auc"])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 400), min_size=1, max_size=4), st.integers(2, 10))
def test_folds_from_exact_per_class_quantiles_are_balanced(seed, class_sizes, k):
    """Each class's rows spread over the folds with sizes differing by at most one (the split's promise)."""
    from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(class_sizes)])
    hashes = rng.random(len(labels))
    combine = ApproximateQuantilesCombineFn.create(num_quantiles=k + 1, epsilon=1e-4, input_batched=True)
    boundaries = {}
    for c in range(len(class_sizes)):
        values = hashes[labels == c]
        if len(values):
            acc = combine.add_input(combine.create_accumulator(), list(values))
            boundaries[c] = fold_boundaries(combine.extract_output(acc), k)
    folds = assign_folds(hashes, labels, boundaries)
    for c, n in enumerate(class_sizes):
        sizes = np.bincount(folds[labels == c], minlength=k)
        assert sizes.sum() == n and len(sizes) == k
        if n >= k:
            assert sizes.max() - sizes.min() <= 1, (n, sizes)
        else:
            assert sizes.max() <= 1


@pytest.mark.parametrize("column,arg", [("class", "class_"), ("from", "from_"), ("2nd col", "f_2nd_col"),
                                        ("age", "age"), ("a-b", "a_b")])
def test_serving_argument_names_are_identifiers_and_never_keywords(column, arg):
    from beam_ml.export import signature_arg_name

    assert signature_arg_name(column) == arg and arg.isidentifier()


def test_bootstrap_standard_error_of_a_validation_metric():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.4).astype(int)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    auc = skm.roc_auc_score(y, scores)
    se = evaluation.bootstrap_se("binary", "roc_auc", y, scores, resamples=200, seed=1)
    # Hanley & McNeil (1982): the analytic standard error of an ROC-AUC with these class sizes.
    n1, n0 = y.sum(), len(y) - y.sum()
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    hanley = np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc ** 2) + (n0 - 1) * (q2 - auc ** 2)) / (n1 * n0))
    assert 0.7 * hanley < se < 1.3 * hanley
    assert se == evaluation.bootstrap_se("binary", "roc_auc", y, scores, resamples=200, seed=1)  # seeded
    # Accuracy of a multiclass fold: close to the binomial sqrt(p(1-p)/n).
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet([1, 1, 1], 500)
    probs[np.arange(500), labels] += rng.random(500) < 0.7
    acc = float((probs.argmax(axis=1) == labels).mean())
    se = evaluation.bootstrap_se("multiclass", "accuracy", labels, probs, resamples=200)
    assert 0.7 * np.sqrt(acc * (1 - acc) / 500) < se < 1.3 * np.sqrt(acc * (1 - acc) / 500)
    # Undefined on a fold of one class; big folds are subsampled and scaled back.
    assert evaluation.bootstrap_se("binary", "roc_auc", np.zeros(50, int), rng.random(50)) is None
    big = evaluation.bootstrap_se("binary", "roc_auc", y, scores, resamples=200, seed=1, max_rows=100)
    assert 0.6 * hanley < big < 1.4 * hanley
