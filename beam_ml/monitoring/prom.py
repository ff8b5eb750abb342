"""Prometheus gauges of the monitor, updated from each monitoring record, served at /metrics.

    gauges = serve_metrics(9464)          # http://127.0.0.1:9464/metrics, once per process
    gauges.update(record)                 # a monitoring record (beam_ml.monitoring.window)
    text = MonitorGauges(CollectorRegistry()).update(record).exposition()   # tests

Gauges (labels in brackets): beam_ml_monitor_events_per_second, beam_ml_monitor_events_total,
beam_ml_monitor_predictions_total, beam_ml_monitor_dead_letters_total[stage],
beam_ml_monitor_latency_ms[quantile], beam_ml_monitor_feature_drift[feature, metric],
beam_ml_monitor_score_drift[metric], beam_ml_monitor_alerts_total, beam_ml_monitor_model_version,
beam_ml_monitor_window.
"""
from __future__ import annotations

import threading
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

__all__ = ["MonitorGauges", "serve_metrics"]


class MonitorGauges:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        p = "beam_ml_monitor_"
        self.eps = Gauge(p + "events_per_second", "Events per second in the last window", registry=registry)
        self.events = Counter(p + "events", "Events seen (predictions + dead letters)", registry=registry)
        self.predictions = Counter(p + "predictions", "Predictions made", registry=registry)
        self.dead = Counter(p + "dead_letters", "Dead letters by stage", ["stage"], registry=registry)
        self.latency = Gauge(p + "latency_ms", "Event-to-prediction latency in the last window", ["quantile"],
                             registry=registry)
        self.drift = Gauge(p + "feature_drift", "Per-feature drift in the last window", ["feature", "metric"],
                           registry=registry)
        self.score = Gauge(p + "score_drift", "Score-distribution drift in the last window", ["metric"],
                           registry=registry)
        self.alerts = Counter(p + "alerts", "Alerts raised", registry=registry)
        self.version = Gauge(p + "model_version", "The model version serving most of the last window",
                             registry=registry)
        self.window = Gauge(p + "window", "Id of the last closed window", registry=registry)

    def update(self, record: dict) -> "MonitorGauges":
        ev = record["events"]
        self.eps.set(record.get("throughput_eps") or 0.0)
        self.events.inc(ev["in"])
        self.predictions.inc(ev["predictions"])
        for stage, n in ev["dead_letters"].items():
            self.dead.labels(stage=stage).inc(n)
        for q, v in record["latency_ms"].items():
            if v is not None:
                self.latency.labels(quantile=q).set(v)
        for name, fig in record["features"].items():
            for metric in ("js", "linf", "psi", "missing_rate", "out_of_range_rate", "unseen_rate"):
                if fig.get(metric) is not None:
                    self.drift.labels(feature=name, metric=metric).set(fig[metric])
        for metric in ("js", "psi", "positive_rate", "positive_rate_delta"):
            if record["scores"].get(metric) is not None:
                self.score.labels(metric=metric).set(record["scores"][metric])
        self.alerts.inc(len(record.get("alerts", [])))
        if record.get("model_version") is not None:
            self.version.set(record["model_version"])
        self.window.set(record["window"]["id"])
        return self

    def exposition(self) -> str:
        return generate_latest(self.registry).decode("utf-8")


_SERVED: dict = {}
_LOCK = threading.Lock()


def serve_metrics(port: int, host: str = "127.0.0.1") -> MonitorGauges:
    """Starts /metrics on host:port once per process (later calls return the same gauges)."""
    with _LOCK:
        gauges: Optional[MonitorGauges] = _SERVED.get((host, port))
        if gauges is None:
            registry = CollectorRegistry()
            gauges = MonitorGauges(registry)
            start_http_server(port, addr=host, registry=registry)
            _SERVED[(host, port)] = gauges
        return gauges
