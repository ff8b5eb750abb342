"""The PipelineOptions classes that group beam_ml's flags (declared once, in beam_ml.flags), and their parsing.

    options = parse_pipeline_options(argv, TrainOptions, KafkaOptions)
    opts = options.view_as(TrainOptions).validated()

Beam parses every PipelineOptions subclass of the process with one parser, so a
flag two classes share (``--input`` is the train, predict and batch_predict
input) must mean the same thing everywhere. Each flag is therefore declared
exactly once, with its real default, by `flag()` (beam_ml.flags: importable
without Beam, so --help, a typo and pipelines.predict need no Beam); an options
class only lists the flags it uses. Declaring a flag again with a different definition raises
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
from typing import Mapping, Optional, Sequence, Type

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.flags import (_FLAGS, _RECORD_FORMAT_FLAGS, BIGQUERY_CREATE_DISPOSITIONS,  # noqa: F401 (re-exported)
                           BIGQUERY_WRITE_DISPOSITIONS, CLEAN, CSV_READ, FEATURES, FLAG_ALIASES, KAFKA,
                           KAFKA_TEMPLATE_AUTH_FLAGS, KAFKA_TO_BIGQUERY_TEMPLATE_NAMES, OUTPUT, PREDICT, TRAIN,
                           FlagConflict, FlagGroup, _apply_aliases, _ErrorRaisingParser, check_predict_flags,
                           check_values, declared_flags, flag, help_parser, parse_int_list)
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

    GROUP, FLAGS = TRAIN

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

    GROUP, FLAGS = PREDICT

    def validated(self) -> "PredictOptions":
        return check_predict_flags(self)


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
    GROUP, FLAGS = OUTPUT


class KafkaOptions(PipelineOptions):
    """Flags for reaching a Kafka cluster; every value can also come from --kafka_config (flags win)."""

    _add_argparse_args = classmethod(_add_flags)

    GROUP, FLAGS = KAFKA


class CsvReadOptions(PipelineOptions):
    """How CSV input is read (default: detected at training, then the spec's dialect; see beam_ml.io.dialect)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP, FLAGS = CSV_READ


class BigQueryOptions(PipelineOptions):
    """BigQuery connection and output-table flags (see beam_ml.io.bigquery)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP = "beam_ml BigQuery"
    FLAGS = ("bigquery_endpoint", "bigquery_storage_endpoint", "create_disposition", "write_disposition")


class CleanOptions(PipelineOptions):
    """The cleaning statement and its lookup tables (see beam_ml.clean)."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP, FLAGS = CLEAN


class FeatureOptions(PipelineOptions):
    """Windowed features (see beam_ml.features): train, batch_predict and stream_predict."""

    _add_argparse_args = classmethod(_add_flags)
    GROUP, FLAGS = FEATURES


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


def _all_option_classes() -> list[Type[PipelineOptions]]:
    seen, stack = [], [PipelineOptions]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def _print_help(prog: str, option_classes: Sequence[Type[PipelineOptions]], description: str) -> None:
    """beam_ml's flags of this pipeline first (grouped, with defaults), then Beam's own."""
    parser = help_parser(prog, [FlagGroup(cls.GROUP, cls.FLAGS) for cls in option_classes], description)
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
    check_values(argv, [FlagGroup(cls.GROUP, cls.FLAGS) for cls in option_classes])
    return PipelineOptions(argv)


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
