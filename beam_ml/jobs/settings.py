"""Flags -> the explicit arguments the library takes: where the jobs read their options.

The IO and library modules take plain arguments, as Beam's own IOs do (a
`BigQueryEndpoint`, a `KafkaClientConfig`, CSV dialect keywords), never a
`PipelineOptions`; the jobs translate the parsed flags here, once.

    endpoint = bigquery_endpoint(options)      # None: Google's BigQuery
    kafka = kafka_client_config(options)       # validated, flags over --kafka_config
    csv_flags = csv_dialect_flags(options)     # --delimiter/--encoding/--compression given
"""
from __future__ import annotations

from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml.errors import UserError
from beam_ml.io.bigquery import BigQueryEndpoint
from beam_ml.io.dialect import Dialect
from beam_ml.io.kafka.config import KafkaClientConfig, config_from_flags
from beam_ml.options import BigQueryOptions, CsvReadOptions, secret_flag_value

__all__ = ["bigquery_endpoint", "kafka_client_config", "csv_dialect_flags"]


def bigquery_endpoint(options: PipelineOptions) -> Optional[BigQueryEndpoint]:
    """The endpoint named by --bigquery_endpoint (+ --bigquery_storage_endpoint), or None for Google's."""
    o = options.view_as(BigQueryOptions)
    if not o.bigquery_endpoint:
        if o.bigquery_storage_endpoint:
            raise UserError("--bigquery_storage_endpoint: only meaningful with --bigquery_endpoint")
        return None
    return BigQueryEndpoint(o.bigquery_endpoint, o.bigquery_storage_endpoint or None)


def csv_dialect_flags(options: PipelineOptions) -> dict:
    """The CSV flags that were given, validated: keyword arguments for ReadCsvBatches / infer_spec."""
    o = options.view_as(CsvReadOptions)
    given = {k: getattr(o, k) for k in ("delimiter", "encoding", "compression") if getattr(o, k) is not None}
    d = Dialect().replace(**given)  # raises UserError naming the flag
    return {k: getattr(d, k) for k in given}


def kafka_client_config(options: PipelineOptions) -> KafkaClientConfig:
    """The validated `KafkaClientConfig` of the Kafka flags, --kafka_config file and template parameters.

    See `beam_ml.io.kafka.config.config_from_flags` (flags over the file; passwords from a flag,
    a file or an environment variable); when Kafka settings were given it also runs the
    pre-flight connection check, so a refused login ends the run here, in one line.

    Raises:
      UserError: naming the flag (or the file key) that is wrong, or the broker's refusal.
    """
    values = {name: secret_flag_value(value) for name, value in options.get_all_options().items()}
    try:
        return config_from_flags(values, options.get_all_options(drop_default=True))
    except ValueError as e:
        raise UserError(str(e))
