"""Evaluation: validation scores for model selection, and the test-split evaluation as a Beam combine.

    score = validation_metrics("binary", y_val, p_val)["roc_auc"]        # exact, for one trial

    acc = accumulate(task, labels, scores, threshold, slices)            # per batch, inside a DoFn
    acc = merge([acc1, acc2, ...])                                       # EvaluateCombineFn does this
    report = evaluation_report(acc, task, classes, threshold)            # metrics, curves, slices

The test evaluation is computed with Beam rather than TensorFlow Model
Analysis: TFMA 0.52 installs with this stack, but it expects the label and
features of raw tf.Examples and a Keras or Estimator model, and its Beam graph
adds tens of seconds of construction; beam_ml's export is a plain SavedModel
with raw-feature signatures and the test rows are already RecordBatches in the
pipeline. So each batch of test rows is scored by the exported model (as
serving will), reduced to per-slice histograms of scores by class (1,000 bins
on [0, 1]) plus exact counts at the decision threshold, and those are summed
by a CombineFn: the same approach TFMA takes for its curves (fixed buckets),
and it scales to any test size. ROC/PR curves and their areas come from the
histograms (ties within a bin count as ties, so an area differs from sklearn's
by at most the bin width); accuracy, precision, recall, F1 and the confusion
matrix at the threshold are exact.

Anomaly scores (reconstruction errors, unbounded) are binned after the
monotone map s / (s + threshold), which keeps ranks and puts the threshold at
0.5; calibration is not defined for them.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
from sklearn import metrics as skm

from beam_ml.spec import DatasetSpec

__all__ = ["BINS", "validation_metrics", "bootstrap_se", "best_f1_threshold", "recall_at_precision", "accumulate",
           "merge", "EvaluateCombineFn", "evaluation_report", "binary_from_hist", "OVERALL", "THRESHOLD_TABLE"]

BINS = 1000
CALIBRATION_BINS = 10
OVERALL = "(all)"
THRESHOLD_TABLE = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MAX_SLICE_VALUES = 20


# --------------------------------------------------------------- validation (exact)

def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 (ties → the higher threshold); 0.5 without both classes."""
    if len(np.unique(y_true)) < 2:
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y_true, scores)
    if len(thresholds) == 0:
        return 0.5
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def recall_at_precision(y_true: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest recall at any threshold whose precision is at least `target` (0 if none)."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    precision, recall, _ = skm.precision_recall_curve(y_true, scores)
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def validation_metrics(task: str, y_true: np.ndarray, out: np.ndarray, target_precision: float = 0.9) -> dict:
    """Exact selection metrics on one validation fold.

    Args:
      task: binary, anomaly (out: a score per row, higher = positive) or
        multiclass (out: [rows, classes] probabilities).
      y_true: class indices.
      out: the model's outputs.
      target_precision: the precision recall_at_precision is read at.

    Returns:
      binary/anomaly: roc_auc, pr_auc, f1 (best over thresholds), accuracy
      (at the best-F1 threshold), recall_at_precision, threshold. multiclass:
      accuracy, macro_f1, roc_auc (one-vs-rest macro) where defined. A metric
      the fold cannot define (one class absent) is NaN.
    """
    y_true = np.asarray(y_true).astype(int)
    nan = float("nan")
    if task == "multiclass":
        probs = np.asarray(out)
        pred = probs.argmax(axis=1)
        labels = list(range(probs.shape[1]))
        try:
            auc = float(skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
        except ValueError:
            auc = nan
        return {"accuracy": float((pred == y_true).mean()) if len(y_true) else nan,
                "macro_f1": float(skm.f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
                "roc_auc": auc, "f1": nan, "pr_auc": nan, "recall_at_precision": nan}
    scores = np.asarray(out, dtype=np.float64).reshape(-1)
    both = len(np.unique(y_true)) == 2
    threshold = best_f1_threshold(y_true, scores)
    pred = (scores >= threshold).astype(int)
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, scores)) if both else nan,
        "pr_auc": float(skm.average_precision_score(y_true, scores)) if both else nan,
        "f1": float(skm.f1_score(y_true, pred, zero_division=0)) if both else nan,
        "accuracy": float((pred == y_true).mean()) if len(y_true) else nan,
        "recall_at_precision": recall_at_precision(y_true, scores, target_precision),
        "threshold": threshold,
    }


def bootstrap_se(task: str, metric: str, y_true: np.ndarray, out: np.ndarray, target_precision: float = 0.9,
                 resamples: int = 100, seed: int = 0, max_rows: int = 20000) -> Optional[float]:
    """The bootstrap standard error of one validation metric on one fold (rows resampled with replacement).

    With one validation fold (no --tune) this is the noise the one-standard-error rule
    compares a difference of candidates with. Resamples where the metric is undefined (one
    class drawn) are skipped; folds above `max_rows` rows are first subsampled to it, and
    the error is scaled back by √(max_rows / rows). None when fewer than 10 resamples define it.
    """
    y_true = np.asarray(y_true).astype(int)
    out = np.asarray(out)
    n = len(y_true)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    scale = 1.0
    if n > max_rows:
        keep = rng.choice(n, max_rows, replace=False)
        y_true, out, scale, n = y_true[keep], out[keep], float(np.sqrt(max_rows / n)), max_rows

    def value(y, o):
        if task == "multiclass" and metric == "accuracy":
            return float((o.argmax(axis=1) == y).mean())
        if task != "multiclass" and metric in ("roc_auc", "pr_auc"):
            if len(np.unique(y)) < 2:
                return float("nan")
            return float((skm.roc_auc_score if metric == "roc_auc" else skm.average_precision_score)(y, o))
        return validation_metrics(task, y, o, target_precision).get(metric)

    values = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        v = value(y_true[idx], out[idx])
        if v is not None and not np.isnan(v):
            values.append(v)
    if len(values) < 10:
        return None
    return float(np.std(values, ddof=1) * scale)


# --------------------------------------------------------------- test (histograms, Beam)

def _bin_of(u: np.ndarray, bins: int) -> np.ndarray:
    return np.clip((np.nan_to_num(u, nan=0.0) * bins).astype(np.int64), 0, bins - 1)


def score_unit(task: str, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores on [0, 1] for binning: probabilities as they are; anomaly errors by s / (s + threshold)."""
    s = np.asarray(scores, dtype=np.float64)
    if task == "anomaly":
        t = max(float(threshold), 1e-12)
        s = np.maximum(s, 0.0)
        return s / (s + t)
    return s


def _one_slice(task: str, labels: np.ndarray, out: np.ndarray, threshold: float, num_classes: int) -> dict:
    acc: dict[str, Any] = {"rows": np.array([len(labels)], np.int64)}
    if task == "multiclass":
        probs = np.asarray(out)
        pred = probs.argmax(axis=1)
        acc["confusion"] = np.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(
            num_classes, num_classes).astype(np.int64)
        # One-vs-rest histograms of each class's probability (macro ROC-AUC), 100 bins each.
        hist = np.zeros((num_classes, 2, 100), np.int64)
        for c in range(num_classes):
            b = _bin_of(probs[:, c], 100)
            hist[c, 1] = np.bincount(b[labels == c], minlength=100)
            hist[c, 0] = np.bincount(b[labels != c], minlength=100)
        acc["ovr_hist"] = hist
        top = probs.max(axis=1)
        cb = _bin_of(top, CALIBRATION_BINS)
        acc["cal"] = np.stack([np.bincount(cb, minlength=CALIBRATION_BINS).astype(np.float64),
                               np.bincount(cb, weights=top, minlength=CALIBRATION_BINS),
                               np.bincount(cb, weights=(pred == labels).astype(np.float64),
                                           minlength=CALIBRATION_BINS)])
        return acc
    scores = np.asarray(out, dtype=np.float64).reshape(-1)
    u = score_unit(task, scores, threshold)
    b = _bin_of(u, BINS)
    pos = labels == 1
    acc["hist"] = np.stack([np.bincount(b[~pos], minlength=BINS), np.bincount(b[pos], minlength=BINS)]).astype(
        np.int64)
    pred = scores >= threshold
    acc["at_threshold"] = np.array([np.sum(pred & pos), np.sum(pred & ~pos), np.sum(~pred & ~pos),
                                    np.sum(~pred & pos)], np.int64)  # tp, fp, tn, fn
    if task == "binary":
        cb = _bin_of(scores, CALIBRATION_BINS)
        acc["cal"] = np.stack([np.bincount(cb, minlength=CALIBRATION_BINS).astype(np.float64),
                               np.bincount(cb, weights=scores, minlength=CALIBRATION_BINS),
                               np.bincount(cb, weights=pos.astype(np.float64), minlength=CALIBRATION_BINS)])
    return acc


def accumulate(task: str, labels: np.ndarray, out: np.ndarray, threshold: float, num_classes: int,
               slices: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """The evaluation accumulator of one batch: {slice key: partial sums}.

    Args:
      task: binary, anomaly or multiclass.
      labels: class indices.
      out: scores [rows] (binary, anomaly) or probabilities [rows, classes].
      threshold: the decision threshold (binary, anomaly).
      num_classes: the number of label classes.
      slices: feature name → its raw value per row (strings); each value is a
        slice "feature=value" besides the overall one.
    """
    labels = np.asarray(labels).astype(np.int64)
    out = np.asarray(out)
    acc = {OVERALL: _one_slice(task, labels, out, threshold, num_classes)}
    for feature, values in (slices or {}).items():
        values = np.asarray(values, dtype=object)
        for v in np.unique(values):
            mask = values == v
            acc[f"{feature}={v}"] = _one_slice(task, labels[mask], out[mask], threshold, num_classes)
    return acc


def merge(accumulators) -> dict:
    """Sums accumulators slice by slice (empty input → {})."""
    merged: dict[str, dict] = {}
    for acc in accumulators:
        for key, parts in acc.items():
            into = merged.setdefault(key, {})
            for name, arr in parts.items():
                into[name] = into[name] + arr if name in into else np.array(arr, copy=True)
    return merged


class EvaluateCombineFn(beam.CombineFn):
    """Sums per-batch evaluation accumulators (see `accumulate`) into one."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, element):
        return merge([accumulator, element])

    def merge_accumulators(self, accumulators):
        return merge(accumulators)

    def extract_output(self, accumulator):
        return accumulator


def _safe_div(a, b):
    return float(a) / float(b) if b else 0.0


def binary_from_hist(hist: np.ndarray) -> dict:
    """ROC and PR curves and their areas from [negatives, positives] score histograms over [0, 1] bins."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    # Thresholds from the top bin down: predicted positive = bins >= i.
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum(neg[::-1])
    edges = np.arange(len(pos), 0, -1) / len(pos) - 1.0 / len(pos)  # the lower edge of each threshold bin
    out: dict[str, Any] = {"positives": int(n_pos), "negatives": int(n_neg)}
    if n_pos == 0 or n_neg == 0:
        out.update(roc_auc=None, pr_auc=None, roc_curve=None, pr_curve=None)
        return out
    tpr = np.concatenate([[0.0], tp / n_pos])
    fpr = np.concatenate([[0.0], fp / n_neg])
    out["roc_auc"] = float(np.trapezoid(tpr, fpr))
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = tp / n_pos
    out["pr_auc"] = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))  # average precision
    keep = np.concatenate([[True], np.diff(fp + tp) > 0])  # one point per non-empty bin
    out["roc_curve"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
    out["pr_curve"] = {"recall": recall[keep].round(5).tolist(), "precision": precision[keep].round(5).tolist(),
                       "threshold": edges[keep].round(5).tolist()}
    return out


def _at_counts(tp, fp, tn, fn) -> dict:
    tp, fp, tn, fn = int(tp), int(fp), int(tn), int(fn)
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    return {"accuracy": _safe_div(tp + tn, tp + fp + tn + fn), "precision": precision, "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "flagged": tp + fp}


def _threshold_table(hist: np.ndarray, task: str, threshold: float) -> list[dict]:
    """Precision/recall/F1 at fixed thresholds (binary; for anomaly, multiples of the chosen one)."""
    neg, pos = hist[0], hist[1]
    rows = []
    points = THRESHOLD_TABLE if task == "binary" else (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    for t in points:
        raw = t if task == "binary" else t * threshold
        u = score_unit(task, np.array([raw]), threshold)[0]
        i = int(round(u * len(pos)))  # bins >= i are predicted positive
        tp, fp = pos[i:].sum(), neg[i:].sum()
        row = _at_counts(tp, fp, neg[:i].sum(), pos[:i].sum())
        row["threshold"] = float(raw)
        rows.append(row)
    return rows


def _calibration(cal: np.ndarray) -> dict:
    count, sum_pred, sum_true = cal
    nonempty = count > 0
    return {"mean_predicted": (sum_pred[nonempty] / count[nonempty]).round(5).tolist(),
            "fraction_positive": (sum_true[nonempty] / count[nonempty]).round(5).tolist(),
            "count": count[nonempty].astype(int).tolist(),
            # Expected calibration error: the count-weighted gap between the two.
            "ece": float(np.sum(np.abs(sum_pred - sum_true)) / max(count.sum(), 1))}


def _binary_slice(parts: dict, task: str, threshold: float, curves: bool) -> dict:
    tp, fp, tn, fn = parts["at_threshold"]
    m = {"rows": int(parts["rows"][0])}
    m.update(binary_from_hist(parts["hist"]))
    m["base_rate"] = _safe_div(m["positives"], m["rows"])
    m.update(_at_counts(tp, fp, tn, fn))
    m["threshold"] = float(threshold)
    if not curves:
        m.pop("roc_curve"), m.pop("pr_curve")
    return m


def _multiclass_slice(parts: dict, classes: Sequence[str]) -> dict:
    cm = parts["confusion"]
    n = int(cm.sum())
    m: dict[str, Any] = {"rows": n, "accuracy": _safe_div(np.trace(cm), n)}
    per_class, aucs = {}, []
    for i, c in enumerate(classes):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        p, r = _safe_div(tp, predicted), _safe_div(tp, support)
        per_class[c] = {"precision": p, "recall": r, "f1": _safe_div(2 * p * r, p + r), "support": int(support)}
        auc = binary_from_hist(parts["ovr_hist"][i])["roc_auc"]
        if auc is not None:
            aucs.append(auc)
    m["macro_f1"] = float(np.mean([v["f1"] for v in per_class.values()])) if per_class else 0.0
    m["roc_auc_ovr_macro"] = float(np.mean(aucs)) if len(aucs) == len(classes) else None
    m["per_class"] = per_class
    m["confusion_matrix"] = cm.astype(int).tolist()
    return m


def evaluation_report(acc: Mapping[str, dict], task: str, classes: Sequence[str], threshold: float) -> dict:
    """Metrics, curves, calibration, the threshold table and slices from a merged accumulator.

    Returns:
      The overall metrics at top level (rows, roc_auc, pr_auc, accuracy,
      precision, recall, f1, tp/fp/tn/fn, confusion_matrix, threshold; for
      multiclass accuracy, macro_f1, roc_auc_ovr_macro, per_class), plus
      roc_curve, pr_curve, calibration, threshold_table (binary/anomaly), and
      slices: {feature: [{value, rows, metrics...}, ...]} (the 20 largest
      values per feature; for multiclass also 'label' from the confusion matrix).
    """
    overall = acc.get(OVERALL)
    if overall is None:
        return {"rows": 0}
    if task == "multiclass":
        m = _multiclass_slice(overall, classes)
        m["calibration"] = _calibration(overall["cal"])
        m["slices"] = {"label": [{"value": c, "rows": v["support"], "accuracy": v["recall"], **v}
                                 for c, v in m["per_class"].items()]}
    else:
        m = _binary_slice(overall, task, threshold, curves=True)
        m["confusion_matrix"] = [[m["tn"], m["fp"]], [m["fn"], m["tp"]]]
        at_half = overall["hist"]
        if task == "binary":
            i = BINS // 2
            m["at_0.5"] = _at_counts(at_half[1][i:].sum(), at_half[0][i:].sum(), at_half[0][:i].sum(),
                                     at_half[1][:i].sum())
            m["calibration"] = _calibration(overall["cal"])
        m["threshold_table"] = _threshold_table(overall["hist"], task, threshold)
        m["slices"] = {}
    by_feature: dict[str, list] = {}
    for key, parts in acc.items():
        if key == OVERALL:
            continue
        feature, _, value = key.partition("=")
        row = _multiclass_slice(parts, classes) if task == "multiclass" else \
            _binary_slice(parts, task, threshold, curves=False)
        if task == "multiclass":
            row = {k: row[k] for k in ("rows", "accuracy", "macro_f1")}
        by_feature.setdefault(feature, []).append({"value": value, **row})
    for feature, rows in sorted(by_feature.items()):
        rows.sort(key=lambda r: (-r["rows"], r["value"]))
        m["slices"][feature] = rows[:MAX_SLICE_VALUES]
    return m


_MODELS: dict = {}


def _load_signature(version_dir: str):
    if version_dir not in _MODELS:
        import tensorflow as tf

        _MODELS.clear()  # one exported model at a time per process
        _MODELS[version_dir] = tf.saved_model.load(version_dir)
    return _MODELS[version_dir].signatures["serve_dict"]


class ScoreTestDoFn(beam.DoFn):
    """Scores raw test RecordBatches with the exported model (as serving does) into evaluation accumulators.

    The side input `final` names the exported version and its threshold; it
    exists only once the final model is exported, so test rows are touched once,
    at the end.
    """

    def __init__(self, spec_dict: dict):
        self._spec = spec_dict

    def process(self, batch, final: dict):
        import tensorflow as tf

        spec = DatasetSpec.from_dict(self._spec)
        fn = _load_signature(final["version_dir"])
        kwargs, slices = {}, {}
        from beam_ml.export import signature_arg_name

        for name in spec.feature_columns:
            values = batch.column(name).flatten()
            if name in spec.categorical_columns:
                raw = values.to_numpy(zero_copy_only=False)
                kwargs[signature_arg_name(name)] = tf.constant(raw.astype(object), dtype=tf.string)
                slices[name] = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                                         for v in raw], dtype=object)
            else:
                kwargs[signature_arg_name(name)] = tf.constant(
                    values.to_numpy(zero_copy_only=False).astype(np.float32))
        out = {k: v.numpy() for k, v in fn(**kwargs).items()}
        classes = [c.encode("utf-8") for c in spec.label_classes]
        raw_labels = batch.column(spec.label).flatten().to_pylist()
        labels = np.array([classes.index(v) for v in raw_labels], dtype=np.int64)
        scores = out["probabilities"] if spec.task == "multiclass" else out["score"]
        yield accumulate(spec.task, labels, scores, final["threshold"], spec.num_classes, slices)
