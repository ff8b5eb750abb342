"""--monitor for the model server: a batch listener feeding the same windows, records and alerts.

    listener = MonitorListener(settings, version_dir, kafka_client_kwargs, source="server", model_root=root)
    server.serve(config, batch_listeners=[listener])      # listener(version, instances, results) per batch

It runs in the server's scoring thread after each model call. Records of closed windows go to
--monitor_topic, and alerts also to --alert_topic; with --monitor_table, rows of that table (queued, inserted
by a daemon thread: beam_ml.monitoring.table.TableRecordWriter). A send is queued and never awaited, so the
server does not wait for the broker or BigQuery. A failed send is logged, never raised. With --label_topic,
delayed labels are joined to the instances' `event_id` (else the model's key column), as stream_predict does,
and each record reports live precision, recall and ROC-AUC. A duration window (--monitor_window=30s) closes on
a timer thread when it is due, with or without requests.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Optional, Sequence

from kafka import KafkaProducer

from beam_ml.model_store import load_model_metadata
from beam_ml.monitoring.config import MonitorSettings
from beam_ml.monitoring.follow import LabelReader
from beam_ml.monitoring.prom import serve_metrics
from beam_ml.monitoring.stats import read_training_statistics
from beam_ml.monitoring.table import TableRecordWriter
from beam_ml.monitoring.window import LabelJoin, VersionFollower, WindowMonitor, clean_record, encode_record

__all__ = ["MonitorListener"]

_LOGGER = logging.getLogger(__name__)


class MonitorListener:
    """Args:
      settings: MonitorOptions.validated().
      version_dir: the served version (its training statistics are the reference).
      client_kwargs: kafka-python connection settings (with --monitor_topic / --alert_topic).
      source: copied into every record.
      model_root: the directory the server hot-reloads versions from (None: a pinned version). When a
        batch comes from a newer version than the one compared with, the monitor closes its current
        window (if it holds anything) and compares with that version's training statistics from then on.
        Batches of older versions (pinned by URL) are compared with the newest version's statistics.
    """

    def __init__(self, settings: MonitorSettings, version_dir: str, client_kwargs: Optional[dict] = None,
                 source: str = "server", model_root: Optional[str] = None):
        _, _, spec = load_model_metadata(version_dir)
        # Delayed labels (--label_topic) join by event id: an instance's `event_id`, else its key column
        # (the rule stream_predict follows for events).
        self._id_fields = ("event_id",) + ((spec.key_column,) if spec.key_column else ())
        labels = (LabelJoin(spec.label_classes[-1] if spec.task != "multiclass" else None)
                  if settings.label_topic else None)
        self._labels = (LabelReader(client_kwargs or {}, settings.label_topic, "label")
                        if settings.label_topic else None)
        self.monitor = WindowMonitor(read_training_statistics(version_dir), settings.window, settings.thresholds,
                                     source=source, labels=labels)
        self.versions = VersionFollower(self.monitor, version_dir, model_root)
        self._settings = settings
        self._lock = threading.Lock()
        self._producer = (KafkaProducer(**(client_kwargs or {}), linger_ms=20)
                          if settings.topic or settings.alert_topic else None)
        self._table = TableRecordWriter(settings.table) if settings.table is not None else None
        self._gauges = serve_metrics(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
        self.records: collections.deque = collections.deque(maxlen=1000)  # the last records (tests, no topic)
        self._stop = threading.Event()
        self._ticker = None
        if settings.window.kind == "duration":  # closes a due window even when no request comes
            self._ticker = threading.Thread(target=self._tick, args=(min(settings.window.size / 4, 1.0),),
                                            daemon=True, name="monitor-windows")
            self._ticker.start()

    def __call__(self, version: int, instances: Sequence[dict], results: Sequence[dict]) -> None:
        predictions = [dict(r, model_version=version) for r in results]
        ids = [self._event_id(i) for i in instances] if self._labels is not None else ()
        with self._lock:
            records = self.versions.served([version])
            if self._labels is not None:
                self.monitor.labels(self._labels.drain())
            records += self.monitor.observe(list(instances), predictions, event_ids=ids)
        self._dispatch(records)

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self._labels is not None:
                    self.monitor.labels(self._labels.drain())
                records = self.monitor.tick()
            self._dispatch(records)

    def _dispatch(self, records: list) -> None:
        """Records of closed windows to the gauges, the topics and the table."""
        for record in map(clean_record, records):
            self.records.append(record)
            if record["type"] == "monitoring" and self._gauges is not None:
                self._gauges.update(record)
            self._send(record)
            if self._table is not None:
                self._table.put(record)

    def _event_id(self, instance) -> Optional[str]:
        if isinstance(instance, dict):
            for field in self._id_fields:
                if instance.get(field) is not None:
                    return str(instance[field])
        return None

    def _send(self, record: dict) -> None:
        if self._producer is None:
            return
        key, value = encode_record(record)
        topics = [t for t in (self._settings.topic,
                              self._settings.alert_topic if record["type"] == "alert" else None) if t]
        for topic in topics:
            try:
                self._producer.send(topic, key=key, value=value).add_errback(
                    lambda e, t=topic: _LOGGER.warning("monitoring record to %s not delivered: %s", t, e))
            except Exception:  # pylint: disable=broad-except  # the server keeps serving
                _LOGGER.exception("monitoring record to %s not sent", topic)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(10)
        if self._labels is not None:
            self._labels.stop()
        if self._table is not None:
            self._table.close()
        if self._producer is not None:
            self._producer.flush(10)
            self._producer.close(10)
