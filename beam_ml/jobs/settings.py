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
from beam_ml.io.kafka.config import KafkaClientConfig
from beam_ml.options import BigQueryOptions, CsvReadOptions, KafkaOptions

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


# KafkaClientConfig field -> the flag that sets it, for error messages.
_KAFKA_FLAG_FOR_FIELD = {
    "bootstrap_servers": "--bootstrap_servers",
    "security_protocol": "--security_protocol",
    "sasl_mechanism": "--sasl_mechanism",
    "sasl_plain_username": "--sasl_username",
    "sasl_plain_password": "--sasl_password",
    "ssl_cafile": "--ssl_cafile",
}


def kafka_client_config(options: PipelineOptions):
    """The validated `KafkaClientConfig` of the Kafka flags and --kafka_config file.

    A flag given on the command line wins over the file; --bootstrap_servers'
    default (localhost:9092) applies only when neither sets it.

    Raises:
      UserError: naming the flag (or the file key) that is wrong.
    """
    opts = options.view_as(KafkaOptions)
    given = options.get_all_options(drop_default=True)
    try:
        config = KafkaClientConfig.load(
            opts.kafka_config,
            bootstrap_servers=given.get("bootstrap_servers"),
            security_protocol=opts.security_protocol,
            sasl_mechanism=opts.sasl_mechanism,
            sasl_plain_username=opts.sasl_username,
            sasl_plain_password=opts.sasl_password,
            ssl_cafile=opts.ssl_cafile,
        )
        if not config.bootstrap_servers:
            config = config.with_overrides(bootstrap_servers=opts.bootstrap_servers)

        def label(field: str) -> str:
            name = _KAFKA_FLAG_FOR_FIELD.get(field)
            if not opts.kafka_config:
                return name or field
            in_file = f"{field} in --kafka_config {opts.kafka_config}"
            return f"{name} (or {in_file})" if name else in_file

        return config.validate(label=label)
    except ValueError as e:
        raise UserError(str(e))
