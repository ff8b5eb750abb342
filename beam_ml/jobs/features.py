"""--features_sql in the train, batch_predict and stream_predict jobs: flags -> the statement each job applies.

Training (CSV input):

    tf = plan_training_features(options, first_file, output_dir, spec_path, infer_kwargs, csv_flags)  # None without
    spec = tf.spec            # inferred over the sample with its features; spec.features = the stored statement
    source = tf.source(pattern)   # FeatureCsvSource -> build_preprocess(source=...)

Training from a topic or a table: `plan_records_training_features(options, sample_records, ...)`; the job
reads with `beam_ml.features.sources.FeatureTopicSource` / `FeatureTableSource`.

Serving: `serving_features(options, spec)` -> the model's stored statement, or --features_sql (with a warning).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Optional

import pyarrow as pa
import pyarrow.csv as pacsv

from beam_ml import fs
from beam_ml.clean.cleaning import read_statement
from beam_ml.clean.layout import events_schema_for_csv, sample_events, strings_for_csv
from beam_ml.errors import UserError
from beam_ml.features import FeaturePlan
from beam_ml.features.csv_source import FeatureCsvSource, sample_with_features
from beam_ml.features.sources import events_schema_for_rows, in_event_time_order, rows_as_events
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.jobs.sql import cleaned_sample
from beam_ml.io.dialect import detect_dialect
from beam_ml.options import FeatureOptions
from beam_ml.spec import DEFAULT_NA_VALUES, DatasetSpec, infer_spec, infer_spec_from_rows

__all__ = ["TrainingFeatures", "plan_training_features", "plan_records_training_features", "serving_features"]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingFeatures:
    plan: FeaturePlan
    spec: DatasetSpec
    events_schema: pa.Schema
    cleaning: Any = None  # --sql, applied before the windows (beam_ml.clean.Cleaning), or None

    def source(self, pattern: str) -> FeatureCsvSource:
        return FeatureCsvSource(pattern, self.spec, self.plan, self.events_schema, cleaning=self.cleaning)


def _flag_plan(options, columns=None) -> Optional[FeaturePlan]:
    opts = options.view_as(FeatureOptions)
    if not opts.features_sql:
        if opts.event_time_column:
            raise UserError("--event_time_column: only used with --features_sql; none was given")
        return None
    return FeaturePlan.parse(read_statement(opts.features_sql, "--features_sql"), opts.event_time_column or "",
                             columns)


def plan_training_features(options, path: str, output_dir: str, spec_path: Optional[str], infer: dict,
                           csv_flags: dict, sample_rows: int = 20000, sql=None) -> Optional[TrainingFeatures]:
    """Parses --features_sql against the CSV's columns and infers (or checks) the spec with the features in it.

    The key and event-time columns are dropped from the model's features
    unless named otherwise (--key_column): the windows use them, the model
    should not learn from raw ids and clock times.

    With `sql` (the prepared --sql, `beam_ml.jobs.sql.TrainingSql`), the
    statement runs first: the feature statement is checked against its output
    columns, and the spec is inferred from its output over the sample + the
    features; the spec stores both statements (`cleaning`, then `features`).

    Raises:
      UserError: a bad statement (naming --features_sql), or a spec without the feature columns.
    """
    if not options.view_as(FeatureOptions).features_sql:
        _flag_plan(options)
        return None
    stored = DatasetSpec.load(spec_path) if spec_path else None
    na_values = stored.na_values if stored else list(DEFAULT_NA_VALUES)
    dialect = detect_dialect(path, **csv_flags)
    cleaning = sql.cleaning if sql is not None else None
    events = cleaning.statement.events_schema if cleaning else events_schema_for_csv(path, dialect, na_values)
    plan = _flag_plan(options, cleaning.statement.columns if cleaning else
                      [n for n in events.names if n != LINE_COLUMN])
    if stored is not None:
        spec = dataclasses.replace(_checked(stored, plan), dialect=dialect,
                                   cleaning=sql.spec.cleaning if sql is not None else stored.cleaning)
        return TrainingFeatures(plan, spec, events, cleaning)
    sample = (cleaned_sample(cleaning, path, dialect, na_values, sample_rows) if cleaning
              else sample_events(path, events, dialect, na_values, sample_rows))
    sample = sample_with_features(plan, sample)
    local = fs.is_local(output_dir)
    tmp_dir = output_dir if local else tempfile.mkdtemp()
    os.makedirs(tmp_dir, exist_ok=True)
    sample_csv = os.path.join(tmp_dir, "features_sample.csv")
    pacsv.write_csv(strings_for_csv(sample.drop_columns([LINE_COLUMN])), sample_csv)
    spec = _with_features(infer_spec(sample_csv, na_values=na_values, **_infer_without_key_and_time(infer, plan)),
                          plan)
    spec = dataclasses.replace(spec, dialect=dialect, cleaning=sql.spec.cleaning if sql is not None else None)
    return TrainingFeatures(plan, spec, events, cleaning)


def plan_records_training_features(options, records: list, described: str, spec_path: Optional[str], infer: dict,
                                   hints=None, by_event_time: bool = False) -> Optional[TrainingFeatures]:
    """--features_sql for training from a topic or a table: the statement checked against a sample of its records,
    the spec inferred from that sample with its features (or --spec checked).

    Args:
      records: the sampled records (dicts), in arrival order (`by_event_time`: a table's, sorted here).
      described: the input, for errors ("topic cards").
      hints: the format's type hints (`infer_spec_from_rows`).

    Raises:
      UserError: a bad statement (naming --features_sql), no records, or a spec without the feature columns.
    """
    if not options.view_as(FeatureOptions).features_sql:
        _flag_plan(options)
        return None
    if not records:
        raise UserError(f"--features_sql: {described} has no records to check the statement against")
    events = events_schema_for_rows(records)
    plan = _flag_plan(options, [n for n in events.names if n != LINE_COLUMN])
    if spec_path:
        return TrainingFeatures(plan, _checked(DatasetSpec.load(spec_path), plan), events)
    table = rows_as_events(records, events)
    if by_event_time:
        table = in_event_time_order(plan, table)
    featured = sample_with_features(plan, table)
    # the records as decoded (the label's text as the reader will see it) + their features
    sample = [{**records[i], **f} for i, f in zip(featured.column(LINE_COLUMN).to_pylist(),
                                                  featured.select(plan.names).to_pylist())]
    spec = infer_spec_from_rows(sample, infer.get("label"), described, hints=hints,
                                **{k: v for k, v in _infer_without_key_and_time(infer, plan).items() if k != "label"})
    return TrainingFeatures(plan, _with_features(spec, plan), events)


def _infer_without_key_and_time(infer: dict, plan: FeaturePlan) -> dict:
    """`infer` with the statement's key and event-time columns dropped (unless they are --key_column / --label)."""
    drop = list(infer.get("drop") or [])
    drop += [c for c in (plan.key, plan.event_time_column) if c not in drop and c != infer.get("key")
             and c != infer.get("label")]
    return {**infer, "drop": drop}


def _with_features(spec: DatasetSpec, plan: FeaturePlan) -> DatasetSpec:
    """An inferred spec with the feature columns numeric and the statement stored."""
    columns = [dataclasses.replace(c, role="numeric") if c.name in plan.names else c for c in spec.columns]
    return dataclasses.replace(spec, columns=columns, features=plan.to_dict())


def _checked(stored: DatasetSpec, plan: FeaturePlan) -> DatasetSpec:
    """A --spec that must hold the feature columns, with the statement stored."""
    missing = [n for n in plan.names if n not in stored.column_names]
    if missing:
        raise UserError(f"--spec: the --features_sql column(s) {', '.join(missing)} are not in the spec")
    return dataclasses.replace(stored, features=plan.to_dict())


def serving_features(options, spec: DatasetSpec, log=None) -> Optional[FeaturePlan]:
    """The feature statement a serving job applies: the model's stored one by default, --features_sql overriding it.

    Raises:
      UserError: a bad flag, or a model whose features cannot be computed without one.
    """
    opts = options.view_as(FeatureOptions)
    if opts.features_sql:
        if spec.features:
            message = ("--features_sql overrides the statement stored with the model (training and serving may now "
                       "compute features differently)")
            _LOGGER.warning(message)
            if log is not None:
                log(f"[beam_ml] WARNING: {message}")
        return _flag_plan(options)
    if opts.event_time_column:
        raise UserError("--event_time_column: only used with --features_sql; the model's statement names its own")
    if not spec.features:
        return None
    return FeaturePlan.from_dict(spec.features)
