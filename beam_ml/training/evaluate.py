"""Evaluation metrics and decision-threshold choice, as pure numpy functions.

    m = binary_metrics(y_true, scores)          # threshold = best F1 on these rows
    m = multiclass_metrics(y_true, probs, classes)
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = ["best_f1_threshold", "binary_metrics", "multiclass_metrics"]


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 (ties → the higher threshold)."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, scores)
    if len(thresholds) == 0:
        return 0.5
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def _at_threshold(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    pred = (scores >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": float(threshold), "accuracy": float((tp + tn) / len(y_true)),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: Optional[float] = None) -> dict:
    """Binary metrics: ROC-AUC, PR-AUC and, at the chosen threshold, TP/FP/TN/FN etc.

    Args:
      y_true: 0/1 labels.
      scores: higher means more likely positive (a probability or an anomaly score).
      threshold: the decision threshold; default: best F1 on these rows.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    both = len(np.unique(y_true)) == 2
    if threshold is None:
        threshold = best_f1_threshold(y_true, scores) if both else 0.5
    out = {
        "rows": int(len(y_true)),
        "positives": int(y_true.sum()),
        "roc_auc": float(skm.roc_auc_score(y_true, scores)) if both else None,
        "pr_auc": float(skm.average_precision_score(y_true, scores)) if both else None,
        "base_rate": float(y_true.mean()) if len(y_true) else 0.0,
    }
    out.update(_at_threshold(y_true, scores, threshold))
    out["at_0.5"] = _at_threshold(y_true, scores, 0.5)
    out["confusion_matrix"] = [[out["tn"], out["fp"]], [out["fn"], out["tp"]]]
    return out


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Multiclass metrics: accuracy, macro ROC-AUC, confusion matrix, per-class P/R/F1."""
    y_true = np.asarray(y_true).astype(int)
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    report = skm.classification_report(y_true, pred, labels=labels, target_names=list(classes),
                                       output_dict=True, zero_division=0)
    present = np.unique(y_true)
    try:
        auc = float(skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels)) \
            if len(present) == len(classes) else None
    except ValueError:
        auc = None
    return {
        "rows": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()),
        "roc_auc_ovr_macro": auc,
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "per_class": {c: {"precision": float(report[c]["precision"]), "recall": float(report[c]["recall"]),
                          "f1": float(report[c]["f1-score"]), "support": int(report[c]["support"])}
                      for c in classes},
        "confusion_matrix": skm.confusion_matrix(y_true, pred, labels=labels).tolist(),
    }
