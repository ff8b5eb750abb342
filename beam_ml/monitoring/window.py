"""Windows of serving events -> one monitoring record each (+ an alert record per crossed threshold).

    monitor = WindowMonitor(stats, parse_window("1000"), parse_thresholds(None))
    for record in monitor.observe(rows, predictions, latencies_ms, event_ids): ...   # records of closed windows
    monitor.dead("parse", 3)                        # dead letters of the window, by stage
    monitor.labels([("evt-1", "1"), ...])           # delayed ground truth, joined by event id
    records = monitor.flush()                       # the last, partial window (end of a bounded run)

A count window closes after exactly N events (a batch is split at the
boundary); a duration window closes at the first batch arriving after its end
(no timers: the local runner has none that work while a source runs), so it
may hold a little more than its duration; `window.end_ts` says when it closed.
Records are plain dicts (JSON): `{"type": "monitoring", ...}` and `{"type": "alert", ...}`;
the fields are listed in docs/MONITORING.md.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from beam_ml import fs
from beam_ml.monitoring.config import SCORE_FEATURE, Thresholds, WindowSpec
from beam_ml.monitoring.drift import WindowAccumulator, binary_label_metrics
from beam_ml.monitoring.stats import TrainingStatistics, read_training_statistics

_LOGGER = logging.getLogger(__name__)

__all__ = ["WindowMonitor", "VersionFollower", "window_records", "clean_record", "encode_record", "alerts_for", "LabelJoin", "FEATURE_METRICS", "SCORE_METRICS"]

FEATURE_METRICS = {"numeric": ("js", "psi", "missing_rate", "out_of_range_rate"),
                   "categorical": ("linf", "psi", "missing_rate", "unseen_rate")}
SCORE_METRICS = ("js", "psi", "positive_rate_delta")


def alerts_for(record: Mapping[str, Any], thresholds: Thresholds) -> list[dict]:
    """One alert record per figure of a monitoring record above its threshold (Vertex AI: value > threshold)."""
    out = []
    base = {"type": "alert", "window": record["window"], "model_version": record.get("model_version"),
            "source": record.get("source")}

    def check(feature, kind, metric, value):
        limit = thresholds.get(feature, kind, metric)
        if value is not None and limit is not None and value > limit:
            out.append({**base, "feature": feature, "kind": kind, "metric": metric, "value": value,
                        "threshold": limit})

    for name, fig in record["features"].items():
        for metric in FEATURE_METRICS[fig["kind"]]:
            check(name, fig["kind"], metric, fig.get(metric))
    for metric in SCORE_METRICS:
        check(SCORE_FEATURE, "score", metric, record["scores"].get(metric))
    return out


def _is_positive(label: Any, positive_label: Optional[str]) -> Optional[int]:
    if isinstance(label, bool):
        return int(label)
    text = str(label).strip().lower()
    if positive_label is not None and text == str(positive_label).strip().lower():
        return 1
    if text in ("1", "true", "yes"):
        return 1
    if text in ("0", "false", "no", "") or positive_label is not None:
        return 0
    return None


class LabelJoin:
    """Joins delayed labels to earlier predictions by event id (both sides bounded: the oldest are dropped).

    Args:
      positive_label: the label value meaning the positive class (besides 1 / true / yes).
      max_pending: predictions (and early labels) kept waiting for their other half.
    """

    def __init__(self, positive_label: Optional[str] = None, max_pending: int = 200_000):
        self.positive_label = positive_label
        self.max_pending = max_pending
        self.predictions: collections.OrderedDict = collections.OrderedDict()
        self.early: collections.OrderedDict = collections.OrderedDict()
        self.joined: list = []  # (label, score, class_id) since the last take()
        self.expired = 0
        self.bad = 0

    def _bound(self, d: collections.OrderedDict) -> None:
        while len(d) > self.max_pending:
            d.popitem(last=False)
            self.expired += 1

    def add_predictions(self, items: Iterable[tuple]) -> None:
        """(event id, score, class_id) of scored events."""
        for event_id, score, class_id in items:
            key = str(event_id)
            if key in self.early:
                self.joined.append((self.early.pop(key), score, class_id))
            else:
                self.predictions[key] = (score, class_id)
        self._bound(self.predictions)

    def add_labels(self, items: Iterable[tuple]) -> None:
        """(event id, label value); a label that is neither positive nor negative is counted as bad."""
        for event_id, label in items:
            y = _is_positive(label, self.positive_label)
            if y is None or event_id is None:
                self.bad += 1
                continue
            key = str(event_id)
            if key in self.predictions:
                score, class_id = self.predictions.pop(key)
                self.joined.append((y, score, class_id))
            else:
                self.early[key] = y
        self._bound(self.early)

    def take(self) -> Optional[dict]:
        """Precision, recall and ROC-AUC of the labels joined since the last call (None if none)."""
        joined, self.joined = self.joined, []
        if not joined:
            return None
        y, s, c = zip(*joined)
        out = binary_label_metrics(y, s, c)
        out.update(expired=self.expired, bad_labels=self.bad, waiting=len(self.predictions))
        return out


def clean_record(value):
    """NaN/inf -> None, recursively: records are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_record(v) for v in value]
    return value


def encode_record(record: dict) -> tuple[bytes, bytes]:
    """A (cleaned) record as a Kafka (key, value): key `<source>/<window id>`, value its JSON."""
    key = f"{record.get('source', '')}/{record['window']['id']}".encode("utf-8")
    return key, json.dumps(record, allow_nan=False, default=str).encode("utf-8")


def window_records(acc: WindowAccumulator, window: dict, thresholds: Thresholds, source: str = "",
                   labels: Optional[dict] = None) -> list[dict]:
    """[the monitoring record of a window's accumulator, its alert records...]."""
    figures = acc.figures()
    versions = figures.pop("model_versions")
    seconds = max((window["end_ts"] - window["start_ts"]) / 1000.0, 1e-9)
    record = {
        "type": "monitoring", "source": source, "window": window,
        "model_version": int(max(versions, key=lambda v: versions[v])) if versions else None,
        "model_versions": versions,
        **figures,
        "throughput_eps": figures["events"]["in"] / seconds,
        "labels": labels,
    }
    alerts = alerts_for(record, thresholds)
    record["alerts"] = [f"{a['feature']}:{a['metric']}" for a in alerts]
    return [record, *alerts]


class WindowMonitor:
    """Accumulates serving batches into windows and turns each closed window into records.

    Args:
      stats: the served model's TrainingStatistics.
      window: count or duration (`beam_ml.monitoring.config.parse_window`).
      thresholds: alert thresholds.
      source: what is monitored (e.g. the input topic), copied into every record.
      clock: seconds since the epoch (injected by tests).
      labels: a LabelJoin for delayed ground truth, or None.
    """

    def __init__(self, stats: TrainingStatistics, window: WindowSpec, thresholds: Thresholds, source: str = "",
                 clock: Callable[[], float] = time.time, labels: Optional[LabelJoin] = None):
        self.stats = stats
        self.window = window
        self.thresholds = thresholds
        self.source = source
        self.clock = clock
        self.label_join = labels
        self.window_id = 0
        self.windows_closed = 0
        self.alerts_total = 0
        self._new_window()

    def _new_window(self) -> None:
        self.acc = WindowAccumulator(self.stats)
        self.filled = 0  # scored events in the window (what a count window counts)
        self.start = self.clock()

    def _due(self, now: float) -> bool:
        return self.window.kind == "duration" and now - self.start >= self.window.size

    def observe(self, rows: Sequence[Any], predictions: Sequence[Mapping[str, Any]],
                latencies_ms: Sequence[float] = (), event_ids: Sequence[Any] = ()) -> list[dict]:
        """Adds one batch of scored events (rows and predictions aligned); returns the records of windows closed."""
        out: list[dict] = []
        if self._due(self.clock()):
            out += self.close()
        n = len(predictions)
        if not n:
            self.acc.add_rows(rows)
            return out
        count = self.window.kind == "count"
        i = 0
        while i < n:
            j = min(n, i + int(self.window.size) - self.filled) if count else n
            self.acc.add_rows(rows[i:j])
            self.acc.add_predictions(predictions[i:j])
            self.acc.add_latencies(latencies_ms[i:j])
            if self.label_join is not None and len(event_ids):
                self.label_join.add_predictions(
                    (e, p.get("score"), p.get("class_id")) for e, p in zip(event_ids[i:j], predictions[i:j])
                    # scored events with an id (the server's instances may carry none, or fail)
                    if e is not None and isinstance(p, Mapping) and p.get("score") is not None)
            self.filled += j - i
            if count and self.filled >= self.window.size:
                out += self.close()
            i = j
        return out

    def dead(self, stage: str, n: int = 1) -> None:
        self.acc.add_dead(stage, n)

    def labels(self, items: Iterable[tuple]) -> None:
        if self.label_join is not None:
            self.label_join.add_labels(items)

    def close(self) -> list[dict]:
        """Closes the current window (even an empty one): [monitoring record, alert records...]."""
        now = self.clock()
        window = {"id": self.window_id, "kind": self.window.kind, "size": self.window.size,
                  "start_ts": int(self.start * 1000), "end_ts": int(now * 1000)}
        labels = self.label_join.take() if self.label_join is not None else None
        out = window_records(self.acc, window, self.thresholds, self.source, labels)
        self.window_id += 1
        self.windows_closed += 1
        self.alerts_total += len(out) - 1
        self._new_window()
        return out

    def tick(self) -> list[dict]:
        """The records of the duration window, if it is due (called by a timer: it closes with no traffic)."""
        return self.close() if self._due(self.clock()) else []

    def switch_statistics(self, stats: TrainingStatistics) -> list[dict]:
        """Compares from now on with `stats` (a newly served model version's); returns the records of the
        window this closes early (a window is compared with one version's statistics), or [] when it was empty."""
        out = self.flush()
        self.stats = stats
        self._new_window()
        return out

    def flush(self) -> list[dict]:
        """The last window's records when it holds anything (the end of a bounded run), else []."""
        if self.acc.events or self.acc.rows or self.acc.bad_rows:
            return self.close()
        return []


class VersionFollower:
    """Which model version's training statistics a monitor compares with, following hot reloads.

    Args:
      monitor: the WindowMonitor to switch.
      version_dir: the version compared with at start.
      model_root: the directory versions are hot-reloaded from (None: a pinned version, never switched).
    """

    def __init__(self, monitor: WindowMonitor, version_dir: str, model_root: Optional[str]):
        self.monitor = monitor
        self._root = model_root
        base = version_dir.rstrip("/").rsplit("/", 1)[-1]
        self.version = int(base) if base.isdigit() else 0  # whose statistics the windows are compared with

    def served(self, versions: Iterable[Any]) -> list[dict]:
        """Called with the versions that scored a batch. When one is newer than the version compared with,
        the current window closes (its records are returned) and that version's training statistics are the
        reference from then on (kept: the old ones, when it has none). Older versions change nothing."""
        newest = max((v for v in set(versions) if isinstance(v, int) and not isinstance(v, bool)), default=None)
        if self._root is None or newest is None or newest <= self.version:
            return []
        stats = read_training_statistics(fs.join(self._root, str(newest)))
        self.version = newest
        if stats is None:
            _LOGGER.warning("model version %d has no training statistics: its windows are compared with an "
                            "older version's", newest)
            return []
        _LOGGER.info("monitor: comparing with the training statistics of model version %d", newest)
        return self.monitor.switch_statistics(stats)
