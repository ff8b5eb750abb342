"""Training statistics: what "normal" is, per feature and for the scores, stored with the model.

    stats = training_statistics_from_columns(spec, {"Amount": [...], "dept": [...]}, scores, positive_rate)
    write_training_statistics(version_dir, stats)       # <version>/assets.extra/monitoring.json
    stats = read_training_statistics(version_dir)        # local or gs://; None for a model without them

Numeric features: a histogram over bins whose edges are training quantiles
(`NUMERIC_BINS` bins: the first open below, the last open above), the rows'
missing rate (null, empty or NaN) and the training range [min, max]; a
serving value outside it (or +-inf) counts as out of range. Categorical
features: the frequencies of the `TOP_VALUES` most frequent values, of the
rest ("other") and the missing rate. Scores: a histogram of the test split's
scores over `SCORE_BINS` equal bins of [0, 1] (`beam_ml.evaluation.score_unit`:
probabilities as they are, anomaly errors squashed) and the predicted-positive
rate at the model's threshold.

Everything here is pure (numpy); `beam_ml.monitoring.beam` computes the same
from a Beam pipeline with mergeable accumulators.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from beam_ml import fs

__all__ = ["NUMERIC_BINS", "TOP_VALUES", "SCORE_BINS", "STATISTICS_FILE", "NumericStats", "CategoricalStats",
           "ScoreStats", "TrainingStatistics", "bin_edges", "numeric_counts", "numeric_values", "category_values",
           "category_counts", "prune_counts", "score_histogram", "training_statistics_from_columns",
           "write_training_statistics", "read_training_statistics"]

NUMERIC_BINS = 20
TOP_VALUES = 20
SCORE_BINS = 20
# Categorical value counts kept by an accumulator before pruning to the largest (bounded memory).
MAX_TRACKED_VALUES = 2000
STATISTICS_FILE = "assets.extra/monitoring.json"
OTHER = "__other__"


@dataclasses.dataclass
class NumericStats:
    """edges: inner bin edges (len = bins - 1, ascending, distinct); counts per bin; rows incl. missing."""

    edges: list
    counts: list
    missing: int
    rows: int
    min: Optional[float]
    max: Optional[float]

    kind = "numeric"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "edges": list(self.edges), "counts": list(self.counts), "missing": self.missing,
                "rows": self.rows, "min": self.min, "max": self.max}


@dataclasses.dataclass
class CategoricalStats:
    """counts: value -> rows for the top values; other: rows of every other value; rows incl. missing."""

    counts: dict
    other: int
    missing: int
    rows: int

    kind = "categorical"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "counts": dict(self.counts), "other": self.other, "missing": self.missing,
                "rows": self.rows}


@dataclasses.dataclass
class ScoreStats:
    """The test split's score histogram over SCORE_BINS equal bins of [0, 1] and its predicted-positive rate."""

    counts: list
    positive_rate: Optional[float]
    threshold: float
    task: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainingStatistics:
    features: dict  # name -> NumericStats | CategoricalStats
    scores: Optional[ScoreStats]
    rows: int

    def to_dict(self) -> dict:
        return {"format": 1, "rows": self.rows, "features": {k: v.to_dict() for k, v in self.features.items()},
                "scores": self.scores.to_dict() if self.scores else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingStatistics":
        features = {}
        for name, f in d["features"].items():
            if f["kind"] == "numeric":
                features[name] = NumericStats(edges=[float(e) for e in f["edges"]], counts=[int(c) for c in f["counts"]],
                                              missing=int(f["missing"]), rows=int(f["rows"]), min=f.get("min"),
                                              max=f.get("max"))
            else:
                features[name] = CategoricalStats(counts={str(k): int(v) for k, v in f["counts"].items()},
                                                  other=int(f["other"]), missing=int(f["missing"]), rows=int(f["rows"]))
        s = d.get("scores")
        scores = ScoreStats(counts=[int(c) for c in s["counts"]], positive_rate=s.get("positive_rate"),
                            threshold=float(s["threshold"]), task=s["task"]) if s else None
        return cls(features=features, scores=scores, rows=int(d.get("rows", 0)))


# ----------------------------------------------------------------------------- pure pieces

def bin_edges(quantiles: Sequence[float]) -> list[float]:
    """Inner bin edges from [min, q1, ..., max] quantiles: the distinct finite inner ones, ascending."""
    q = [float(x) for x in quantiles if x is not None and math.isfinite(float(x))]
    if len(q) < 3:
        return []
    return sorted(set(q[1:-1]))


def numeric_values(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """(float64 array of the present values, number missing) from raw values (numbers, numeric strings, None).

    NaN, None, "" and text that is not a number count as missing; inf stays (out of range).
    """
    out, missing = [], 0
    for v in values:
        if v is None or isinstance(v, bool):
            missing += 1
            continue
        try:
            x = float(v)
        except (TypeError, ValueError, OverflowError):
            missing += 1
            continue
        if x != x:
            missing += 1
        else:
            out.append(x)
    return np.asarray(out, dtype=np.float64), missing


def numeric_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin (len(edges) + 1 bins; a value equal to an edge falls in the bin above it)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def category_values(values: Iterable[Any]) -> tuple[list[str], int]:
    """(present values as text, number missing): None, "" and NaN are missing."""
    out, missing = [], 0
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if v is None or v == "" or (isinstance(v, float) and v != v):
            missing += 1
        else:
            out.append(v if isinstance(v, str) else str(v))
    return out, missing


def category_counts(values: Sequence[str]) -> dict[str, int]:
    uniq, n = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True) if len(values) else ([], [])
    return {str(u): int(k) for u, k in zip(uniq, n)}


def prune_counts(counts: dict[str, int], keep: int) -> tuple[dict[str, int], int]:
    """The `keep` largest counts (ties by value, for determinism) and the sum of the rest."""
    if len(counts) <= keep:
        return dict(counts), 0
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:keep]), sum(v for _, v in ranked[keep:])


def score_histogram(unit_scores: np.ndarray, bins: int = SCORE_BINS) -> np.ndarray:
    """Counts of scores on [0, 1] over `bins` equal bins (NaN ignored, values clipped into [0, 1])."""
    u = np.asarray(unit_scores, dtype=np.float64)
    u = u[~np.isnan(u)]
    idx = np.clip((np.clip(u, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.int64)


def training_statistics_from_columns(spec, columns: Mapping[str, Sequence[Any]],
                                     scores: Optional[ScoreStats] = None) -> TrainingStatistics:
    """Exact training statistics of in-memory columns (the reference the Beam version is tested against).

    Args:
      spec: the DatasetSpec (which features are numeric / categorical).
      columns: feature name -> its raw values over the non-test rows.
      scores: the test split's ScoreStats, when known.
    """
    features: dict[str, Any] = {}
    rows = 0
    for name in spec.feature_columns:
        raw = list(columns.get(name, []))
        rows = max(rows, len(raw))
        if name in spec.categorical_columns:
            present, missing = category_values(raw)
            top, other = prune_counts(category_counts(present), TOP_VALUES)
            features[name] = CategoricalStats(counts=top, other=other, missing=missing, rows=len(raw))
        else:
            values, missing = numeric_values(raw)
            finite = values[np.isfinite(values)]
            q = np.quantile(finite, np.linspace(0, 1, NUMERIC_BINS + 1)).tolist() if len(finite) else []
            edges = bin_edges(q)
            features[name] = NumericStats(
                edges=edges, counts=numeric_counts(values, edges).tolist(), missing=missing, rows=len(raw),
                min=float(finite.min()) if len(finite) else None, max=float(finite.max()) if len(finite) else None)
    return TrainingStatistics(features=features, scores=scores, rows=rows)


def write_training_statistics(version_dir: str, stats: TrainingStatistics) -> str:
    path = fs.join(version_dir, *STATISTICS_FILE.split("/"))
    fs.write_json(path, stats.to_dict())
    return path


def read_training_statistics(version_dir: str) -> Optional[TrainingStatistics]:
    """The statistics stored with a model version (local or gs://), or None when it has none."""
    path = fs.join(version_dir, *STATISTICS_FILE.split("/"))
    if not fs.is_file(path):
        return None
    return TrainingStatistics.from_dict(fs.read_json(path))
