"""Drift metrics and the per-window accumulator: serving data against the training statistics.

    js_divergence([10, 5, 1], [3, 3, 3])       # Jensen-Shannon divergence, base 2, in [0, 1]
    linf_distance({"a": .5, "b": .5}, {"a": 1.0})
    psi([10, 5, 1], [3, 3, 3])                   # population stability index

    acc = WindowAccumulator(stats)
    acc.add_rows(rows)                           # raw feature dicts (any junk: counted, never raised)
    acc.add_predictions(predictions)             # {'score', 'class_id', 'model_version', ...}
    figures = acc.figures()                      # per feature, scores, counts: see docs/MONITORING.md

Every function here is pure and total: NaN, inf, huge values, missing features,
text in a numeric field and empty windows give a number or None, never an
exception. Metrics use the training histogram's buckets: numeric features its
quantile bins plus one bin below and one above the training range (empty in
training; a value there counts as out of range), categorical features its top values plus
one bucket for every other value (an unseen value lands there and counts as
unseen), the scores SCORE_BINS equal bins of [0, 1].
"""
from __future__ import annotations

import collections
import itertools
import math
import operator
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from beam_ml.monitoring.stats import (OTHER, SCORE_BINS, CategoricalStats, NumericStats, TrainingStatistics,
                                      category_values, numeric_counts, numeric_values, score_histogram)

__all__ = ["js_divergence", "linf_distance", "psi", "distribution", "percentiles", "binary_label_metrics",
           "ColumnBatch", "WindowAccumulator", "MAX_LATENCY_SAMPLES"]

# PSI's smoothing of empty bins (the customary 1e-4 floor), so one empty bin does not make it infinite.
_PSI_FLOOR = 1e-4
MAX_LATENCY_SAMPLES = 20000
_ABSENT = object()  # a feature missing from a row (not the same as a null value)
_SCORE = operator.itemgetter("score")
_NUMBER_TYPES = {float, int}


def distribution(counts: Sequence[float]) -> Optional[np.ndarray]:
    """Counts normalised to sum 1 (negative or non-finite counts as 0); None when they sum to 0."""
    c = np.asarray(counts, dtype=np.float64)
    if not np.isfinite(c).all():  # (nan_to_num costs more than the rest: only when needed)
        c = np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)
    c = np.maximum(c, 0.0)
    total = c.sum()
    if not total > 0 or not math.isfinite(total):
        return None
    return c / total


def js_divergence(p_counts: Sequence[float], q_counts: Sequence[float]) -> Optional[float]:
    """Jensen-Shannon divergence (log base 2, so in [0, 1]) of two histograms over the same bins; None if either is empty."""
    return _js(distribution(p_counts), distribution(q_counts))


def _js(p: Optional[np.ndarray], q: Optional[np.ndarray]) -> Optional[float]:
    if p is None or q is None or len(p) != len(q):
        return None
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0))


def linf_distance(p: Mapping[str, float], q: Mapping[str, float]) -> Optional[float]:
    """L-infinity distance of two category distributions (largest absolute frequency difference); None if either is empty."""
    if not p or not q:
        return None
    keys = set(p) | set(q)
    return float(max(abs(float(p.get(k, 0.0)) - float(q.get(k, 0.0))) for k in keys))


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float]) -> Optional[float]:
    """Population stability index sum((a - e) ln(a / e)), empty bins floored at 1e-4; None if either is empty."""
    return _psi(distribution(expected_counts), distribution(actual_counts))


def _psi(e: Optional[np.ndarray], a: Optional[np.ndarray]) -> Optional[float]:
    if e is None or a is None or len(e) != len(a):
        return None
    e, a = np.maximum(e, _PSI_FLOOR), np.maximum(a, _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _reference(stats: Any) -> Optional[np.ndarray]:
    """The training distribution a window is compared with (numeric: the bins plus the empty out-of-range ones;
    scores: the test split's bins), computed once per statistics object and kept beside its fields, so a
    hot-reloaded version's statistics bring their own."""
    ref = stats.__dict__.get("_window_reference", _ABSENT)
    if ref is _ABSENT:
        counts = [0, *stats.counts, 0] if isinstance(stats, NumericStats) else stats.counts
        ref = stats.__dict__["_window_reference"] = distribution(counts)
    return ref


def percentiles(samples: Sequence[float], qs=(50, 90, 99)) -> dict:
    """{'p50': ..., 'p90': ..., 'p99': ..., 'max': ...} of the finite samples; Nones when there are none."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)] if len(x) else x
    if not len(x):
        return {**{f"p{q}": None for q in qs}, "max": None}
    values = np.percentile(x, list(qs))
    return {**{f"p{q}": float(v) for q, v in zip(qs, values)}, "max": float(x.max())}


def binary_label_metrics(labels: Sequence[int], scores: Sequence[float], predicted: Sequence[int]) -> dict:
    """Precision and recall of the predicted classes, ROC-AUC of the scores (rank statistic, ties averaged).

    Undefined figures (no predicted positives, one class only) are None.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    pred = np.asarray(predicted, dtype=np.int64)
    tp = int(np.sum((pred == 1) & (y == 1)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    auc = None
    if n_pos and n_neg:
        order = np.argsort(s, kind="mergesort")
        ranks = np.empty(len(s), dtype=np.float64)
        sorted_s = s[order]
        # Average ranks over ties.
        _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
        avg = first + (counts - 1) / 2.0 + 1.0
        ranks[order] = np.repeat(avg, counts)
        auc = float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return {"labelled": int(len(y)), "positives": n_pos, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "roc_auc": auc}


class ColumnBatch:
    """The feature columns of `n` scored rows as the model got them (`beam_ml.records.records_to_columns`):
    numeric float32 arrays (NaN: missing), categorical object arrays of bytes (b"": missing).

    stream_predict's monitor reads these rather than the row dicts: the model's input step already built
    them, and a window bins numpy arrays without a per-value Python step. Sliced like a list of rows.
    """

    __slots__ = ("columns", "n")

    def __init__(self, columns: Mapping[str, np.ndarray], n: int):
        self.columns = columns
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> "ColumnBatch":
        return ColumnBatch({k: v[s] for k, v in self.columns.items()}, len(range(*s.indices(self.n))))

    def take(self, indices: Sequence[int]) -> "ColumnBatch":
        idx = np.asarray(indices, dtype=np.int64)
        return ColumnBatch({k: v[idx] for k, v in self.columns.items()}, len(idx))


# Values wait to be binned until FOLD_AT of them (or the figures, or a merge): a numpy call costs about as
# much for 4,000 values as for 250, and a serving batch is a few hundred.
FOLD_AT = 4096


class _Pending:
    """Batches of raw values (lists, or the model's column arrays) waiting to be binned in one numpy pass."""

    __slots__ = ("parts", "n")

    def __init__(self):
        self.parts: list = []
        self.n = 0

    def add(self, values: Sequence[Any]) -> bool:
        """Keeps `values`; True when FOLD_AT or more are waiting."""
        self.parts.append(values)
        self.n += len(values)
        return self.n >= FOLD_AT

    def take(self) -> Optional[Sequence[Any]]:
        """Every waiting value, in order, as one list or array (None when nothing waits); empties the buffer."""
        parts, self.parts, self.n = self.parts, [], 0
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        if all(type(p) is np.ndarray for p in parts):  # pylint: disable=unidiomatic-typecheck  # model columns
            return np.concatenate(parts)
        return list(itertools.chain.from_iterable(p.tolist() if isinstance(p, np.ndarray) else p for p in parts))


class _NumericWindow:
    """Counts over the training bins plus two out-of-range bins (below the training minimum, above its maximum),
    where training has no mass: a shift beyond the training range weighs in the divergence, not only inside it.
    Values are binned FOLD_AT at a time (see _Pending).
    """

    __slots__ = ("stats", "counts", "below", "above", "missing", "non_finite", "rows", "pending")

    def __init__(self, stats: NumericStats):
        self.stats = stats
        self.counts = np.zeros(len(stats.edges) + 1, dtype=np.int64)
        self.below = self.above = self.missing = self.non_finite = self.rows = 0
        self.pending = _Pending()

    def add(self, raw: Sequence[Any]) -> None:
        self.rows += len(raw)
        if self.pending.add(raw):
            self.fold()

    def fold(self) -> None:
        """Bins the pending values (the counts are exact once this returns)."""
        raw = self.pending.take()
        if raw is None:
            return
        try:  # numbers and None (-> NaN): numpy converts the whole column at once
            values = np.array(raw, dtype=np.float64)
            nan = np.isnan(values)
            missing = int(nan.sum())
            values = values[~nan]
        except (TypeError, ValueError, OverflowError):  # text, lists, ...: value by value
            values, missing = numeric_values(raw)
        self.missing += missing
        if not len(values):
            return
        self.non_finite += int((~np.isfinite(values)).sum())
        # Training read features as float32 (its bin edges are float32 values): round serving values the same
        # way, or a value equal to an edge (0.14 vs float32's 0.14000000059...) lands in the bin below it.
        with np.errstate(over="ignore"):
            values = values.astype(np.float32).astype(np.float64)
        lo = self.stats.min if self.stats.min is not None else np.inf
        hi = self.stats.max if self.stats.max is not None else -np.inf
        below, above = values < lo, values > hi  # +-inf included; no training range: all out of range
        if self.stats.min is None:
            above = ~below
        self.below += int(below.sum())
        self.above += int(above.sum())
        self.counts += numeric_counts(values[~(below | above)], self.stats.edges)

    def figures(self) -> dict:
        self.fold()
        s, rows = self.stats, self.rows
        train = _reference(s)
        live = [self.below, *self.counts.tolist(), self.above]
        live_d = distribution(live)
        return {"kind": "numeric", "rows": rows, "js": _js(train, live_d), "psi": _psi(train, live_d),
                "missing_rate": self.missing / rows if rows else None,
                "training_missing_rate": s.missing / s.rows if s.rows else None,
                "out_of_range_rate": (self.below + self.above) / rows if rows else None,
                "non_finite": self.non_finite, "counts": live}


class _CategoricalWindow:
    __slots__ = ("stats", "counts", "other", "missing", "unseen", "rows", "known")

    def __init__(self, stats: CategoricalStats):
        self.stats = stats
        self.known = set(stats.counts)
        self.counts: dict[str, int] = {k: 0 for k in stats.counts}
        self.other = self.missing = self.unseen = self.rows = 0

    def add(self, raw: Sequence[Any]) -> None:
        self.rows += len(raw)
        try:
            distinct = collections.Counter(raw)  # one hash per value; the rules below run per distinct value
        except TypeError:  # an unhashable value (a list, a dict): the slow path
            distinct = collections.Counter()
            values, missing = category_values(raw)
            self.missing += missing
            distinct.update(values)
        for v, n in distinct.items():
            text, missing = category_values([v])
            if missing:
                self.missing += n
            elif text[0] in self.known:
                self.counts[text[0]] += n
            else:
                self.other += n
        if self.stats.other == 0:  # training kept every value it saw: anything else is unseen
            self.unseen = self.other

    def _freqs(self, counts: Mapping[str, int], other: int) -> dict:
        total = sum(counts.values()) + other
        if not total:
            return {}
        out = {k: v / total for k, v in counts.items()}
        out[OTHER] = other / total
        return out

    def figures(self) -> dict:
        s, rows = self.stats, self.rows
        train = self._freqs(s.counts, s.other)
        live = self._freqs(self.counts, self.other)
        keys = list(s.counts) + [OTHER]
        return {"kind": "categorical", "rows": rows, "linf": linf_distance(train, live),
                "psi": psi([s.counts.get(k, s.other) if k != OTHER else s.other for k in keys],
                           [self.counts.get(k, 0) if k != OTHER else self.other for k in keys]),
                "missing_rate": self.missing / rows if rows else None,
                "training_missing_rate": s.missing / s.rows if s.rows else None,
                "unseen_rate": self.unseen / rows if rows else None,
                "frequencies": {k: round(v, 6) for k, v in live.items()}}


class WindowAccumulator:
    """One window's figures, accumulated batch by batch (memory bounded by the training buckets).

    Args:
      stats: the served model's TrainingStatistics.
    """

    def __init__(self, stats: TrainingStatistics):
        self.stats = stats
        self.features = {name: (_NumericWindow(f) if isinstance(f, NumericStats) else _CategoricalWindow(f))
                         for name, f in stats.features.items()}
        self._names = tuple(self.features)
        self._windows = tuple(self.features.values())
        self._getter = operator.itemgetter(*self._names) if self._names else None
        self._score_counts = np.zeros(len(stats.scores.counts) if stats.scores else SCORE_BINS, dtype=np.int64)
        self._scores_pending = _Pending()
        self.predictions = 0
        self.positives = 0
        self.rows = 0
        self.bad_rows = 0  # rows that were not a mapping at all
        self.missing_features = 0  # feature fields absent from a row
        self.dead: dict[str, int] = {}
        self.model_versions: dict[int, int] = {}
        self.latencies: list[float] = []
        self._latency_seen = 0
        self._rng = np.random.default_rng(0)

    def add_rows(self, rows: Iterable[Any]) -> None:
        """Adds raw feature rows (dicts); a row that is not a dict, or lacks a feature, is counted, not raised."""
        if isinstance(rows, ColumnBatch):
            self._add_columns(rows)
            return
        rows = list(rows)
        if not rows:
            return
        if self._getter is not None:
            try:  # the usual batch, every row a mapping with every feature: one C-level pass takes the columns out
                columns = (list(zip(*map(self._getter, rows))) if len(self._names) > 1
                           else [list(map(self._getter, rows))])
            except (KeyError, TypeError, IndexError):
                columns = None
            if columns is not None:
                self.rows += len(rows)
                for window, column in zip(self._windows, columns):
                    window.add(column)
                return
        # `type(r) is dict` first: the ABC check of Mapping costs more than the rest of a row's work
        good = [r for r in rows if type(r) is dict or isinstance(r, Mapping)]  # pylint: disable=unidiomatic-typecheck
        self.bad_rows += len(rows) - len(good)
        self.rows += len(good)
        for name, window in self.features.items():
            column = [r.get(name, _ABSENT) for r in good]
            absent = column.count(_ABSENT)
            if absent:
                self.missing_features += absent
                column = [None if v is _ABSENT else v for v in column]
            window.add(column)

    def _add_columns(self, batch: ColumnBatch) -> None:
        n = batch.n
        if not n:
            return
        self.rows += n
        for name, window in self.features.items():
            column = batch.columns.get(name)
            if column is None:  # a feature the scoring model does not take (another version's statistics)
                self.missing_features += n
                window.add([None] * n)
            elif isinstance(window, _NumericWindow):
                window.add(column)
            else:
                window.add(column.tolist())

    def add_predictions(self, predictions: Iterable[Mapping[str, Any]]) -> None:
        task = self.stats.scores.task if self.stats.scores else "binary"
        predictions = list(predictions)
        try:  # the usual batch: dicts with a numeric score, binned later with the others (see _fold_scores)
            raw = list(map(_SCORE, predictions))
            class_ids = [p.get("class_id") for p in predictions]
            id_types = set(map(type, class_ids))
            fast = set(map(type, raw)) <= _NUMBER_TYPES and not {str, bytes} & id_types
            versions = collections.Counter([p.get("model_version") for p in predictions])
        except (TypeError, KeyError, AttributeError):
            fast = False
        if not fast:  # something odd in the batch: prediction by prediction, counting what cannot be read
            id_types = None
            good = []
            for p in predictions:
                try:
                    float(p.get("score"))
                    int(p.get("class_id", 0) or 0)
                except (TypeError, ValueError, AttributeError):
                    self.bad_rows += 1
                    continue
                good.append(p)
            predictions = good
            raw = [float(p.get("score")) for p in predictions]
            class_ids = [p.get("class_id") for p in predictions]
            versions = collections.Counter(p.get("model_version") for p in predictions)
        self.predictions += len(predictions)
        if task != "multiclass":
            self.positives += (class_ids.count(1) if id_types is not None and id_types <= {int}
                               else sum(1 for c in class_ids if c is not None and int(c or 0) == 1))
        for version, n in versions.items():
            if version is not None:
                self.model_versions[int(version)] = self.model_versions.get(int(version), 0) + n
        if raw and self._scores_pending.add(raw):
            self._fold_scores()

    def _fold_scores(self) -> None:
        raw = self._scores_pending.take()
        if raw is None:
            return
        # deferred: beam_ml.evaluation imports scikit-learn; the dashboard and the flags import this module
        from beam_ml.evaluation import score_unit

        task = self.stats.scores.task if self.stats.scores else "binary"
        threshold = self.stats.scores.threshold if self.stats.scores else 0.5
        scores = np.asarray(raw, dtype=np.float64)
        self._score_counts += score_histogram(score_unit(task, scores, threshold), len(self._score_counts))

    @property
    def score_counts(self) -> np.ndarray:
        """The scores' histogram (SCORE_BINS bins of [0, 1], or the training statistics' bins)."""
        self._fold_scores()
        return self._score_counts

    @score_counts.setter
    def score_counts(self, counts: np.ndarray) -> None:
        self._scores_pending.take()
        self._score_counts = counts

    def add_dead(self, stage: str, n: int = 1) -> None:
        self.dead[stage] = self.dead.get(stage, 0) + int(n)

    def add_latencies(self, latencies_ms: Iterable[float]) -> None:
        """Keeps a uniform sample of at most MAX_LATENCY_SAMPLES latencies (reservoir sampling)."""
        latencies_ms = list(latencies_ms)
        if len(self.latencies) + len(latencies_ms) <= MAX_LATENCY_SAMPLES:  # room for all: kept as they are
            self.latencies.extend(map(float, latencies_ms))
            self._latency_seen += len(latencies_ms)
            return
        for x in latencies_ms:
            self._latency_seen += 1
            if len(self.latencies) < MAX_LATENCY_SAMPLES:
                self.latencies.append(float(x))
            else:
                j = int(self._rng.integers(0, self._latency_seen))
                if j < MAX_LATENCY_SAMPLES:
                    self.latencies[j] = float(x)

    def merge(self, other: "WindowAccumulator") -> "WindowAccumulator":
        """Adds another accumulator of the same statistics into this one (a Beam combiner's merge)."""
        for name, w in self.features.items():
            o = other.features[name]
            if isinstance(w, _NumericWindow):
                w.fold()
                o.fold()
            for field in ("missing", "rows") + (("below", "above", "non_finite") if isinstance(w, _NumericWindow)
                                                 else ("other", "unseen")):
                setattr(w, field, getattr(w, field) + getattr(o, field))
            if isinstance(w, _NumericWindow):
                w.counts = w.counts + o.counts
            else:
                for k, v in o.counts.items():
                    w.counts[k] += v
        self.score_counts = self.score_counts + other.score_counts
        for field in ("predictions", "positives", "rows", "bad_rows", "missing_features"):
            setattr(self, field, getattr(self, field) + getattr(other, field))
        for stage, n in other.dead.items():
            self.add_dead(stage, n)
        for v, n in other.model_versions.items():
            self.model_versions[v] = self.model_versions.get(v, 0) + n
        self.add_latencies(other.latencies)
        return self

    @property
    def events(self) -> int:
        return self.predictions + sum(self.dead.values())

    def figures(self) -> dict:
        """Everything measured in the window, metrics computed (see docs/MONITORING.md for the fields)."""
        s = self.stats.scores
        score_fig = {"counts": self.score_counts.tolist(), "js": None, "psi": None,
                     "positive_rate": self.positives / self.predictions if self.predictions else None,
                     "training_positive_rate": s.positive_rate if s else None, "positive_rate_delta": None}
        if s:
            train, live = _reference(s), distribution(self.score_counts)
            score_fig["js"] = _js(train, live)
            score_fig["psi"] = _psi(train, live)
            if score_fig["positive_rate"] is not None and s.positive_rate is not None:
                score_fig["positive_rate_delta"] = abs(score_fig["positive_rate"] - s.positive_rate)
        return {
            "events": {"in": self.events, "predictions": self.predictions, "dead_letters": dict(self.dead),
                       "dead_total": sum(self.dead.values()), "bad_rows": self.bad_rows,
                       "missing_features": self.missing_features},
            "latency_ms": percentiles(self.latencies),
            "features": {name: w.figures() for name, w in self.features.items()},
            "scores": score_fig,
            "model_versions": {str(k): v for k, v in sorted(self.model_versions.items())},
        }
