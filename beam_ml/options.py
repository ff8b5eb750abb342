"""Every flag of beam_ml, declared once, and the PipelineOptions classes that group them.

    options = parse_pipeline_options(argv, TrainOptions, KafkaOptions)
    opts = options.view_as(TrainOptions).validated()

Beam parses every PipelineOptions subclass of the process with one parser, so a
flag two classes share (``--input`` is the train, predict and batch_predict
input) must mean the same thing everywhere. Each flag is therefore declared
exactly once, with its real default, by `flag()`; an options class only lists
the flags it uses. Declaring a flag again with a different definition raises
`FlagConflict` at import, and a flag Beam also defines (``--bootstrap_servers``)
must match Beam's default or parsing fails.

The same classes define the Dataflow Flex Template parameters (templates/flex.py)
and the ``--help`` of every pipeline: beam_ml's flags first, grouped, with
defaults, then Beam's. An unknown flag (one neither beam_ml nor Beam defines) is
an error, not a warning: a typo such as ``--epoch=5`` must not silently train
for the default count.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Mapping, Optional, Sequence, Type

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.formats import MESSAGE_FORMATS, OUTPUT_FORMATS, VALUE_FORMATS, value_format_name
from beam_ml.monitoring.config import MonitorSettings, parse_thresholds, parse_window
from beam_ml.monitoring.table import monitor_table
from beam_ml.redaction import SECRET_FLAGS, hide_secrets, secret_flag_value  # noqa: F401 (re-exported)

__all__ = [
    "FlagConflict",
    "flag",
    "declared_flags",
    "TrainOptions",
    "PredictOptions",
    "ServeOptions",
    "BatchPredictOptions",
    "StreamPredictOptions",
    "ProduceOptions",
    "KafkaOptions",
    "CsvReadOptions",
    "BigQueryOptions",
    "CleanOptions",
    "FeatureOptions",
    "WindowQueryOptions",
    "KafkaToBigQueryOptions",
    "KAFKA_TO_BIGQUERY_TEMPLATE_NAMES",
    "parse_pipeline_options",
    "parse_int_list",
    "secret_flag_value",
    "FLAG_ALIASES",
    "OutputOptions",
    "MonitorOptions",
    "MonitorReportOptions",
]


class FlagConflict(RuntimeError):
    """A flag declared twice with different definitions (a programming error, raised at import)."""


# name -> argparse keyword arguments (help included), in declaration order.
_FLAGS: dict[str, dict[str, Any]] = {}


def flag(name: str, **kwargs: Any) -> str:
    """Declares `--name` once for every options class that lists it.

    Args:
      name: the flag without dashes.
      **kwargs: argparse's add_argument keywords (default, type, choices, help, dest, action).

    Returns:
      The name, so declarations read as a list.

    Raises:
      FlagConflict: `name` was declared before with other keywords.
    """
    kwargs.setdefault("default", False if kwargs.get("action") == "store_true" else None)
    previous = _FLAGS.get(name)
    if previous is not None and previous != kwargs:
        raise FlagConflict(f"--{name} is declared twice with different definitions: {previous} vs {kwargs}")
    _FLAGS[name] = kwargs
    return name


def declared_flags() -> dict[str, dict[str, Any]]:
    """Every declared flag (name without dashes) and its argparse keywords, in declaration order."""
    return {name: dict(kwargs) for name, kwargs in _FLAGS.items()}


# ----------------------------------------------------------------- inputs
flag("input", help="CSV file(s): a path or glob (local or gs://), with a header row")
flag("input_topic", help="Kafka topic to read (JSON events; CSV lines or Avro with --value_format)")
flag("dataset", help="a bundled dataset: retention (the default for train), absenteeism, fraud, digits")
flag("data_dir", default="data", help="where bundled datasets are written")
flag("dataset_rows", type=int, help="rows to generate for a bundled dataset (default: its own size)")
flag("value_format", default="json", type=value_format_name, choices=[*VALUE_FORMATS, *MESSAGE_FORMATS],
     help="Kafka values: json (objects), csv (lines of the spec's columns in spec order), avro (bare binary of "
          "--avro_schema) or avro_confluent (Confluent wire format: magic byte, schema id, body; schemas from "
          "--schema_registry_url). Google's names AVRO_CONFLUENT_WIRE_FORMAT, AVRO_BINARY_ENCODING, JSON also work")
flag("schema_registry_url", help="Confluent Schema Registry http(s)://host:port, for --value_format=avro_confluent "
                                 "and --output_format=avro_confluent")
flag("schema_registry_user_info", help="USER:PASSWORD (HTTP Basic auth) for the schema registry; prefer "
                                       "--schema_registry_user_info_file or $SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
flag("schema_registry_user_info_file", help="a file holding the schema registry's USER:PASSWORD")
flag("schema_registry_ca_file", help="PEM CA file the schema registry's TLS certificate is checked against "
                                     "(default: the system's CAs)")
flag("output_format", default="json", choices=list(OUTPUT_FORMATS),
     help="output values: json, or avro_confluent (the schema registered under <topic>-value)")
flag("input_table", help="BigQuery table PROJECT:DATASET.TABLE to train from (read with Beam's ReadFromBigQuery, "
                          "Storage Read API); the spec is inferred from its schema and a sample")
flag("input_query", help="a standard-SQL query whose result is trained on (read with Beam's ReadFromBigQuery); "
                          "the spec is inferred from its result's schema and a sample")
flag("key_column", help="the column holding each row's id, carried to predictions (default: inferred)")

# --------------------------------------------------------- dataset spec
# Beam's GoogleCloudOptions owns --label (an alias of Dataflow's --labels), so the
# command line's --label is rewritten to --label_column (see FLAG_ALIASES).
flag("label_column", dest="label", help="the label column (--label works too); required with --input "
                                        "or --input_topic unless --spec is given")
flag("positive_label", help="binary/anomaly: the positive (anomalous) label value (default: yes/1/true-like, "
                            "else the minority class)")
flag("task", choices=["binary", "multiclass", "anomaly"], help="the task (default: from the label's values)")
flag("spec", help="a dataset spec JSON file (default: inferred from the input and written to output_dir)")
flag("drop_columns", default="", help="comma-separated columns to ignore")

# ---------------------------------------------------------- preprocessing
flag("output_dir", help="where artifacts go (default: out/<dataset or input name>)")
flag("test_fraction", type=float, default=0.2,
     help="fraction of good rows held out as the test split: never analyzed, trained or tuned on; every "
          "reported metric is on it")
flag("cv_folds", type=int, default=5,
     help="stratified folds of the non-test rows: --tune cross-validates over them; without --tune fold 0 is "
          "the validation split (early stopping, threshold, model choice)")
flag("split_seed", type=int, default=42, help="seed of the test and fold split hashes")
flag("max_bad_rows_fraction", type=float, default=0.01,
     help="fail the run when more than this fraction of rows is dead-lettered (after writing them)")
flag("preprocess_only", action="store_true", help="stop after writing the transformed TFRecords")

# ---------------------------------------------------------------- model
flag("hidden_units", default="auto",
     help="MLP layer sizes, comma-separated (\"\": a linear model; auto: 64,32 for up to 64 feature columns, "
          "wider for more, e.g. 256,128 for 784 pixels)")
flag("dropout", type=float, default=0.2, help="dropout rate after each hidden layer")
flag("optimizer", default="adam", choices=["adam", "sgd", "rmsprop", "adagrad", "lbfgs"],
     help="the optimizer (lbfgs: the linear model only, fitted exactly like scikit-learn's LogisticRegression)")
flag("learning_rate", type=float, default=1e-3, help="initial learning rate (halved on plateaus)")
flag("batch_size", type=int, default=0, help="rows per step; 0 = auto: train rows / 100, within 32..512")
flag("epochs", type=int, default=0,
     help="most epochs (early stopping usually ends sooner); 0 = auto: 30, or 50 for more than 64 feature columns")
flag("early_stopping_patience", type=int, default=5, help="epochs without val_loss improvement before stopping")
flag("class_weights", default="auto", choices=["auto", "balanced", "none"],
     help="auto: balanced weights when the rarest class is < 1/3 as frequent as the commonest")
flag("seed", type=int, default=42, help="model initialisation and shuffling seed")

# --------------------------------------------------------------- tuning
flag("tune", action="store_true",
     help="search parameter sets with k-fold cross-validation (one Beam element per set and fold), then retrain "
          "the best on all non-test rows")
flag("param_grid", help="the search space: a JSON object of lists ('{\"dropout\": [0, 0.2]}') or a .json/.yaml "
                        "file; keys: hidden_units (\"64,32\", \"\" = linear), dropout, optimizer, learning_rate, "
                        "batch_size, epochs, class_weights, l2 (default: a small space around the model flags)")
flag("search", default="grid", choices=["grid", "random"], help="every parameter set, or --max_trials random ones")
flag("max_trials", type=int, default=0, help="most parameter sets to try (0: all of the grid; random: 10)")
flag("tune_metric", choices=["roc_auc", "pr_auc", "accuracy", "f1", "recall_at_precision"],
     help="validation metric that picks the model (default: roc_auc binary, pr_auc anomaly, accuracy multiclass)")
flag("target_precision", type=float, default=0.9, help="the precision recall_at_precision is measured at")
flag("selection_rule", default="one_se", choices=["one_se", "best"],
     help="which candidate is exported: one_se = the simplest (linear first) whose validation score is within one "
          "standard error of the best; best = the highest validation score")
flag("final_fit", default="all", choices=["all", "non_test"],
     help="the served model: all = after the test evaluation, refit the chosen settings on every good row "
          "(test metrics stay those measured before the refit); non_test = the model the test split evaluated")
flag("trial_threads", type=int, default=0,
     help="TensorFlow threads per trial (0: 1 when trials run in parallel processes, else TensorFlow's default)")
flag("verbose", type=int, nargs="?", const=2, default=0, choices=[0, 1, 2],
     help="print everything: TensorFlow's C++ logs, Keras' per-epoch lines (--verbose=1: progress bars), Beam's "
          "INFO logs (default: quiet, progress lines and a summary)")

# -------------------------------------------------------------- serving
flag("model_dir", help="an exported model: a model root (its latest version is served), "
                       "a train output dir, or one version dir (pinned)")
flag("json", dest="json_records", help="a JSON object or a list of objects to score")
flag("output", help="predictions file: .jsonl (or .json) or .csv")
flag("output_topic", help="Kafka topic for predictions (JSON)")
flag("dead_letter", help="dead-letter file (JSON lines); default <output>.dead_letter.jsonl")
flag("dead_letter_topic", help="Kafka topic for dead letters (JSON, with the reason and where each came from)")
flag("min_batch_size", type=int, default=1, help="RunInference's smallest batch")
flag("max_batch_size", type=int, default=256,
     help="the largest batch scored at once (stream_predict: records per Kafka poll, each poll one batch)")
flag("model_reload", default="poll", choices=["poll", "side_input", "none"],
     help="hot reload of new model versions: poll the model root inside RunInference (every runner), "
          "side_input (runners with streaming side inputs, e.g. Dataflow), or none (pin the version found at start)")
flag("reload_interval", type=float, default=10.0, help="seconds between checks for a new model version")
flag("server", help="URL of a running `python -m pipelines.serve` (e.g. http://127.0.0.1:8501): score there "
                    "instead of loading TensorFlow here")
flag("model_name", default="model", help="the model's name in the server's URLs (/v1/models/NAME), as in TF Serving")
flag("host", help="address the server binds (default 127.0.0.1; 0.0.0.0 when AIP_HTTP_PORT is set, on Vertex AI)")
flag("port", type=int, help="port the server listens on (default $AIP_HTTP_PORT, else 8501)")
flag("batch_timeout_micros", type=int, default=0,
     help="server batching: once the model finishes a batch, how long to wait for the next one to fill up to "
          "--max_batch_size (microseconds; a request arriving while the model is idle never waits)")
flag("max_request_bytes", type=int, default=8 * 1024 * 1024, help="largest request body the server accepts (413)")
flag("drain_timeout", type=float, default=30.0,
     help="on SIGTERM, seconds the server waits for requests in flight before it exits")

# ---------------------------------------------------------------- Kafka
# Beam's KafkaStreamsRunnerOptions defines the same flag: same meaning, same default.
flag("bootstrap_servers", default="localhost:9092", help="Kafka brokers, host:port[,host:port]")
flag("kafka_config", help="Kafka client settings file (Java .properties or .json): bootstrap.servers, "
                          "security.protocol, sasl.*, ssl.*; preferred over --sasl_password, which shows up "
                          "wherever options are printed")
flag("security_protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
     help="Kafka security protocol (default PLAINTEXT)")
flag("sasl_mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
     help="SASL mechanism for SASL_SSL/SASL_PLAINTEXT")
flag("sasl_username", help="SASL user name")
flag("sasl_password", help="SASL password (prefer --sasl_password_file, --sasl_password_env or --kafka_config; "
                            "a flag value is kept out of the options Beam displays)")
flag("sasl_password_file", help="a file whose first line is the SASL password")
flag("sasl_password_env", help="an environment variable holding the SASL password")
flag("ssl_cafile", help="PEM CA certificate to verify the brokers with (their host name is checked too)")
flag("ssl_certfile", help="PEM client certificate, for mutual TLS")
flag("ssl_keyfile", help="PEM client private key, for mutual TLS (may be encrypted: --ssl_password)")
flag("ssl_password", help="password of an encrypted --ssl_keyfile (a flag value is kept out of the options "
                          "Beam displays; ssl.key.password in --kafka_config works too)")
flag("group_id", help="Kafka consumer group: start from its committed offsets and commit after each bundle's "
                      "outputs are written (none: nothing is committed)")
flag("start", default="committed",
     help="where a partition starts: committed (the group's offset, else the earliest), earliest, latest, "
          "or a timestamp in ms")
flag("max_records", type=int, help="stop after this many records in total over every partition (as Beam's "
                                   "max_num_records); a topic that holds them ends the run once they are read")
flag("timestamp_policy", default="create_time", choices=["create_time", "log_append_time", "processing_time"],
     help="each event's time (event_ts): the producer's timestamp, the broker's (topics configured for "
          "LogAppendTime), or when it is read; a record without that timestamp gets the processing time, "
          "marked and counted (beam_ml.read/timestamp_fallbacks)")
flag("max_read_time", type=float, help="stop reading after this many seconds")
flag("checkpoint_interval", type=float, default=2.0,
     help="seconds a partition's read runs before handing back to the runner (and committing); each hand-back "
          "costs the local runner ~0.1 s")
flag("poll_timeout", type=float, default=0.5, help="seconds one Kafka poll waits for records")
flag("topic", help="destination Kafka topic")
flag("compression_type", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"],
     help="compression of the records this job writes to Kafka (records read may use any of these codecs)")
flag("rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
flag("limit", type=int, help="send at most this many events")
flag("flush_timeout", type=float, default=60.0, help="seconds to wait for the broker's acknowledgements")

# ------------------------------------------------------------ CSV input
flag("delimiter", help="CSV field separator: a character or comma, semicolon, tab, pipe "
                       "(default: detected from the header and a sample, then the spec's)")
flag("encoding", help="text encoding of the input files, e.g. latin-1, cp1252 (default: utf-8, BOM or not)")
flag("compression", help="input compression: auto, uncompressed, gzip, bzip2, zstd, deflate, lzma "
                         "(default: auto, from each file's extension)")

# ------------------------------------------------------------- BigQuery
BIGQUERY_CREATE_DISPOSITIONS = ("CREATE_IF_NEEDED", "CREATE_NEVER")
BIGQUERY_WRITE_DISPOSITIONS = ("WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_EMPTY")
flag("bigquery_endpoint",
     help="an emulator or private BigQuery REST endpoint, http(s)://HOST:PORT (default: Google's); "
          "the pipeline announces it when it starts")
flag("bigquery_storage_endpoint",
     help="HOST:PORT of the BigQuery Storage Read API (plain gRPC) that goes with --bigquery_endpoint; "
          "needed to read tables there")
flag("create_disposition", default="CREATE_IF_NEEDED", choices=list(BIGQUERY_CREATE_DISPOSITIONS),
     help="output tables: create them from the schema if needed, or never")
flag("write_disposition", default="WRITE_APPEND", choices=list(BIGQUERY_WRITE_DISPOSITIONS),
     help="output tables: append; truncate or require empty (bounded runs, file loads)")

# ------------------------------------------------------------- cleaning
flag("sql", help="a ksqlDB-style SELECT over `events` (the input as read), or a .sql file holding one; e.g. "
                 "SELECT c.*, u.CITY FROM events c LEFT JOIN users u ON c.userid = u.userid "
                 "WHERE c.Class IS NOT NULL")
flag("lookup", action="append", help="NAME=SOURCE of a table the statement joins: a CSV path, kafka:TOPIC (latest "
                                     "value per key; a null value deletes the key). Repeat for more tables")
flag("lookup_refresh", type=float, help="seconds between reloads of changed lookups while a stream runs "
                                        "(default: never)")
flag("features_sql", help="windowed features (ksqlDB): SELECT card_id, COUNT(*) AS tx_10m, SUM(Amount) AS amount_10m "
                          "FROM events WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY card_id, or a "
                          ".sql file; each event gets its key's aggregates over earlier events in its window "
                          "(docs/WINDOWED_FEATURES.md). Stored with the model; serving applies it")
flag("window_sql", help="a persistent windowed query (ksqlDB): [CREATE TABLE t AS] SELECT card_id, COUNT(*) AS n, "
     "SUM(Amount) AS total FROM events WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY card_id "
     "[EMIT CHANGES], or a .sql file holding one")
flag("event_time_column", help="the column of event times --features_sql windows by: epoch milliseconds or ISO-8601")

# ------------------------------------------------------ Kafka -> BigQuery
flag("output_table", help="BigQuery table PROJECT:DATASET.TABLE the rows are written to")
flag("dead_letter_table", help="BigQuery dead-letter table PROJECT:DATASET.TABLE (default: <output_table>_error_records): "
                               "Google's error-record columns plus stage, source_topic, partition and offset")
flag("avro_schema", help="an Avro schema file (.avsc): Kafka values are Avro binary (schemaless) of that record "
                         "schema, which also gives the table's columns; with --value_format=avro_confluent, the "
                         "reader schema (default: the latest version of <topic>-value)")
flag("bounded", action="store_true",
     help="read a snapshot (every partition up to its end at launch) and load it with BigQuery file loads; "
          "offsets are committed once the run has succeeded")
flag("with_kafka_metadata", action="store_true",
     help="add the columns event_ts (the record timestamp), topic, partition, offset and key (the Kafka key as text)")
flag("insert_batch_size", type=int, default=500, help="rows per BigQuery streaming insert request")
flag("schema_sample", type=int, default=1000,
     help="records read from the start of the topic(s) to infer the table's columns, when neither --spec, "
          "--model_dir nor --avro_schema gives them")

# Google's template authentication parameters. Secret ids are read as local files or env:NAME
# (Secret Manager is not reachable here); stores may be JKS or PKCS12 (converted with pyjks).
flag("kafka_read_authentication_mode", choices=["NONE", "TLS", "SASL_PLAIN", "SASL_SCRAM_512"],
     help="as Google's template: SASL_PLAIN = SASL_SSL + PLAIN, SASL_SCRAM_512 = SASL_SSL + SCRAM-SHA-512, "
          "TLS = SSL (with a keystore: mutual TLS)")
for _name, _help in (("username_secret_id", "SASL_PLAIN user"), ("password_secret_id", "SASL_PLAIN password"),
                     ("sasl_scram_username_secret_id", "SASL_SCRAM_512 user"),
                     ("sasl_scram_password_secret_id", "SASL_SCRAM_512 password"),
                     ("truststore_password_secret_id", "truststore password"),
                     ("keystore_password_secret_id", "keystore password"),
                     ("key_password_secret_id", "client key password"),
                     ("sasl_scram_truststore_password_secret_id", "SASL_SCRAM_512 truststore password")):
    flag(f"kafka_read_{_name}", help=f"the {_help}: a local file holding it, or env:NAME")
flag("kafka_read_truststore_location", help="JKS/PKCS12 (or PEM) truststore of the brokers' CA (TLS, SASL_PLAIN)")
flag("kafka_read_keystore_location", help="JKS/PKCS12 keystore with the client key and certificate (TLS)")
flag("kafka_read_sasl_scram_truststore_location", help="JKS/PKCS12 truststore for SASL_SCRAM_512")
KAFKA_TEMPLATE_AUTH_FLAGS = ("kafka_read_authentication_mode", "kafka_read_username_secret_id",
                             "kafka_read_password_secret_id", "kafka_read_sasl_scram_username_secret_id",
                             "kafka_read_sasl_scram_password_secret_id", "kafka_read_truststore_location",
                             "kafka_read_truststore_password_secret_id", "kafka_read_keystore_location",
                             "kafka_read_keystore_password_secret_id", "kafka_read_key_password_secret_id",
                             "kafka_read_sasl_scram_truststore_location",
                             "kafka_read_sasl_scram_truststore_password_secret_id")

# Google's Kafka-to-BigQuery Dataflow template names its parameters in camelCase; beam_ml
# accepts them as aliases of its own flags, and the kafka_to_bigquery Flex Template
# metadata shows them (templates/flex.py).
KAFKA_TO_BIGQUERY_TEMPLATE_NAMES = {
    "bootstrap_servers": "bootstrapServers",
    "input_topic": "inputTopic",
    "output_table": "outputTableSpec",
    "dead_letter_table": "outputDeadletterTable",
    "group_id": "consumerGroupId",
    "start": "kafkaReadOffset",
    "create_disposition": "createDisposition",
    "write_disposition": "writeDisposition",
    "value_format": "messageFormat",
    "schema_registry_url": "schemaRegistryConnectionUrl",
    **{name: "".join(w.capitalize() if i else w for i, w in enumerate(name.split("_")))
       for name in KAFKA_TEMPLATE_AUTH_FLAGS},
}

# How a Kafka reader's values are decoded (beam_ml.formats.format_from_flags).
_RECORD_FORMAT_FLAGS = ("value_format", "avro_schema", "schema_registry_url", "schema_registry_user_info",
                        "schema_registry_user_info_file", "schema_registry_ca_file")

# Flags whose natural name Beam already uses for something else, and other names a flag is known by.
FLAG_ALIASES = {"--label": "--label_column",
                **{f"--{alias}": f"--{name}" for name, alias in KAFKA_TO_BIGQUERY_TEMPLATE_NAMES.items()}}


def _add_flags(cls, parser) -> None:
    """Adds cls.FLAGS, in one argument group, to whatever parser Beam builds.

    Each options class is a direct PipelineOptions subclass (Beam's
    get_all_options, which Dataflow uses to ship options, only sees those) and
    sets ``_add_argparse_args = classmethod(_add_flags)``.
    """
    group = parser.add_argument_group(cls.GROUP)
    existing = {o: a for a in parser._actions for o in a.option_strings}
    for name in cls.FLAGS:
        kwargs = _FLAGS[name]
        action = existing.get(f"--{name}")
        if action is not None:
            # Another class (ours: the same declaration; or Beam's) added it first.
            if action.default != kwargs["default"]:
                raise FlagConflict(f"--{name}: beam_ml's default {kwargs['default']!r} differs from the one "
                                   f"already declared ({action.default!r})")
            continue
        group.add_argument(f"--{name}", **kwargs)


class TrainOptions(PipelineOptions):
    """Flags of `python -m pipelines.train`."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml training"
    FLAGS = ("input", "input_topic", "input_table", "input_query", "dataset", "data_dir", "dataset_rows",
             "label_column", "positive_label",
             "task", "spec", "key_column", "drop_columns", "output_dir", "test_fraction", "cv_folds", "split_seed",
             "max_bad_rows_fraction", "preprocess_only", "hidden_units", "dropout", "optimizer", "learning_rate",
             "batch_size", "epochs", "early_stopping_patience", "class_weights", "seed", "verbose", "tune",
             "param_grid", "search", "max_trials", "tune_metric", "target_precision", "selection_rule", "final_fit",
             "trial_threads", "bigquery_endpoint", "bigquery_storage_endpoint", *_RECORD_FORMAT_FLAGS)

    def validated(self) -> "TrainOptions":
        """Checks the values; raises UserError naming the flag."""
        inputs = [f"--{n}" for n in ("input", "dataset", "input_topic", "input_table") if getattr(self, n)]
        inputs += ["--input_query"] if self.input_query is not None else []
        if len(inputs) > 1:
            raise UserError(f"{' and '.join(inputs)} are exclusive: give one input")
        if self.input_query is not None and not self.input_query.strip():
            raise UserError("--input_query: empty query")
        if (self.input or self.input_topic) and not (self.label or self.spec):
            what = "column" if self.input else "field"
            raise UserError(f"--label: required with --{'input' if self.input else 'input_topic'} "
                            f"(the {what} to predict), unless --spec is given")
        if (self.input_table or self.input_query is not None) and not (self.label or self.spec):
            raise UserError(f"--label: required with --{'input_table' if self.input_table else 'input_query'} "
                            "(the column to predict), unless --spec is given")
        if not 0.0 < self.test_fraction < 1.0:
            raise UserError(f"--test_fraction: expected a value in (0, 1), got {self.test_fraction}")
        if not 2 <= self.cv_folds <= 50:
            raise UserError(f"--cv_folds: expected 2..50 folds, got {self.cv_folds}")
        if self.max_trials < 0:
            raise UserError(f"--max_trials: expected >= 0 (0: all), got {self.max_trials}")
        if not 0.0 < self.target_precision < 1.0:
            raise UserError(f"--target_precision: expected a value in (0, 1), got {self.target_precision}")
        if self.trial_threads < 0:
            raise UserError(f"--trial_threads: expected >= 0 (0: auto), got {self.trial_threads}")
        if self.param_grid and not self.tune:
            raise UserError("--param_grid: only applies with --tune")
        if not 0.0 <= self.max_bad_rows_fraction <= 1.0:
            raise UserError(f"--max_bad_rows_fraction: expected a value in [0, 1], got {self.max_bad_rows_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout: expected a value in [0, 1), got {self.dropout}")
        if self.batch_size < 0:
            raise UserError(f"--batch_size: expected >= 0 (0 = auto), got {self.batch_size}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate: expected a positive value, got {self.learning_rate}")
        if self.epochs < 0:
            raise UserError(f"--epochs: expected a positive count (0 = auto), got {self.epochs}")
        if self.early_stopping_patience < 0:
            raise UserError(f"--early_stopping_patience: expected >= 0, got {self.early_stopping_patience}")
        if self.dataset_rows is not None and self.dataset_rows <= 0:
            raise UserError(f"--dataset_rows: expected a positive count, got {self.dataset_rows}")
        self.hidden_unit_list  # noqa: B018 (parsing is the check)
        return self

    @property
    def hidden_unit_list(self) -> Optional[list[int]]:
        """The MLP layer sizes; [] (a linear model) for "", "0" or "linear"; None for auto (sized to the input)."""
        if str(self.hidden_units).strip().lower() == "auto":
            return None
        if str(self.hidden_units).strip().lower() in ("", "0", "linear"):
            return []
        return parse_int_list(self.hidden_units, "--hidden_units")

    @property
    def drop_column_list(self) -> list[str]:
        return [d.strip() for d in self.drop_columns.split(",") if d.strip()]


class PredictOptions(PipelineOptions):
    """Flags of `python -m pipelines.predict`."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml predict"
    FLAGS = ("model_dir", "json", "input", "server", "model_name")

    def validated(self) -> "PredictOptions":
        if not self.model_dir and not self.server:
            raise UserError("--model_dir: required (or --server=URL of a running model server)")
        if self.model_dir and self.server:
            raise UserError("--server: give either --model_dir (score here) or --server (score there), not both")
        if bool(self.json_records) == bool(self.input):
            raise UserError("give exactly one of --json or --input")
        return self


class ServeOptions(PipelineOptions):
    """Flags of `python -m pipelines.serve` (Vertex AI's AIP_* variables fill in what is not given)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml model server"
    FLAGS = ("model_dir", "model_name", "host", "port", "max_batch_size", "batch_timeout_micros",
             "max_request_bytes", "reload_interval", "drain_timeout")

    def validated(self, environ: Optional[Mapping[str, str]] = None) -> "ServeOptions":
        """Checks the flags; fills --model_dir, --port and --host from Vertex AI's variables when not given."""
        env = os.environ if environ is None else environ
        if not self.model_dir:
            self.model_dir = env.get("AIP_STORAGE_URI")
        if not self.model_dir:
            raise UserError("--model_dir: required (or set AIP_STORAGE_URI)")
        if self.port is None:
            aip_port = env.get("AIP_HTTP_PORT")
            try:
                self.port = int(aip_port) if aip_port else 8501
            except ValueError:
                raise UserError(f"AIP_HTTP_PORT: expected a port number, got {aip_port!r}")
        if self.host is None:
            self.host = "0.0.0.0" if env.get("AIP_HTTP_PORT") else "127.0.0.1"
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port: expected 0..65535, got {self.port}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.model_name or ""):
            raise UserError(f"--model_name: expected letters, digits, '_', '.', '-', got {self.model_name!r}")
        for name, low in (("max_batch_size", 1), ("batch_timeout_micros", 0), ("max_request_bytes", 1)):
            if getattr(self, name) < low:
                raise UserError(f"--{name}: expected >= {low}, got {getattr(self, name)}")
        for name in ("reload_interval", "drain_timeout"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name}: expected seconds > 0, got {getattr(self, name)}")
        _check_model_dir(self)
        return self


def _check_batch_sizes(opts) -> None:
    if opts.min_batch_size < 1 or opts.max_batch_size < opts.min_batch_size:
        raise UserError(f"--min_batch_size/--max_batch_size: expected 1 <= min <= max, "
                        f"got {opts.min_batch_size}, {opts.max_batch_size}")


def _check_model_dir(opts) -> None:
    if not opts.model_dir:
        raise UserError("--model_dir: required (e.g. out/fraud/model)")

    if not fs.exists(opts.model_dir):
        raise UserError(f"--model_dir: not found: {opts.model_dir}")


class BatchPredictOptions(PipelineOptions):
    """Flags of `python -m pipelines.batch_predict` (Kafka connection flags: KafkaOptions)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml batch prediction"
    FLAGS = ("model_dir", "input", "input_topic", *_RECORD_FORMAT_FLAGS, "group_id", "start", "output",
             "output_topic", "dead_letter", "dead_letter_topic", "min_batch_size", "max_batch_size", "output_table",
             "dead_letter_table", "bigquery_endpoint", "create_disposition", "write_disposition")

    def validated(self) -> "BatchPredictOptions":
        if bool(self.input) == bool(self.input_topic):
            raise UserError("--input or --input_topic: give exactly one")
        outputs = [f"--{n}" for n in ("output", "output_topic", "output_table") if getattr(self, n)]
        if len(outputs) != 1:
            raise UserError("--output, --output_topic or --output_table: give exactly one"
                            + (f" (got {' and '.join(outputs)})" if outputs else ""))
        if self.dead_letter_table and not self.output_table:
            raise UserError("--dead_letter_table: only applies with --output_table")
        if self.output_table and (self.dead_letter or self.dead_letter_topic):
            raise UserError("--dead_letter/--dead_letter_topic: with --output_table dead letters go to "
                            "--dead_letter_table (default <output_table>_error_records)")
        if self.output and not self.output.lower().endswith((".jsonl", ".json", ".csv")):
            raise UserError(f"--output: expected a .jsonl or .csv file name, got {self.output}")
        if self.dead_letter and self.dead_letter_topic:
            raise UserError("--dead_letter and --dead_letter_topic are exclusive: give one")
        if self.output_topic and not (self.dead_letter or self.dead_letter_topic):
            raise UserError("--dead_letter or --dead_letter_topic: required with --output_topic")
        if self.group_id and not self.input_topic:
            raise UserError("--group_id: only applies to --input_topic")
        _check_start(self.start)
        _check_batch_sizes(self)
        _check_model_dir(self)
        return self

    def dead_letter_path(self) -> Optional[str]:
        """The dead-letter file, or None when dead letters go to a topic or a table."""
        if self.dead_letter or self.dead_letter_topic or self.output_table:
            return self.dead_letter
        stem = self.output.rsplit(".", 1)[0]
        return stem + ".dead_letter.jsonl"


def _check_start(start: str) -> None:
    if start not in ("committed", "earliest", "latest") and not str(start).isdigit():
        raise UserError(f"--start: expected committed, earliest, latest or a timestamp in ms, got {start!r}")


def _check_stream_read(opts) -> None:
    """--max_records, --max_read_time, --max_batch_size, --checkpoint_interval, --poll_timeout of a streaming read."""
    if opts.max_records is not None and opts.max_records <= 0:
        raise UserError(f"--max_records: expected a positive count, got {opts.max_records}")
    if opts.max_read_time is not None and opts.max_read_time <= 0:
        raise UserError(f"--max_read_time: expected positive seconds, got {opts.max_read_time}")
    if opts.max_batch_size < 1:
        raise UserError(f"--max_batch_size: expected a positive count, got {opts.max_batch_size}")
    for name in ("checkpoint_interval", "poll_timeout"):
        if not 0 < getattr(opts, name) <= 60:
            raise UserError(f"--{name}: expected seconds in (0, 60], got {getattr(opts, name)}")


class StreamPredictOptions(PipelineOptions):
    """Flags of `python -m pipelines.stream_predict` (Kafka connection flags: KafkaOptions)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml stream prediction"
    FLAGS = ("model_dir", "input_topic", *_RECORD_FORMAT_FLAGS, "output_topic", "output_format", "dead_letter_topic",
             "group_id", "start", "max_records", "max_read_time", "timestamp_policy", "model_reload", "reload_interval", "max_batch_size",
             "checkpoint_interval", "poll_timeout", "compression_type", "output_table", "dead_letter_table",
             "bigquery_endpoint", "create_disposition")

    def validated(self) -> "StreamPredictOptions":
        if not self.input_topic:
            raise UserError("--input_topic: required")
        if not (self.output_topic or self.output_table):
            raise UserError("--output_topic or --output_table: required (either or both)")
        if self.output_topic and not self.output_table and not self.dead_letter_topic:
            raise UserError("--dead_letter_topic: required with --output_topic (or give --output_table, whose "
                            "dead letters go to --dead_letter_table)")
        if self.dead_letter_table and not self.output_table:
            raise UserError("--dead_letter_table: only applies with --output_table")
        if self.output_format != "json" and (self.output_table or not self.output_topic):
            raise UserError(f"--output_format={self.output_format}: only applies to --output_topic alone "
                            "(BigQuery rows are written as JSON)")
        _check_model_dir(self)
        _check_start(self.start)
        if self.reload_interval < 0:
            raise UserError(f"--reload_interval: expected >= 0 seconds, got {self.reload_interval}")
        _check_stream_read(self)
        return self


class ProduceOptions(PipelineOptions):
    """Flags of `python -m pipelines.produce` (Kafka connection flags: KafkaOptions)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml produce"
    FLAGS = ("input", "dataset", "data_dir", "dataset_rows", "topic", "key_column", "rate", "limit", "flush_timeout",
             "compression_type", "output_format", "schema_registry_url", "schema_registry_user_info",
             "schema_registry_user_info_file", "schema_registry_ca_file")

    def validated(self) -> "ProduceOptions":
        if bool(self.input) == bool(self.dataset):
            raise UserError("--input or --dataset: give exactly one")
        if not self.topic:
            raise UserError("--topic: required")
        if self.rate < 0:
            raise UserError(f"--rate: expected events per second >= 0, got {self.rate}")
        if self.limit is not None and self.limit < 0:
            raise UserError(f"--limit: expected a count >= 0, got {self.limit}")
        return self


class OutputOptions(PipelineOptions):
    """What every command prints (see beam_ml.logs); parse_pipeline_options adds it to every pipeline's classes."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml output"
    FLAGS = ("verbose",)


class KafkaOptions(PipelineOptions):
    """Flags for reaching a Kafka cluster; every value can also come from --kafka_config (flags win)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml Kafka connection"
    FLAGS = ("bootstrap_servers", "kafka_config", "security_protocol", "sasl_mechanism", "sasl_username",
             "sasl_password", "sasl_password_file", "sasl_password_env", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
             "ssl_password")


class CsvReadOptions(PipelineOptions):
    """How CSV input is read (default: detected at training, then the spec's dialect; see beam_ml.io.dialect)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml CSV input"
    FLAGS = ("delimiter", "encoding", "compression")


class BigQueryOptions(PipelineOptions):
    """BigQuery connection and output-table flags (see beam_ml.io.bigquery)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml BigQuery"
    FLAGS = ("bigquery_endpoint", "bigquery_storage_endpoint", "create_disposition", "write_disposition")


class CleanOptions(PipelineOptions):
    """The cleaning statement and its lookup tables (see beam_ml.clean)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml cleaning (ksqlDB-style SQL)"
    FLAGS = ("sql", "lookup", "lookup_refresh")


class FeatureOptions(PipelineOptions):
    """Windowed features (see beam_ml.features): train, batch_predict and stream_predict."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml windowed features (ksqlDB WINDOW ... GROUP BY)"
    FLAGS = ("features_sql", "event_time_column")


class WindowQueryOptions(PipelineOptions):
    """Flags of `python -m pipelines.window_query` (Kafka connection flags: KafkaOptions)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml persistent windowed query (ksqlDB CREATE TABLE ... WINDOW ... EMIT CHANGES)"
    FLAGS = ("window_sql", "event_time_column", "input_topic", "output_topic", "dead_letter_topic", "group_id", "start",
             "max_records", "max_read_time", "timestamp_policy", "max_batch_size", "checkpoint_interval",
             "poll_timeout", "compression_type")

    def validated(self) -> "WindowQueryOptions":
        """Checks the values; raises UserError naming the flag."""
        for name in ("window_sql", "input_topic", "output_topic", "dead_letter_topic"):
            if not getattr(self, name):
                raise UserError(f"--{name}: required")
        _check_start(self.start)
        _check_stream_read(self)
        return self


class KafkaToBigQueryOptions(PipelineOptions):
    """Flags of `python -m pipelines.kafka_to_bigquery` (also: KafkaOptions, BigQueryOptions, CleanOptions).

    Google's template parameter names (KAFKA_TO_BIGQUERY_TEMPLATE_NAMES: bootstrapServers,
    inputTopic, outputTableSpec, outputDeadletterTable...) are accepted as aliases.
    """

    _add_argparse_args = classmethod(_add_flags)

    GROUP = "beam_ml Kafka to BigQuery"
    FLAGS = ("input_topic", "output_table", "dead_letter_table", *_RECORD_FORMAT_FLAGS, "spec", "model_dir",
             "schema_sample", "group_id", "start", "bounded", "max_records", "max_read_time", "checkpoint_interval",
             "poll_timeout", "with_kafka_metadata", "insert_batch_size") + KAFKA_TEMPLATE_AUTH_FLAGS

    def validated(self) -> "KafkaToBigQueryOptions":
        """Checks the values; raises UserError naming the flag."""
        if not self.topics:
            raise UserError("--input_topic: required (a topic, or several separated by commas)")
        if not self.output_table:
            raise UserError("--output_table: required (PROJECT:DATASET.TABLE)")
        given = [f"--{n}" for n in ("spec", "model_dir", "avro_schema") if getattr(self, n)]
        if len(given) > 1:
            raise UserError(f"{' and '.join(given)} are exclusive: each gives the table's columns; give one")
        if self.avro_schema and self.value_format == "csv":
            raise UserError(f"--value_format={self.value_format}: values are Avro with --avro_schema; "
                            "drop one of the two")
        if self.value_format == "csv" and not (self.spec or self.model_dir):
            raise UserError("--value_format=csv: CSV lines carry no field names; give --spec or --model_dir "
                            "(the columns in spec order)")
        if self.model_dir:
            _check_model_dir(self)
        _check_start(self.start)
        if self.max_records is not None and self.max_records <= 0:
            raise UserError(f"--max_records: expected a positive count, got {self.max_records}")
        if self.max_read_time is not None and self.max_read_time <= 0:
            raise UserError(f"--max_read_time: expected positive seconds, got {self.max_read_time}")
        for name in ("checkpoint_interval", "poll_timeout"):
            if not 0 < getattr(self, name) <= 60:
                raise UserError(f"--{name}: expected seconds in (0, 60], got {getattr(self, name)}")
        if not 1 <= self.insert_batch_size <= 50000:
            raise UserError(f"--insert_batch_size: expected 1..50000 rows (BigQuery's limit per request), "
                            f"got {self.insert_batch_size}")
        if self.schema_sample <= 0:
            raise UserError(f"--schema_sample: expected a positive count, got {self.schema_sample}")
        return self

    @property
    def topics(self) -> list[str]:
        """The --input_topic value split at commas."""
        return [t.strip() for t in (self.input_topic or "").split(",") if t.strip()]


def parse_int_list(text: str, name: str) -> list[int]:
    """Parses "64,32" into [64, 32]; raises UserError naming the flag."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name}: expected comma-separated integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise UserError(f"{name}: expected positive integers, got {text!r}")
    return values


def _apply_aliases(argv: Sequence[str]) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(FLAG_ALIASES[name] + eq + value if name in FLAG_ALIASES else arg)
    return out


class _ErrorRaisingParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit(2)
        raise UserError(message)


def _all_option_classes() -> list[Type[PipelineOptions]]:
    seen, stack = [], [PipelineOptions]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default when it has a real one (not None, False or empty)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, "", argparse.SUPPRESS) and "(default" not in text:
            text += " (default: %(default)s)"
        return text


def _print_help(prog: str, option_classes: Sequence[Type[PipelineOptions]], description: str) -> None:
    """beam_ml's flags of this pipeline first (grouped, with defaults), then Beam's own."""
    parser = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                     formatter_class=_HelpFormatter,
                                     usage=f"{prog} [--flag=value ...]", conflict_handler="resolve")
    parser.add_argument("--help", "-h", action="store_true", help="show this help and exit")
    for cls in option_classes:
        cls._add_argparse_args(parser)
    beam_classes = [c for c in _all_option_classes()
                    if c.__module__.startswith("apache_beam.") and c not in option_classes]
    for cls in beam_classes:
        group_parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
        try:
            cls._add_argparse_args(group_parser)
        except Exception:  # an optional Beam extension that cannot describe itself here
            continue
        known = {o for a in parser._actions for o in a.option_strings}
        actions = [a for a in group_parser._actions if a.option_strings and not set(a.option_strings) & known]
        if not actions:
            continue
        group = parser.add_argument_group(f"Beam: {cls.__name__}")
        for a in actions:
            group._add_action(a)
    sys.stdout.write(parser.format_help())
    sys.stdout.flush()


def parse_pipeline_options(argv: Optional[Sequence[str]], *option_classes: Type[PipelineOptions],
                           prog: str = "", description: str = "") -> PipelineOptions:
    """Parses argv into PipelineOptions, rejecting flags no options class defines.

    `--help` (or `-h`) prints the usage -- beam_ml's flags of `option_classes`
    first, grouped, with defaults, then Beam's -- and exits with status 0.

    Args:
      argv: the command line (without the program name).
      option_classes: beam_ml options classes of this pipeline (for strict
        value checks and the help).
      prog: the program name shown by --help (e.g. "python -m pipelines.train").
      description: one line shown by --help.

    Returns:
      The PipelineOptions; view it as each class with `.view_as(cls)`.

    Raises:
      UserError: naming the unknown or malformed flag.
      SystemExit: after printing the help.
    """
    argv = hide_secrets(_apply_aliases(argv or []))
    option_classes = tuple(dict.fromkeys((*option_classes, OutputOptions)))
    if "--help" in argv or "-h" in argv:
        _print_help(prog or "python -m pipelines.<name>", option_classes, description)
        raise SystemExit(0)
    # Beam's classes first, ours last: ours check what is already declared.
    parser = _ErrorRaisingParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in sorted(_all_option_classes(), key=lambda c: c.__module__ == __name__):
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            # Two of Beam's own classes may declare the same flag; Beam itself lets
            # the first win. Ours never do (see _add_flags).
            if cls.__module__ == __name__:
                raise
    _, unknown = parser.parse_known_args(argv)
    flags = [u for u in unknown if u.startswith("-")]
    if flags:
        raise UserError(f"unknown flag {flags[0].split('=')[0]} (see --help)")
    if unknown:
        raise UserError(f"unexpected argument {unknown[0]!r}: flags look like --name=value")
    # Parse each of our classes strictly so a bad value names its flag.
    for cls in option_classes:
        p = _ErrorRaisingParser(allow_abbrev=False, add_help=False)
        cls._add_argparse_args(p)
        p.parse_known_args(argv)
    return PipelineOptions(argv)


# --monitor (beam_ml.monitoring): stream_predict, batch_predict; pipelines.monitor reads the same.
flag("monitor", action="store_true",
     help="watch the model's inputs and scores per window against its training statistics (docs/MONITORING.md)")
flag("monitor_window", default="1000", help="a monitoring window: a count of events (1000) or a duration (30s, 5m)")
flag("monitor_topic", help="Kafka topic for monitoring records (one per window) and alert records (JSON)")
flag("monitor_table", help="BigQuery table PROJECT:DATASET.TABLE for monitoring and alert records (one row each, "
                           "a kind column tells them apart; created if missing; --bigquery_endpoint applies)")
flag("alert_topic", help="Kafka topic that also receives every alert record")
flag("monitor_thresholds",
     help="alert thresholds: a .json/.yaml file or key=value pairs (numeric=0.3, categorical=0.3, score=0.3, "
          "<metric>=x, <feature>=x, <feature>:<metric>=x); defaults: Vertex AI's 0.3 for JS and L-infinity")
flag("label_topic", help="Kafka topic of delayed labels {\"event_id\": ..., \"label\": ...}, joined to predictions "
                         "for live precision, recall and ROC-AUC")
flag("metrics_port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)")
flag("metrics_host", default="127.0.0.1", help="the address /metrics listens on")


class MonitorOptions(PipelineOptions):
    """--monitor and its settings."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml monitoring"
    FLAGS = ("monitor", "monitor_window", "monitor_topic", "monitor_table", "alert_topic", "monitor_thresholds",
             "label_topic", "metrics_port", "metrics_host", "bigquery_endpoint")

    def validated(self) -> Optional[MonitorSettings]:
        """The settings with --monitor, else None (and no other monitor flag may be given).

        Raises:
          UserError: one line naming the flag.
        """
        given = [f for f in self.FLAGS[1:] if f not in ("monitor_window", "metrics_port", "metrics_host",
                                                        "bigquery_endpoint")
                 and getattr(self, f)]
        if not self.monitor:
            if given:
                raise UserError(f"--{given[0]}: only applies with --monitor")
            return None
        if not 0 <= self.metrics_port <= 65535:
            raise UserError(f"--metrics_port: expected a port in 0..65535, got {self.metrics_port}")
        return MonitorSettings(window=parse_window(self.monitor_window),
                               thresholds=parse_thresholds(self.monitor_thresholds), topic=self.monitor_topic,
                               table=self.monitor_destination(), alert_topic=self.alert_topic,
                               label_topic=self.label_topic,
                               metrics_port=self.metrics_port, metrics_host=self.metrics_host)

    def monitor_destination(self):
        """--monitor_table (with --bigquery_endpoint, --project) as a beam_ml.monitoring.table.MonitorTable, or None.

        Raises:
          UserError: a malformed table or endpoint, naming the flag.
        """
        if not self.monitor_table:
            return None
        return monitor_table(self.monitor_table, self.view_as(GoogleCloudOptions).project,
                             self.bigquery_endpoint or None)


class MonitorReportOptions(PipelineOptions):
    """The shared flags `python -m pipelines.monitor` reads: the model, and the CSV and HTML of a static report."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml monitor pages"
    FLAGS = ("model_dir", "input", "output")
