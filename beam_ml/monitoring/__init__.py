"""Monitoring: the model's inputs and predictions, per window, against what it was trained on.

    stats = read_training_statistics(version_dir)         # stored by the train job with the model
    monitor = WindowMonitor(stats, parse_window("1000"), parse_thresholds("Amount=0.1"))
    records = monitor.observe(rows, predictions)           # monitoring + alert records of closed windows

Modules: `stats` (training statistics, their JSON), `drift` (JS divergence,
L-infinity, PSI, the window accumulator), `config` (--monitor_window,
--monitor_thresholds), `window` (windows -> records and alerts, delayed
labels), `beam` (the Beam pieces for train and serving), `prom` (/metrics),
`report` (the dashboard and the static drift report). See docs/MONITORING.md.
"""
from beam_ml.monitoring.config import SCORE_FEATURE, Thresholds, WindowSpec, parse_thresholds, parse_window
from beam_ml.monitoring.drift import WindowAccumulator, js_divergence, linf_distance, psi
from beam_ml.monitoring.stats import (STATISTICS_FILE, TrainingStatistics, read_training_statistics,
                                      training_statistics_from_columns, write_training_statistics)
from beam_ml.monitoring.window import LabelJoin, WindowMonitor, alerts_for

__all__ = ["SCORE_FEATURE", "Thresholds", "WindowSpec", "parse_thresholds", "parse_window", "WindowAccumulator",
           "js_divergence", "linf_distance", "psi", "STATISTICS_FILE", "TrainingStatistics",
           "read_training_statistics", "training_statistics_from_columns", "write_training_statistics",
           "LabelJoin", "WindowMonitor", "alerts_for"]
