"""The model server's Prometheus metrics (prometheus-client), in a registry of its own.

    metrics = ServerMetrics("fraud")
    metrics.observe("/v1/models/{name}:predict", "POST", 200, 0.004)
    body, content_type = metrics.exposition()        # what GET /metrics answers
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics"]

# Seconds; from well under a millisecond (one row, idle model) to a slow multi-thousand-row request.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Requests and errors by route and status, latency, batch sizes, the served model version."""

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        self._model = model_name
        self.requests = Counter("beam_ml_serve_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("beam_ml_serve_errors", "HTTP requests answered with a 4xx/5xx status",
                              ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("beam_ml_serve_request_latency_seconds", "Request latency by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("beam_ml_serve_batch_size", "Instances per model call (merged requests)",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        self.instances = Counter("beam_ml_serve_instances", "Instances scored", registry=self.registry)
        self.model_version = Gauge("beam_ml_serve_model_version", "The model version served (the newest loaded)",
                                   ["model"], registry=self.registry)
        self.reloads = Counter("beam_ml_serve_model_loads", "Model versions loaded to serve as the newest",
                               ["model"], registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        if status >= 400:
            self.errors.labels(*labels).inc()
        self.latency.labels(route).observe(seconds)

    def served_version(self, version: int) -> None:
        self.model_version.labels(self._model).set(version)
        self.reloads.labels(self._model).inc()

    def exposition(self) -> tuple[bytes, str]:
        """(the text format body, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
