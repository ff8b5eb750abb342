"""The model server job: flags (and Vertex AI's AIP_* variables) -> a ServerConfig and the cleaning, then serve.

    python -m pipelines.serve --model_dir=out/fraud --port=8501

The server itself (`beam_ml.server`) takes explicit arguments; this is where
the flags are read, once: ServeOptions for the server, CleanOptions and the
Kafka flags for the model's stored cleaning statement and its lookups (as
stream_predict applies them).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import server
from beam_ml.errors import UserError
from beam_ml.features.live import live_state
from beam_ml.jobs.features import serving_features
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.jobs.sql import serving_cleaning
from beam_ml.model_store import model_root_of, resolve_version_dir
from beam_ml.monitoring.beam import plan_monitor
from beam_ml.monitoring.listener import MonitorListener
from beam_ml.options import CleanOptions, MonitorOptions, ServeOptions
from beam_ml.server import BatchListener, ServerConfig

__all__ = ["server_config", "serve"]

_LOGGER = logging.getLogger(__name__)


def server_config(options: PipelineOptions, environ: Optional[Mapping[str, str]] = None) -> ServerConfig:
    """The ServerConfig of the flags; Vertex AI's variables fill in what the flags leave out.

    Raises:
      UserError: a bad flag, naming it.
    """
    env = os.environ if environ is None else environ
    o = options.view_as(ServeOptions).validated(env)
    return ServerConfig(model_dir=o.model_dir, model_name=o.model_name, host=o.host, port=o.port,
                        max_batch_size=o.max_batch_size, batch_timeout=o.batch_timeout_micros / 1e6,
                        max_request_bytes=o.max_request_bytes, reload_interval=o.reload_interval,
                        drain_timeout=o.drain_timeout, health_route=env.get("AIP_HEALTH_ROUTE") or None,
                        predict_route=env.get("AIP_PREDICT_ROUTE") or None)


def serve(options: PipelineOptions, ready=None, batch_listeners: Sequence[BatchListener] = ()) -> int:
    """Serves until SIGTERM/SIGINT; returns the exit status.

    Args:
      options: the parsed flags (ServeOptions, CleanOptions, FeatureOptions, KafkaOptions).
      ready: called with the bound port once listening.
      batch_listeners: `fn(version, instances, results)` per scored batch (e.g. a --monitor's).

    Raises:
      UserError: a bad flag, model directory or cleaning statement, before anything listens.
    """
    config = server_config(options)
    kafka = kafka_client_config(options)
    monitor = plan_monitor(options.view_as(MonitorOptions).validated(), config.model_dir)
    if monitor is not None:  # --monitor: the served version's windows, records and alerts (beam_ml.monitoring)
        listener = MonitorListener(monitor, resolve_version_dir(config.model_dir),
                                   kafka.client_kwargs() if monitor.topic or monitor.alert_topic or monitor.label_topic
                                   else None,
                                   source=config.model_name, model_root=model_root_of(config.model_dir))
        batch_listeners = [*batch_listeners, listener]
    else:
        listener = None

    def cleaning_for(spec) -> Any:
        return serving_cleaning(options, spec, kafka_config=kafka, log=_LOGGER.warning)

    def features_for(spec) -> Any:
        # The model's stored windowed-feature statement (or --features_sql): one window state per statement in
        # this process, kept across hot reloads (docs/WINDOWED_FEATURES.md, "The model server").
        plan = serving_features(options, spec, log=_LOGGER.warning)
        if plan is None:
            return None
        if spec.cleaning or options.view_as(CleanOptions).sql:
            raise UserError("--features_sql: not supported together with a --sql statement yet")
        return live_state(f"serve:{plan.event_time_column}:{plan.sql}", plan)

    try:
        return server.serve(config, cleaning_for, ready, batch_listeners, features_for)
    finally:
        if listener is not None:  # what the monitor still holds: to its topics and table before exit
            listener.close()
