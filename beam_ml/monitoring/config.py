"""Monitoring settings: the window (`--monitor_window`) and the alert thresholds (`--monitor_thresholds`).

    parse_window("1000")  -> WindowSpec("count", 1000)      # every 1000 events
    parse_window("30s")   -> WindowSpec("duration", 30.0)   # every 30 s (also 500ms, 5m, 1h)
    t = parse_thresholds("Amount=0.1,dept:unseen_rate=0.05,psi=0.25")   # or a .json / .yaml file
    t.get("Amount", "numeric", "js")   -> 0.1

Defaults are Vertex AI Model Monitoring's: 0.3 for Jensen-Shannon divergence
(numeric features) and for L-infinity distance (categorical features); the
score distribution uses the numeric default. The other figures (PSI, missing,
out-of-range and unseen rates, the predicted-positive rate's change) alert
only when given a threshold. A file holds
``{"numeric": 0.3, "categorical": 0.3, "score": 0.3, "metrics": {"psi": 0.25},
"features": {"Amount": 0.1, "dept": {"linf": 0.2, "unseen_rate": 0.05}}}``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping, Optional

from beam_ml import fs
from beam_ml.errors import UserError

__all__ = ["MonitorSettings", "WindowSpec", "parse_window", "Thresholds", "parse_thresholds", "METRICS", "SCORE_FEATURE",
           "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.3
# The figures a threshold may name, and which kind of feature has each.
METRICS = {"js": "numeric", "linf": "categorical", "psi": None, "missing_rate": None,
           "out_of_range_rate": "numeric", "unseen_rate": "categorical", "positive_rate_delta": "score"}
PRIMARY = {"numeric": "js", "categorical": "linf", "score": "js"}
SCORE_FEATURE = "__score__"


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    kind: str  # "count" | "duration" | "all" (one window: a whole batch input)
    size: float  # events, or seconds

    def describe(self) -> str:
        if self.kind == "all":
            return "the whole input"
        return f"{int(self.size)} events" if self.kind == "count" else f"{self.size:g} s"


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")


def parse_window(text: str) -> WindowSpec:
    """`1000` (events) or `30s` / `500ms` / `5m` / `1h`.

    Raises:
      UserError: naming --monitor_window.
    """
    t = str(text).strip()
    if re.fullmatch(r"[0-9]+", t) and int(t) > 0:  # ASCII digits only (str.isdigit accepts '¹')
        return WindowSpec("count", int(t))
    m = _DURATION.match(t)
    if m and float(m.group(1)) > 0:
        seconds = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
        return WindowSpec("duration", seconds)
    raise UserError(f"--monitor_window: expected a positive count of events (1000) or a duration (30s, 500ms, "
                    f"5m), got {text!r}")


@dataclasses.dataclass
class Thresholds:
    """Alert thresholds: defaults per feature kind and metric, overrides per feature."""

    defaults: dict = dataclasses.field(default_factory=lambda: {
        "numeric": {"js": DEFAULT_THRESHOLD}, "categorical": {"linf": DEFAULT_THRESHOLD},
        "score": {"js": DEFAULT_THRESHOLD}})
    features: dict = dataclasses.field(default_factory=dict)  # feature -> {metric: threshold or None}

    def get(self, feature: str, kind: str, metric: str) -> Optional[float]:
        """The threshold of `metric` for `feature` (of `kind`: numeric, categorical, score), or None (no alert)."""
        own = self.features.get(feature, {})
        if metric in own:
            return own[metric]
        if "*" in own and metric == PRIMARY.get(kind):  # a bare per-feature number: its primary metric
            return own["*"]
        return self.defaults.get(kind, {}).get(metric)

    def to_dict(self) -> dict:
        return {"defaults": self.defaults, "features": self.features}


def _number(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None  # explicitly off
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x) or x < 0:
        raise UserError(f"--monitor_thresholds: {where}: expected a number >= 0, got {value!r}")
    return x


def _check_metric(metric: str, where: str) -> str:
    if metric not in METRICS:
        raise UserError(f"--monitor_thresholds: {where}: unknown metric {metric!r} (one of {', '.join(METRICS)})")
    return metric


def _from_mapping(d: Mapping[str, Any], where: str) -> Thresholds:
    t = Thresholds()
    unknown = set(d) - {"numeric", "categorical", "score", "metrics", "features"}
    if unknown:
        raise UserError(f"--monitor_thresholds: {where}: unknown key {sorted(unknown)[0]!r} "
                        "(numeric, categorical, score, metrics, features)")
    for kind in ("numeric", "categorical", "score"):
        if kind in d:
            t.defaults[kind][PRIMARY[kind]] = _number(d[kind], f"{where}: {kind}")
    for metric, value in (d.get("metrics") or {}).items():
        _check_metric(metric, where)
        kinds = [METRICS[metric]] if METRICS[metric] else ["numeric", "categorical", "score"]
        for kind in kinds:
            t.defaults[kind][metric] = _number(value, f"{where}: metrics.{metric}")
    for feature, value in (d.get("features") or {}).items():
        if isinstance(value, Mapping):
            t.features[str(feature)] = {(m if m == "*" else _check_metric(m, f"{where}: {feature}")):
                                        _number(v, f"{where}: {feature}.{m}") for m, v in value.items()}
        else:
            t.features[str(feature)] = {"*": _number(value, f"{where}: {feature}")}
    return t


def parse_thresholds(text: Optional[str]) -> Thresholds:
    """Thresholds from a .json/.yaml/.yml file (local or gs://) or an inline `key=value,...` list.

    Inline keys: `numeric`, `categorical`, `score` (their kind's primary metric), a metric name
    (every feature), `<feature>` (its primary metric) or `<feature>:<metric>`.

    Raises:
      UserError: naming --monitor_thresholds and what is wrong.
    """
    if not text:
        return Thresholds()
    text = text.strip()
    if text.lower().endswith((".json", ".yaml", ".yml")):
        if not fs.is_file(text):
            raise UserError(f"--monitor_thresholds: no such file {text}")
        raw = fs.read_text(text)
        try:
            if text.lower().endswith(".json"):
                d = json.loads(raw)
            else:
                import yaml  # a YAML file is the exception: import only then

                d = yaml.safe_load(raw)
        except Exception as e:  # pylint: disable=broad-except
            raise UserError(f"--monitor_thresholds: {text}: not valid {'JSON' if text.endswith('json') else 'YAML'}"
                            f": {str(e).splitlines()[0]}") from None
        if not isinstance(d, Mapping):
            raise UserError(f"--monitor_thresholds: {text}: expected a mapping at the top")
        return _from_mapping(d, text)
    d: dict[str, Any] = {"metrics": {}, "features": {}}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise UserError(f"--monitor_thresholds: expected key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in ("numeric", "categorical", "score"):
            d[key] = value
        elif key in METRICS:
            d["metrics"][key] = value
        elif ":" in key:
            feature, metric = key.rsplit(":", 1)
            d["features"].setdefault(feature, {})[_check_metric(metric, "inline")] = value
        else:
            d["features"].setdefault(key, {})["*"] = value
    return _from_mapping(d, "inline")


@dataclasses.dataclass
class MonitorSettings:
    """--monitor's settings, checked (beam_ml.options.MonitorOptions.validated)."""

    window: WindowSpec
    thresholds: Thresholds
    topic: Optional[str]
    table: Any  # --monitor_table: a beam_ml.monitoring.table.MonitorTable, or None
    alert_topic: Optional[str]
    label_topic: Optional[str]
    metrics_port: int
    metrics_host: str
