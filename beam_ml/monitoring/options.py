"""The --monitor flags, shared by stream_predict and batch_predict (and the monitor's own flags).

    options = parse_pipeline_options(argv, StreamPredictOptions, KafkaOptions, MonitorOptions)
    settings = options.view_as(MonitorOptions).validated()    # None without --monitor
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml.errors import UserError
from beam_ml.monitoring.config import Thresholds, WindowSpec, parse_thresholds, parse_window
from beam_ml.options import _add_flags, flag

__all__ = ["MonitorOptions", "MonitorSettings", "MonitorReportOptions"]

flag("monitor", action="store_true",
     help="watch the model's inputs and scores per window against its training statistics (docs/MONITORING.md)")
flag("monitor_window", default="1000", help="a monitoring window: a count of events (1000) or a duration (30s, 5m)")
flag("monitor_topic", help="Kafka topic for monitoring records (one per window) and alert records (JSON)")
flag("monitor_table", help="BigQuery table (project:dataset.table) for monitoring and alert records")
flag("alert_topic", help="Kafka topic that also receives every alert record")
flag("monitor_thresholds",
     help="alert thresholds: a .json/.yaml file or key=value pairs (numeric=0.3, categorical=0.3, score=0.3, "
          "<metric>=x, <feature>=x, <feature>:<metric>=x); defaults: Vertex AI's 0.3 for JS and L-infinity")
flag("label_topic", help="Kafka topic of delayed labels {\"event_id\": ..., \"label\": ...}, joined to predictions "
                         "for live precision, recall and ROC-AUC")
flag("metrics_port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)")
flag("metrics_host", default="127.0.0.1", help="the address /metrics listens on")


@dataclasses.dataclass
class MonitorSettings:
    window: WindowSpec
    thresholds: Thresholds
    topic: Optional[str]
    table: Optional[str]
    alert_topic: Optional[str]
    label_topic: Optional[str]
    metrics_port: int
    metrics_host: str


class MonitorOptions(PipelineOptions):
    """--monitor and its settings."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml monitoring"
    FLAGS = ("monitor", "monitor_window", "monitor_topic", "monitor_table", "alert_topic", "monitor_thresholds",
             "label_topic", "metrics_port", "metrics_host")

    def validated(self) -> Optional[MonitorSettings]:
        """The settings with --monitor, else None (and no other monitor flag may be given).

        Raises:
          UserError: one line naming the flag.
        """
        given = [f for f in self.FLAGS[1:] if f not in ("monitor_window", "metrics_port", "metrics_host")
                 and getattr(self, f)]
        if not self.monitor:
            if given:
                raise UserError(f"--{given[0]}: only applies with --monitor")
            return None
        if self.monitor_table:
            raise UserError("--monitor_table: writing monitoring records to BigQuery is not supported yet; use "
                            "--monitor_topic")
        if not 0 <= self.metrics_port <= 65535:
            raise UserError(f"--metrics_port: expected a port in 0..65535, got {self.metrics_port}")
        return MonitorSettings(window=parse_window(self.monitor_window),
                               thresholds=parse_thresholds(self.monitor_thresholds), topic=self.monitor_topic,
                               table=self.monitor_table, alert_topic=self.alert_topic, label_topic=self.label_topic,
                               metrics_port=self.metrics_port, metrics_host=self.metrics_host)


class MonitorReportOptions(PipelineOptions):
    """The shared flags `python -m pipelines.monitor` reads: the model, and the CSV and HTML of a static report."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml monitor pages"
    FLAGS = ("model_dir", "input", "output")
