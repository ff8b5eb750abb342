"""--sql in the train, batch_predict and stream_predict jobs: flags -> the statement each job applies.

Training (CSV input):

    plan = plan_training_sql(options, input_csv, output_dir, spec_path, infer_kwargs, csv_flags)  # None without --sql
    spec = plan.spec                 # inferred from the statement's output over the inference sample,
                                     # with `cleaning` (statement, lookups' names/sources/schemas) stored in it
    source = CleanCsvSource(pattern, plan.spec, plan.cleaning)   # -> build_preprocess(source=...)

Serving (batch and streaming):

    cleaning = serving_cleaning(options, spec)   # the model's stored statement, or --sql (with a warning)
    fn = CleanToLayoutFn(cleaning, read_spec, source=path)   # events batch -> model-layout batch + dead letters

The Beam steps and the typing of events and of the statement's output are the
library's (`beam_ml.clean.layout`); this module reads the flags.

What is stored (`DatasetSpec.cleaning`, so spec.json and the exported model's
beam_ml.json): the statement's `to_dict()` (text, events schema, lookups'
keys/joins/schemas, output schema) plus `lookup_sources` (name -> the
--lookup value used at training), from which serving re-opens each lookup
unless a --lookup flag names it again.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv

from beam_ml import fs
from beam_ml.clean.cleaning import Cleaning, prepare_cleaning
from beam_ml.clean.engine import Engine
from beam_ml.clean.layout import events_schema_for_csv, events_schema_for_spec, sample_events, strings_for_csv
from beam_ml.clean.lookups import lookup_from_flag, parse_lookup_flag
from beam_ml.clean.statement import Statement, schema_from_json
from beam_ml.errors import UserError
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.dialect import detect_dialect
from beam_ml.jobs.settings import bigquery_endpoint, kafka_client_config
from beam_ml.options import CleanOptions
from beam_ml.spec import DEFAULT_NA_VALUES, DatasetSpec, infer_spec

__all__ = ["cleaning_record", "lookup_arguments", "serving_cleaning", "TrainingSql", "plan_training_sql",
           "cleaned_sample"]

_LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------- stored statement
def cleaning_record(cleaning: Cleaning, lookup_flags: Sequence[str]) -> dict:
    """What training stores with the spec and the model: the statement and where each lookup came from."""
    record = cleaning.statement.to_dict()
    sources = dict(parse_lookup_flag(v) for v in lookup_flags or ())
    # A local file is recorded by its absolute path: serving may run from another directory.
    sources = {n: (os.path.abspath(s) if ":" not in s and os.path.isfile(s) else s) for n, s in sources.items()}
    record["lookup_sources"] = {name: sources.get(name, "") for name in record["lookups"]}
    return record


def lookup_arguments(kafka_config: Any, options=None) -> dict:
    """What lookups need to connect: the Kafka client config, the BigQuery endpoint (if any)."""
    out = {"client_config": kafka_config} if kafka_config is not None else {}
    endpoint = bigquery_endpoint(options) if options is not None else None
    if endpoint is not None:
        out["bigquery_endpoint"] = endpoint
    return out


def serving_cleaning(options, spec: DatasetSpec, events_schema: Optional[pa.Schema] = None,
                     kafka_config: Any = None, log=None) -> Optional[Cleaning]:
    """The statement a serving pipeline applies: the model's stored one by default, --sql overriding it.

    Args:
      options: parsed options with CleanOptions.
      spec: the served model's spec (its `cleaning`, if any).
      events_schema: the input's schema when the model stored none (a --sql on
        a model trained without one); default: `events_schema_for_spec(spec)`.
      kafka_config: client config for kafka: lookups.
      log: where the override warning goes (besides logging).

    Raises:
      UserError: a bad --sql/--lookup, or a stored statement that no longer fits (its lookups changed).
    """
    opts = options.view_as(CleanOptions)
    stored = spec.cleaning
    lookup_options = lookup_arguments(kafka_config, options)
    if opts.sql:
        if stored:
            message = ("--sql overrides the statement stored with the model (training and serving may now clean "
                       "differently)")
            _LOGGER.warning(message)
            if log is not None:
                log(f"[beam_ml] WARNING: {message}")
        events = (schema_from_json(stored["events_schema"]) if stored else None) or events_schema \
            or events_schema_for_spec(spec)
        return prepare_cleaning(opts, events, position_column=LINE_COLUMN, **lookup_options)
    if not stored:
        if opts.lookup:
            raise UserError("--lookup: lookups are joined by a --sql statement; none was given and the model "
                            "stores none")
        return None
    flags = dict(parse_lookup_flag(v) for v in opts.lookup or ())
    lookups = []
    for name, source in stored.get("lookup_sources", {}).items():
        source = flags.pop(name, source)
        if not source:
            raise UserError(f"--lookup: the model's statement joins {name}; give --lookup={name}=SOURCE")
        lookups.append(lookup_from_flag(f"{name}={source}", **lookup_options))
    if flags:
        raise UserError(f"--lookup: the model's statement joins no table named {', '.join(sorted(flags))}")
    statement = Statement.from_dict(stored, lookups={lk.name: lk.schema() for lk in lookups},
                                    flag="the model's stored --sql")
    return Cleaning(statement, lookups, opts.lookup_refresh)


# ----------------------------------------------------------------- training
def cleaned_sample(cleaning: Cleaning, path: str, dialect, na_values, sample_rows: int = 20000) -> pa.Table:
    """The statement's output (with the position column) over the first `sample_rows` rows of `path`.

    Raises:
      UserError: the statement keeps none of them (nothing to infer a spec from).
    """
    sample = sample_events(path, cleaning.statement.events_schema, dialect, na_values, sample_rows)
    engine = Engine(cleaning.statement)
    try:
        for lookup in cleaning.lookups:
            lookup.open()
            engine.set_lookup(lookup.name, lookup.load())
        table = engine.run(sample, source=path).table
    finally:
        engine.close()
        for lookup in cleaning.lookups:
            lookup.close()
    if table.num_rows == 0:
        raise UserError(f"--sql: the statement keeps none of the {sample.num_rows} sampled rows of {path}, so the "
                        "columns cannot be inferred")
    return table


@dataclasses.dataclass
class TrainingSql:
    """The prepared statement and the spec inferred from (or checked against) its output."""

    cleaning: Cleaning
    spec: DatasetSpec


def plan_training_sql(options, path: str, output_dir: str, spec_path: Optional[str], infer: dict,
                      csv_flags: dict, sample_rows: int = 20000) -> Optional[TrainingSql]:
    """Prepares --sql for training from CSV and infers (or checks) the spec on the statement's output.

    Args:
      options: parsed options with CleanOptions.
      path: the first input file (events schema and inference sample).
      output_dir: where the sample of the statement's output is written for inference.
      spec_path: --spec, if given (checked against the output instead of inferring).
      infer: keyword arguments of `infer_spec` (label, positive_label, task, key, drop).
      csv_flags: --delimiter/--encoding/--compression given.

    Returns:
      None without --sql.

    Raises:
      UserError: a bad statement/lookup (naming --sql/--lookup), or a spec that does not fit the output.
    """
    opts = options.view_as(CleanOptions)
    if not opts.sql:
        if opts.lookup:
            raise UserError("--lookup: lookups are joined by a --sql statement; none was given")
        return None
    stored_spec = DatasetSpec.load(spec_path) if spec_path else None
    na_values = stored_spec.na_values if stored_spec else list(DEFAULT_NA_VALUES)
    dialect = detect_dialect(path, **csv_flags)
    events = events_schema_for_csv(path, dialect, na_values)
    # kafka: lookups connect with the Kafka flags (--bootstrap_servers, --kafka_config).
    cleaning = prepare_cleaning(opts, events, position_column=LINE_COLUMN,
                                **lookup_arguments(kafka_client_config(options), options))
    record = cleaning_record(cleaning, opts.lookup or ())
    columns = cleaning.statement.columns
    if stored_spec is not None:
        wanted = [c.name for c in stored_spec.columns if c.role in ("numeric", "categorical", "label", "key")]
        missing = [w for w in wanted if w not in columns]
        if missing:
            raise UserError(f"--spec: column(s) {', '.join(missing)} are not in the --sql statement's output "
                            f"({', '.join(columns)})")
        spec = dataclasses.replace(stored_spec, dialect=dialect, cleaning=record)
        return TrainingSql(cleaning, spec)
    label = infer.get("label")
    if label and label not in columns:
        raise UserError(f"--label: column '{label}' is not in the --sql statement's output ({', '.join(columns)})")
    table = cleaned_sample(cleaning, path, dialect, na_values, sample_rows).select(columns)
    local = fs.is_local(output_dir)
    tmp_dir = output_dir if local else tempfile.mkdtemp()
    os.makedirs(tmp_dir, exist_ok=True)
    sample_csv = os.path.join(tmp_dir, "sql_sample.csv")
    pacsv.write_csv(strings_for_csv(table), sample_csv)
    spec = infer_spec(sample_csv, na_values=na_values, **infer)
    spec = dataclasses.replace(spec, dialect=dialect, cleaning=record)
    return TrainingSql(cleaning, spec)
