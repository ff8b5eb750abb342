"""Every flag of beam_ml, declared once, and what can be done with them without importing Beam.

    check_flags(argv, [TRAIN, KAFKA], prog="python -m pipelines.train")   # --help, typos, bad values: no Beam
    args = parse_flags(argv, [PREDICT], prog="python -m pipelines.predict")  # an argparse.Namespace, no Beam

Each flag is declared exactly once, with its real default, by `flag()`; the
PipelineOptions classes of `beam_ml.options` (Beam parses every one of them with
one parser) list the flags they use, and so do the `FlagGroup`s here. Declaring
a flag again with a different definition raises `FlagConflict` at import.

Why this module imports no Beam: importing apache_beam costs 1.5-4 s, which a
user pays for `--help`, a mistyped flag, or scoring one row with
`pipelines.predict`. `check_flags` answers the first two from this table and
BEAM_FLAGS (the names Beam's own option classes define, for the installed Beam
version; tests/test_flags.py checks them against Beam's parser), so a pipeline
imports Beam only once its flags parse clean.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple, Optional, Sequence

from beam_ml.errors import UserError
from beam_ml.formats import MESSAGE_FORMATS, OUTPUT_FORMATS, VALUE_FORMATS, value_format_name


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


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default when it has a real one (not None, False or empty)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, "", argparse.SUPPRESS) and "(default" not in text:
            text += " (default: %(default)s)"
        return text


class FlagGroup(NamedTuple):
    """A titled group of flags: one section of --help (an options class of beam_ml.options lists the same)."""
    title: str
    names: tuple


TRAIN = FlagGroup("beam_ml training", (
    "input", "input_topic", "input_table", "input_query", "dataset", "data_dir", "dataset_rows", "label_column",
    "positive_label", "task", "spec", "key_column", "drop_columns", "output_dir", "test_fraction", "cv_folds",
    "split_seed", "max_bad_rows_fraction", "preprocess_only", "hidden_units", "dropout", "optimizer",
    "learning_rate", "batch_size", "epochs", "early_stopping_patience", "class_weights", "seed", "verbose", "tune",
    "param_grid", "search", "max_trials", "tune_metric", "target_precision", "selection_rule", "final_fit",
    "trial_threads", "bigquery_endpoint", "bigquery_storage_endpoint", *_RECORD_FORMAT_FLAGS))
PREDICT = FlagGroup("beam_ml predict", ("model_dir", "json", "input", "server", "model_name"))
OUTPUT = FlagGroup("beam_ml output", ("verbose",))
KAFKA = FlagGroup("beam_ml Kafka connection", (
    "bootstrap_servers", "kafka_config", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "sasl_password_file", "sasl_password_env", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"))
CSV_READ = FlagGroup("beam_ml CSV input", ("delimiter", "encoding", "compression"))
CLEAN = FlagGroup("beam_ml cleaning (ksqlDB-style SQL)", ("sql", "lookup", "lookup_refresh"))
FEATURES = FlagGroup("beam_ml windowed features (ksqlDB WINDOW ... GROUP BY)", ("features_sql", "event_time_column"))

# The flags Beam's own PipelineOptions classes define (apache_beam.options.pipeline_options), for the
# Beam version below: `python -m beam_ml.flags` prints them again. With another installed Beam,
# check_flags leaves unknown flags to Beam's parser (slower, still exact).
BEAM_VERSION = "2.77.0"
BEAM_FLAGS = frozenset((
    'allow_non_deterministic_key_coders', 'allow_unsafe_triggers', 'application_id', 'artifact_endpoint',
    'artifact_port', 'artifacts_dir', 'auto_unique_labels', 'autoscaling_algorithm', 'azure_connection_string',
    'azure_managed_identity_client_id', 'beam_plugin', 'beam_plugins', 'beam_services', 'blob_service_endpoint',
    'bootstrap_servers', 'cloud_build_machine_type', 'create_from_snapshot', 'dataflow_endpoint',
    'dataflow_job_file', 'dataflow_kms_key', 'dataflow_service_option', 'dataflow_service_options',
    'default_sdk_harness_log_level', 'direct_embed_docker_python', 'direct_num_workers',
    'direct_runner_bundle_repeat', 'direct_running_mode', 'direct_test_splits', 'disable_beartype',
    'disk_provisioned_iops', 'disk_provisioned_throughput_mibps', 'disk_size_gb', 'disk_type',
    'docker_registry_push_url', 'dry_run', 'element_processing_timeout_minutes', 'enable_artifact_caching',
    'enable_bucket_read_metric_counter', 'enable_bucket_write_metric_counter', 'enable_gcsio_blob_generation',
    'enable_hot_key_logging', 'enable_streaming_engine', 'environment_cache_millis', 'environment_config',
    'environment_option', 'environment_options', 'environment_type', 'exclude_infer_dataclass_field_type',
    'expansion_port', 'experiment', 'experiments', 'extra_package', 'extra_packages', 'file_to_stage',
    'files_to_stage', 'flexrs_goal', 'flink_job_server_jar', 'flink_master', 'flink_submit_uber_jar',
    'flink_version', 'force_cloudpickle_deterministic_coders', 'gbek', 'gcp_oauth_scope', 'gcp_oauth_scopes',
    'gcs_custom_audit_entries', 'gcs_custom_audit_entry', 'hdfs_full_urls', 'hdfs_host', 'hdfs_port', 'hdfs_user',
    'impersonate_service_account', 'jar_cache_dir', 'job-server-timeout', 'job_endpoint', 'job_name', 'job_port',
    'job_server_java_launcher', 'job_server_jvm_properties', 'job_server_jvm_property', 'job_server_timeout',
    'kafka_streams_job_server_jar', 'label', 'labels', 'machine_type', 'maven_repository_url',
    'max_cache_memory_usage_mb', 'max_num_workers', 'max_parallelism', 'min_cpu_platform', 'network', 'no_auth',
    'no_direct_runner_use_stacked_bundle', 'no_gcsio_throttling_counter', 'no_pipeline_type_check',
    'no_save_main_session', 'no_use_public_ips', 'no_wait_until_finish', 'num_workers',
    'number_of_worker_harness_threads', 'on_success_matcher', 'output_executable_path', 'parallelism',
    'performance_runtime_type_check', 'pickle_library', 'prebuild_sdk_container_base_image',
    'prebuild_sdk_container_engine', 'prism_beam_version_override', 'prism_location', 'prism_log_kind',
    'prism_log_level', 'profile_cpu', 'profile_location', 'profile_memory', 'profile_postprocess_interval_sec',
    'profile_sample_rate', 'profile_temp_location', 'profile_upload_interval_sec', 'profiler_agent',
    'profiler_extra_arg', 'profiler_extra_args', 'profiler_extra_env_var', 'profiler_extra_env_vars',
    'profiler_stop_after_crash', 'profiler_stop_after_sec', 'project', 'pubsub_root_url', 'region',
    'requirements_cache', 'requirements_cache_only_sources', 'requirements_file', 'resource_hint', 'resource_hints',
    'runner', 'runtime_type_check', 's3_access_key_id', 's3_api_version', 's3_disable_ssl', 's3_endpoint_url',
    's3_region_name', 's3_secret_access_key', 's3_session_token', 's3_verify', 'save_main_session',
    'sdk_container_image', 'sdk_harness_container_image_overrides', 'sdk_harness_log_level_overrides',
    'sdk_location', 'sdk_worker_parallelism', 'service_account_email', 'setup_file', 'spark_job_server_jar',
    'spark_master_url', 'spark_rest_url', 'spark_submit_uber_jar', 'spark_version', 'staging_location', 'streaming',
    'subnetwork', 'temp_location', 'template_location', 'transform_name_mapping', 'type_check_additional',
    'type_check_strictness', 'update', 'update_compatibility_version', 'use_public_ips', 'use_transform_service',
    'user_agent', 'wait_until_finish_duration', 'worker_disk_type', 'worker_harness_container_image',
    'worker_machine_type', 'worker_region', 'worker_zone', 'zone',
))


def _installed_beam_flags() -> Optional[frozenset]:
    """BEAM_FLAGS if the installed Beam is the version they were taken from, else None (no Beam import)."""
    from importlib import metadata  # deferred: only for an unknown flag

    try:
        return BEAM_FLAGS if metadata.version("apache-beam") == BEAM_VERSION else None
    except metadata.PackageNotFoundError:
        return None


def add_group(parser: argparse.ArgumentParser, group: FlagGroup) -> None:
    """Adds `group`'s flags, in one argument group, to `parser` (a flag it already has is left as it is)."""
    section = parser.add_argument_group(group.title)
    existing = {o for a in parser._actions for o in a.option_strings}
    for name in group.names:
        if f"--{name}" not in existing:
            section.add_argument(f"--{name}", **_FLAGS[name])


def help_parser(prog: str, groups: Sequence[FlagGroup], description: str) -> argparse.ArgumentParser:
    """The --help parser: beam_ml's flags of `groups`, grouped, with their defaults."""
    parser = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                     formatter_class=_HelpFormatter,
                                     usage=f"{prog} [--flag=value ...]", conflict_handler="resolve")
    parser.add_argument("--help", "-h", action="store_true", help="show this help and exit")
    for group in groups:
        add_group(parser, group)
    return parser


def check_values(argv: Sequence[str], groups: Sequence[FlagGroup]) -> None:
    """Parses `argv` strictly for each group's flags (others are ignored), so a bad value names its flag.

    Raises:
      UserError: e.g. "argument --epochs: invalid int value: 'five'".
    """
    for group in groups:
        parser = _ErrorRaisingParser(allow_abbrev=False, add_help=False)
        add_group(parser, group)
        parser.parse_known_args(argv)


def _unknown_flag(argv: Sequence[str]) -> Optional[str]:
    """The first --flag neither beam_ml nor Beam defines; None when there is none or Beam's parser must decide."""
    names = [a[2:].partition("=")[0] for a in argv if a.startswith("--") and len(a) > 2]
    unknown = [n for n in names if n not in _FLAGS]
    if not unknown:
        return None
    beam = _installed_beam_flags()
    if beam is None:
        return None
    return next((f"--{n}" for n in unknown if n not in beam), None)


def check_flags(argv: Optional[Sequence[str]], groups: Sequence[FlagGroup], prog: str,
                description: str = "") -> list[str]:
    """What a pipeline checks before importing Beam: --help, unknown flags, malformed values of `groups`.

    `--help` (or `-h`) prints beam_ml's flags of `groups` and exits 0; `--help_all`
    is left for Beam's parser (beam_ml.options.parse_pipeline_options prints
    Beam's flags too).

    Returns:
      argv, as a list, when it holds no --help and no flag beam_ml or Beam would reject.

    Raises:
      UserError: naming the unknown or malformed flag.
      SystemExit: after printing the help.
    """
    argv = _apply_aliases(argv or [])
    groups = list(dict.fromkeys([*groups, OUTPUT]))
    if "--help" in argv or "-h" in argv:
        sys.stdout.write(help_parser(prog, groups, description).format_help())
        sys.stdout.write(f"\nBeam's own flags (--runner, --project, --temp_location, ...) are accepted too; "
                         f"{prog} --help_all lists them.\n")
        sys.stdout.flush()
        raise SystemExit(0)
    if "--help_all" in argv:
        return [("--help" if a == "--help_all" else a) for a in argv]
    unknown = _unknown_flag(argv)
    if unknown:
        raise UserError(f"unknown flag {unknown} (see --help)")
    check_values(argv, groups)
    return argv


def parse_flags(argv: Optional[Sequence[str]], groups: Sequence[FlagGroup], prog: str,
                description: str = "") -> argparse.Namespace:
    """Parses the flags of a command that runs no Beam pipeline (pipelines.predict), without importing Beam.

    Beam's own flags are accepted and ignored, as Beam's parser would accept them.

    Raises:
      UserError: naming the unknown or malformed flag, or a stray argument.
      SystemExit: after printing the help.
    """
    argv = check_flags(argv, groups, prog, description)
    if "--help" in argv:  # --help_all: there are no Beam flags that mean anything here
        return parse_flags(["--help"], groups, prog, description)
    parser = _ErrorRaisingParser(allow_abbrev=False, add_help=False)
    for group in [*groups, OUTPUT]:
        add_group(parser, group)
    args, rest = parser.parse_known_args(argv)
    i = 0
    while i < len(rest):
        if not rest[i].startswith("--"):
            raise UserError(f"unexpected argument {rest[i]!r}: flags look like --name=value")
        # Another pipeline's or Beam's flag (check_flags knows it), maybe with its value next.
        i += 2 if "=" not in rest[i] and i + 1 < len(rest) and not rest[i + 1].startswith("-") else 1
    return args


def check_predict_flags(opts):
    """Checks pipelines.predict's flags (an argparse.Namespace or PredictOptions); returns `opts`.

    Raises:
      UserError: naming the flag.
    """
    if not opts.model_dir and not opts.server:
        raise UserError("--model_dir: required (or --server=URL of a running model server)")
    if opts.model_dir and opts.server:
        raise UserError("--server: give either --model_dir (score here) or --server (score there), not both")
    if bool(opts.json_records) == bool(opts.input):
        raise UserError("give exactly one of --json or --input")
    return opts


def beam_option_names() -> frozenset:
    """The flags Beam's own PipelineOptions classes define, from Beam's parser (imports Beam: for tests and tools)."""
    from apache_beam.options.pipeline_options import PipelineOptions  # deferred: Beam (the point of this module)

    names, stack, seen = set(), [PipelineOptions], set()
    while stack:
        for cls in stack.pop().__subclasses__():
            if cls in seen:
                continue
            seen.add(cls)
            stack.append(cls)
            if not cls.__module__.startswith("apache_beam."):
                continue
            parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
            try:
                cls._add_argparse_args(parser)
            except Exception:  # pylint: disable=broad-except  # an optional extension that cannot describe itself
                continue
            names.update(o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--"))
    return frozenset(names)


if __name__ == "__main__":  # prints BEAM_FLAGS for the installed Beam, to paste above after an upgrade
    import apache_beam

    print(f"BEAM_VERSION = {apache_beam.__version__!r}\nBEAM_FLAGS = frozenset({sorted(beam_option_names())!r})")
