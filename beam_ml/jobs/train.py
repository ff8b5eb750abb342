"""The training job, one Beam pipeline: read → split → tf.Transform → trials → final model → test → report.

    options = parse_pipeline_options(argv, TrainOptions, KafkaOptions)
    run = train(options)                # plan, build, run; on a local runner also read back the summary

or in steps:

    plan = plan_training(options)       # flags, input, spec, parameter sets: every mistake fails here, fast
    outputs = build_training(pipeline, plan)
    result = pipeline.run(); result.wait_until_finish()
    run = finish_training(plan, result) # reads counts.json / metrics.json the pipeline wrote

The pipeline:

    ReadCsv → SplitTrainTest → Analyze/Transform → WriteSplits (TFRecords of every fold and the test split)
      → CheckRows (counts as data; fails the run after the dead letters are written)
      → Trials (Create: parameter sets × validation folds) → Reshuffle → TrainTrials  [one trial per element]
      → Leaderboard → TrainFinal (retrain the best on train+validation, or keep the chosen trial) → export
      → ScoreTest (the exported model on the raw test rows, once) → EvaluateTest (a CombineFn)
      → RefitAll (--final_fit=all, the default: the same settings on every good row, test included;
        exported as the served model/<version>; the evaluated one stays in evaluated_model/)
      → WriteReport (metrics.json, report.md, report.html, PNGs; test metrics into the model's metadata)

Everything after the plan runs on the runner's workers (on Dataflow the
launching machine only submits); the trials stage waits on a side input that
exists only once the TFRecords and transform_fn are written. Without --tune
the candidates are the model of the flags and the linear model, trained on
folds 1..k-1 and compared on fold 0; with --tune every parameter set is
cross-validated on all k folds. Either way the test split is scored once, by
the model trained without it, and every reported metric is on it; then (by
default) the served model is refit on every row, and every place showing the
test metrics says they were measured before that refit.

Artifacts under the output dir (local or gs://): spec.json, counts.json,
transform_fn/, transformed_metadata/, data/fold-<j>-*, data/test-*,
dead_letter/, model/<version>/, evaluated_model/<version>/, keras_model/, metrics.json, report.md,
report.html, *.png, history.csv, checkpoints/, logs/.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
import uuid
from typing import Any, Callable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.pvalue import AsList, AsSingleton
from apache_beam.runners.runner import PipelineState

from beam_ml import datasets, formats, fs, metrics, tuning
from beam_ml.clean.layout import CleanCsvSource
from beam_ml.errors import UserError
from beam_ml.features.sources import FeatureTableSource, FeatureTopicSource
from beam_ml.io.csv import expand_input
from beam_ml.io.kafka.topic_batches import ReadTopicSnapshot, sample_topic
from beam_ml.jobs.bigquery import bigquery_input
from beam_ml.jobs.features import plan_records_training_features, plan_training_features
from beam_ml.jobs.settings import csv_dialect_flags, kafka_client_config
from beam_ml.jobs.sql import plan_training_sql
from beam_ml.monitoring.beam import TrainingStatisticsTransform, write_model_statistics
from beam_ml.options import CleanOptions, FeatureOptions, TrainOptions
from beam_ml.runner import new_pipeline
from beam_ml.spec import DatasetSpec, infer_spec, infer_spec_from_rows
from beam_ml.training.families.mlp import default_network
from beam_ml.training.trial import EVALUATED_MODEL, RefitDoFn, TrainFinalDoFn, TrainTrialDoFn, TrialContext

__all__ = ["TrainPlan", "TrainRun", "TrainOutputs", "plan_training", "build_training", "finish_training", "train",
           "TOPIC_ENVELOPE_FIELDS", "USER_ERROR_MARK"]

# Fields pipelines.produce adds to every event: metadata, never features.
TOPIC_ENVELOPE_FIELDS = ("produce_ts", "event_ts")

# A UserError raised inside a worker reaches the launcher as text in whatever
# exception the runner raises; this mark lets run() find the one line again.
USER_ERROR_MARK = "[beam_ml user error] "

_print = functools.partial(print, flush=True)

_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

# Outputs of an earlier run that a new run replaces wholesale (model versions accumulate;
# checkpoints stay so that a killed run resumes).
_STALE_OUTPUTS = ("data", "transform_fn", "transformed_metadata", "dead_letter", "tmp", "keras_model",
                  EVALUATED_MODEL)


@dataclasses.dataclass
class TrainPlan:
    """Everything decided before any data moves.

    Attributes:
      options: the pipeline options (runner flags included).
      opts: the TrainOptions view.
      spec: the dataset spec (loaded or inferred), already saved to spec_path.
      name: the dataset's name (a bundled dataset, the input file's stem or the topic).
      input_pattern: the CSV path or glob (None for a topic).
      output_dir: where artifacts go.
      kafka: the Kafka client config when training from a topic.
    """

    options: PipelineOptions
    opts: TrainOptions
    spec: DatasetSpec
    name: str
    input_pattern: Optional[str]
    output_dir: str
    spec_path: str
    kafka: Any = None
    bigquery: Any = None  # a beam_ml.jobs.bigquery.BigQueryInput (--input_table / --input_query)
    parameter_sets: list = dataclasses.field(default_factory=list)
    trials: list = dataclasses.field(default_factory=list)
    metric: str = ""
    run_id: str = ""
    threads: int = 0
    cleaning: Any = None  # the prepared --sql statement (beam_ml.clean.Cleaning), or None
    topic_format: Any = None  # the topic's beam_ml.formats.RecordFormat (--value_format)
    features: Any = None  # --features_sql (beam_ml.jobs.features.TrainingFeatures), or None

    @property
    def preprocess_config(self):
        from beam_ml.preprocess import PreprocessConfig  # deferred: tf.Transform, kept out of --help and flag checks

        return PreprocessConfig(input_pattern=self.input_pattern, output_dir=self.output_dir,
                                test_fraction=self.opts.test_fraction, cv_folds=self.opts.cv_folds,
                                split_seed=self.opts.split_seed)

    def trial_context(self):
        return TrialContext(output_dir=self.output_dir, spec=self.spec.to_dict(), cv_folds=self.opts.cv_folds,
                            metric=self.metric, target_precision=self.opts.target_precision,
                            patience=self.opts.early_stopping_patience, verbose=self.opts.verbose,
                            run_id=self.run_id, threads=self.threads, tune=bool(self.opts.tune),
                            dataset_name=self.name, selection_rule=self.opts.selection_rule,
                            final_fit=self.opts.final_fit)

    def source(self):
        """The PTransform reading the input when it is not a plain CSV read (a topic snapshot, a table, --sql),
        else None."""
        if self.features is not None:
            f = self.features
            if self.bigquery is not None:
                return FeatureTableSource(self.bigquery, self.spec, f.plan, f.events_schema)
            if self.kafka is not None:
                return FeatureTopicSource(self.kafka, self.opts.input_topic, self.spec, f.plan, f.events_schema,
                                          fmt=self.topic_format)
            return f.source(self.input_pattern)
        if self.bigquery is not None:
            return self.bigquery.source(self.spec)
        if self.cleaning is not None:

            return CleanCsvSource(self.input_pattern, self.spec, self.cleaning)
        if self.kafka is None:
            return None

        return ReadTopicSnapshot(self.kafka, self.opts.input_topic, self.spec, fmt=self.topic_format)


@dataclasses.dataclass
class TrainRun:
    """What a run produced (a PipelineResult alone cannot carry the training outcome)."""

    output_dir: str
    counts: Optional[dict]
    pipeline_result: object = None
    metrics: Optional[dict] = None
    spec_path: str = ""


def _sample_topic(kafka, topic: str, fmt) -> tuple[list[dict], list[str]]:
    """A sample of the topic's decoded records for spec inference, and the TOPIC_ENVELOPE_FIELDS in them."""
    records = sample_topic(kafka.client_kwargs(), topic, fmt=fmt)
    if not records:
        raise UserError(f"--input_topic: no {fmt.name} records could be read from topic '{topic}' "
                        f"at {kafka.bootstrap_servers}")
    envelope = [f for f in TOPIC_ENVELOPE_FIELDS if any(f in r for r in records)]
    return records, envelope


def plan_training(options: PipelineOptions) -> TrainPlan:
    """Checks the flags, resolves the input and loads or infers the dataset spec; no data moves yet.

    The spec is written to <output_dir>/spec.json, and outputs of an earlier
    run that this one replaces are removed.

    Raises:
      UserError: a bad flag, file, topic or spec.
    """
    opts = options.view_as(TrainOptions).validated()
    label, positive, task, key = opts.label, opts.positive_label, opts.task, opts.key_column
    drop = opts.drop_column_list
    kafka = topic_format = topic_sample = None

    bigquery = bigquery_input(options, opts.input_table, opts.input_query)
    if bigquery is not None:
        path, name = None, bigquery.name
    elif opts.input_topic:
        path, name = None, opts.input_topic
    elif opts.input:
        path = opts.input
        name = os.path.splitext(os.path.basename(path.rstrip("/")))[0].replace("*", "all")
    else:

        name = opts.dataset or "retention"
        info = datasets.resolve(name)
        path = datasets.materialize(name, opts.data_dir, rows=opts.dataset_rows)
        label, positive, task = label or info.label, positive or info.positive_label, task or info.task
        key = key or info.key
    output_dir = opts.output_dir or os.path.join("out", name)
    output_dir = output_dir.rstrip("/") if not fs.is_local(output_dir) else os.path.abspath(output_dir)

    if bigquery is not None:
        infer_from = None
    elif opts.input_topic:
        kafka = kafka_client_config(options)
        infer_from = None
        if not opts.spec or options.view_as(FeatureOptions).features_sql:  # the statement is checked on a sample
            topic_format = formats.format_from_flags(opts, opts.input_topic)
            topic_sample, envelope = _sample_topic(kafka, opts.input_topic, topic_format)
            drop += [f for f in envelope if f not in drop]
    else:

        infer_from = expand_input(path)[0]

    csv_flags = csv_dialect_flags(options)  # --delimiter/--encoding/--compression, when given

    infer = dict(label=label, positive_label=positive, task=task, key=key, drop=drop)
    sql = None
    if opts.input_topic or bigquery is not None:

        if options.view_as(CleanOptions).sql:
            given = "--input_topic" if opts.input_topic else ("--input_table" if opts.input_table else "--input_query")
            raise UserError(f"--sql: training from {given} with a statement is not supported yet; "
                            "train from CSV (--input), or clean in the query itself")
    else:
        sql = plan_training_sql(options, infer_from, output_dir, opts.spec, infer, csv_flags)
    if bigquery is not None and options.view_as(FeatureOptions).features_sql:  # a table's order: its event times
        features = plan_records_training_features(options, bigquery.sample()[1], bigquery.described, opts.spec,
                                                  infer, by_event_time=True)
    elif opts.input_topic:
        features = plan_records_training_features(options, topic_sample, f"topic {opts.input_topic}", opts.spec,
                                                  infer, hints=topic_format.type_hints() if topic_format else None)
    else:
        features = plan_training_features(options, infer_from, output_dir, opts.spec, infer, csv_flags, sql=sql)
    if features is not None:  # with --sql too: cleaned first, then the windows (features.spec stores both)
        spec = features.spec
    elif sql is not None:
        spec = sql.spec
    elif opts.spec:
        spec = DatasetSpec.load(opts.spec)
        spec = dataclasses.replace(spec, dialect=spec.dialect.replace(**csv_flags))
        if bigquery is not None:
            bigquery.check_spec(spec)
    elif bigquery is not None:
        spec = bigquery.infer_spec(label, positive_label=positive, task=task, key=key, drop=drop)
    elif topic_sample is not None:  # types from the format's schema (Avro), else from the values
        spec = infer_spec_from_rows(topic_sample, label, f"topic {opts.input_topic}", hints=topic_format.type_hints(),
                                    positive_label=positive, task=task, key=key, drop=drop)
    else:

        spec = infer_spec(infer_from, label, positive_label=positive, task=task, key=key, drop=drop, **csv_flags)

    metric = opts.tune_metric or tuning.default_tune_metric(spec.task)
    if spec.task == "multiclass" and metric in ("pr_auc", "f1", "recall_at_precision"):
        raise UserError(f"--tune_metric: {metric} is a binary metric; for multiclass use accuracy or roc_auc")
    _size_network(opts, spec)
    base = tuning.base_params(opts)
    if opts.tune:
        grid = tuning.parse_param_grid(opts.param_grid) if opts.param_grid else tuning.DEFAULT_GRID
        sets = tuning.parameter_sets(grid, base, search=opts.search, max_trials=opts.max_trials, seed=opts.seed,
                                     task=spec.task)
        trials = tuning.expand_trials(sets, range(opts.cv_folds), seed=opts.seed, mode="cv")
    else:
        # The model of the flags and the linear model, both validated on fold 0.
        sets = tuning.parameter_sets(None, base, task=spec.task)
        trials = tuning.expand_trials(sets, [0], seed=opts.seed, mode="select")

    fs.makedirs(output_dir)
    for stale in _STALE_OUTPUTS:
        fs.delete_tree(fs.join(output_dir, stale))
    spec_path = fs.join(output_dir, "spec.json")
    fs.write_text(spec_path, spec.to_json() + "\n")
    if opts.input_topic and topic_format is None:
        topic_format = formats.format_from_flags(opts, opts.input_topic, spec.column_names)
    return TrainPlan(options=options, opts=opts, spec=spec, name=name, input_pattern=path, output_dir=output_dir,
                     topic_format=topic_format,
                     spec_path=spec_path, kafka=kafka, bigquery=bigquery, parameter_sets=sets, trials=trials,
                     metric=metric, run_id=uuid.uuid4().hex, threads=_trial_threads(options, opts),
                     cleaning=sql.cleaning if sql is not None else None, features=features)


def _size_network(opts: TrainOptions, spec: DatasetSpec) -> None:
    """Resolves --hidden_units=auto and --epochs=0 to the default network of the input (families.mlp)."""
    units, epochs = default_network(spec)
    if opts.hidden_unit_list is None:
        opts.hidden_units = ",".join(str(u) for u in units)
    if not opts.epochs:
        opts.epochs = epochs


def _trial_threads(options: PipelineOptions, opts: TrainOptions) -> int:
    """TensorFlow threads per worker process: 1 wherever several processes train trials at once.

    That is the local runner's multi-processing mode with several workers, and
    Dataflow, whose Python workers run one SDK process per vCPU.
    """
    if opts.trial_threads:
        return opts.trial_threads
    if "Dataflow" in _runner_name(options):
        return 1

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing" and (direct.direct_num_workers or 1) != 1:
        return 1
    return 0


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def _check_rows(_, splits: dict, dead: int, dead_files, output_dir: str, max_bad_fraction: float,
                cv_folds: int) -> dict:
    """The run's row accounting, as data: writes counts.json, fails on too many dead letters or empty splits.

    Runs after the dead letters are written (its `dead_files` side input), so a
    failed run still leaves them for the user.
    """
    from beam_ml.preprocess import TEST_SPLIT, fold_split  # deferred: tf.Transform, kept out of --help and flag checks

    good = {name: sum(by_class.values()) for name, by_class in splits.items()}
    folds = [fold_split(j) for j in range(cv_folds)]
    rows_good = sum(good.values())
    counts = {
        "rows_in": rows_good + int(dead), "rows_good": rows_good, "rows_dead": int(dead),
        "rows_train": sum(good[f] for f in folds[1:]), "rows_validation": good[folds[0]],
        "rows_test": good[TEST_SPLIT], "rows_per_split": good, "label_counts": splits,
        "train_label_counts": {c: sum(splits[f][c] for f in folds) for c in splits[TEST_SPLIT]},
    }
    fs.write_json(fs.join(output_dir, "counts.json"), counts)
    rows_in = counts["rows_in"]
    if rows_in and dead / rows_in > max_bad_fraction:
        raise UserError(f"{USER_ERROR_MARK}--max_bad_rows_fraction: {dead} of {rows_in} rows were malformed "
                        f"(> {max_bad_fraction:.2%}); see {output_dir}/dead_letter/")
    empty = [name for name, n in good.items() if n == 0]
    if empty:
        raise UserError(f"{USER_ERROR_MARK}--input: too few good rows ({rows_good}) to fill the test split and "
                        f"{cv_folds} folds; empty: {', '.join(empty)}")
    return counts


def _ready(counts: dict, written) -> dict:
    """The data every trial needs, passed on once the TFRecords and transform_fn are written."""
    return {"splits": counts["label_counts"], "counts": counts, "files": len(list(written))}


class TrainOutputs(NamedTuple):
    """The key PCollections of the training pipeline (each a single element except `preprocess` and `trials`)."""

    preprocess: Any
    counts: Any
    trials: Any = None
    leaderboard: Any = None
    final: Any = None
    test: Any = None
    report: Any = None


def build_training(pipeline, plan: TrainPlan) -> TrainOutputs:
    """Adds the whole training job to `pipeline` (see the module docstring) and returns its key PCollections."""
    # deferred: TensorFlow, tf.Transform, scikit-learn, matplotlib take seconds to import; plan_training fails first
    from beam_ml import evaluation
    from beam_ml.preprocess import build_preprocess
    from beam_ml.training.report import write_outputs  # matplotlib

    opts, spec = plan.opts, plan.spec
    pre = build_preprocess(pipeline, spec, plan.preprocess_config, source=plan.source())
    dead_count = pre.dead | "CountDead" >> beam.combiners.Count.Globally()
    counts = (pipeline
              | "StartChecks" >> beam.Create([None])
              | "CheckRows" >> beam.Map(_check_rows, splits=AsSingleton(pre.split_counts),
                                        dead=AsSingleton(dead_count), dead_files=AsList(pre.dead_written),
                                        output_dir=plan.output_dir, max_bad_fraction=opts.max_bad_rows_fraction,
                                        cv_folds=opts.cv_folds))
    if opts.preprocess_only:
        return TrainOutputs(preprocess=pre, counts=counts)
    ready = counts | "DataReady" >> beam.Map(_ready, written=AsList(pre.written))
    ctx = plan.trial_context()
    trials = (pipeline
              | "Trials" >> beam.Create(plan.trials)
              # Spreads the trials over the workers (Create alone would keep them in one bundle).
              | "ShuffleTrials" >> beam.Reshuffle()
              | "TrainTrials" >> beam.ParDo(TrainTrialDoFn(ctx), ready=AsSingleton(ready)))
    board = (trials
             | "CollectTrials" >> beam.combiners.ToList()
             | "Leaderboard" >> beam.Map(tuning.leaderboard, plan.metric, plan.opts.selection_rule))
    evaluated = board | "TrainFinal" >> beam.ParDo(TrainFinalDoFn(ctx), results=AsList(trials),
                                                   ready=AsSingleton(ready))
    test_acc = (pre.test_rows
                | "ScoreTest" >> beam.ParDo(evaluation.ScoreTestDoFn(spec.to_dict()), final=AsSingleton(evaluated))
                | "EvaluateTest" >> beam.CombineGlobally(evaluation.EvaluateCombineFn()))
    test = test_acc | "TestMetrics" >> beam.Map(lambda acc, f: evaluation.evaluation_report(
        acc, spec.task, spec.label_classes, f["threshold"]), f=AsSingleton(evaluated))
    if opts.final_fit == "all":
        # After the test evaluation (its element), the selected set refit on every good row: the served version.
        final = test | "RefitAll" >> beam.ParDo(RefitDoFn(ctx), board=AsSingleton(board), results=AsList(trials),
                                                ready=AsSingleton(ready), evaluated=AsSingleton(evaluated))
    else:
        final = evaluated
    # What "normal" is for the monitor (beam_ml.monitoring): the non-test rows' histograms and the test scores',
    # written beside the served version (the refit keeps the evaluated model's threshold).
    monitoring = (pipeline
                  | "StartStatistics" >> beam.Create([None])
                  | "WriteStatistics" >> beam.Map(
                      write_model_statistics, AsSingleton(pre.marked | "TrainingStatistics" >>
                                                          TrainingStatisticsTransform(spec)),
                      AsSingleton(test_acc), AsSingleton(final), spec.task))
    report = (pipeline
              | "StartReport" >> beam.Create([None])
              | "WriteReport" >> beam.Map(write_outputs, ctx=ctx, counts=AsSingleton(counts),
                                          board=AsSingleton(board), final=AsSingleton(final),
                                          test=AsSingleton(test), trials=AsList(trials),
                                          monitoring=AsSingleton(monitoring)))
    return TrainOutputs(preprocess=pre, counts=counts, trials=trials, leaderboard=board, final=final, test=test,
                        report=report)


def _user_error_in(error: BaseException) -> Optional[str]:
    """The message of a UserError raised inside the pipeline, found in the runner's exception text."""
    for text in (str(error), repr(error)):
        i = text.find(USER_ERROR_MARK)
        if i >= 0:
            line = text[i + len(USER_ERROR_MARK):].splitlines()[0]
            return line.split(" [while running")[0].rstrip("'\" ")
    return None


def finish_training(plan: TrainPlan, result, log: Callable[[str], None] = _print,
                    pipeline_seconds: Optional[float] = None) -> TrainRun:
    """After the pipeline: reads back the counts and metrics it wrote and checks the read accounting.

    On a runner that only submitted (Dataflow), returns without them.

    Raises:
      RuntimeError: the reader's counters disagree with the rows the pipeline counted (a bug).
    """
    out = plan.output_dir
    run = TrainRun(output_dir=out, counts=None, pipeline_result=result, spec_path=plan.spec_path)
    submitted_only = "Dataflow" in _runner_name(plan.options)  # template creation reports DONE, too
    if submitted_only or getattr(result, "state", None) != PipelineState.DONE:
        log(f"[beam_ml] submitted ({getattr(result, 'state', 'unknown state')}); artifacts will be in {out}")
        return run
    run.counts = fs.read_json(fs.join(out, "counts.json"))
    c = run.counts
    try:
        lines_in = metrics.query_counter(result, metrics.READ, "lines_in")
        # CSV blank lines are neither records nor dead letters: only the reader counts them.
        c["blank_lines"] = metrics.query_counter(result, metrics.READ, "blank_lines")
    except Exception:  # a runner without metrics: the in-pipeline counts stand alone
        lines_in = None
    if plan.cleaning is not None:  # rows in = good + filtered by WHERE/INNER JOIN + dead
        c["rows_filtered"] = metrics.query_counter(result, metrics.SQL, "rows_filtered")
        c["rows_in"] += c["rows_filtered"]
    if pipeline_seconds is not None:
        # Construction, run and wait: with --preprocess_only, the preprocessing's own time.
        c["pipeline_seconds"] = round(pipeline_seconds, 2)
        c["rows_per_second"] = round(c["rows_in"] / max(pipeline_seconds, 1e-9), 1)
    fs.write_json(fs.join(out, "counts.json"), c)
    if lines_in is not None and lines_in != c["rows_in"]:
        raise RuntimeError(f"row accounting broken: the reader saw {lines_in} rows, the pipeline counted {c}")
    filtered = f", {c['rows_filtered']} filtered by --sql" if "rows_filtered" in c else ""
    log(f"[beam_ml] {c['rows_in']} rows: {c['rows_good']} good ({c['rows_train']} train / {c['rows_validation']} "
        f"validation / {c['rows_test']} test){filtered}, {c['rows_dead']} dead-lettered → {out}/dead_letter/")
    if plan.opts.preprocess_only:
        return run
    run.metrics = fs.read_json(fs.join(out, "metrics.json"))
    return run


def train(options: PipelineOptions, test_pipeline=None, log: Callable[[str], None] = _print) -> TrainRun:
    """The whole job: plan, build and run the pipeline; on a local runner, read back what it wrote.

    Args:
      options: parsed options with TrainOptions (and KafkaOptions) flags.
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.
      log: where progress lines go.

    Raises:
      UserError: a bad flag, file or spec (before anything runs), or too many
        dead-lettered rows (after they are written).
    """
    plan = plan_training(options)
    spec = plan.spec
    log(f"[beam_ml] dataset spec: {plan.spec_path} (task={spec.task}, label={spec.label}, "
        f"classes={spec.label_classes}, features={len(spec.feature_columns)})")
    if not plan.opts.preprocess_only:
        what = (f"{len(plan.parameter_sets)} parameter sets x {plan.opts.cv_folds} folds" if plan.opts.tune else
                f"{len(plan.parameter_sets)} candidates (the flags' model and the linear model) on fold 0")
        log(f"[beam_ml] {len(plan.trials)} trials: {what}, ranked by validation {plan.metric}")

    # TensorFlow and tf.Transform take seconds to import: done before the clock starts, so
    # counts.json's pipeline_seconds is the pipeline's own time (construction, run, wait).
    import beam_ml.preprocess  # noqa: F401  pylint: disable=unused-import

    start = time.time()
    pipeline = test_pipeline or new_pipeline(options)
    build_training(pipeline, plan)
    saved_env = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    if plan.threads == 1:
        # Worker processes inherit these: TensorFlow reads them when it starts,
        # before any DoFn could set the thread counts itself.
        for name in _THREAD_VARIABLES:
            os.environ.setdefault(name, "1")
    try:
        result = pipeline.run()
        if "Dataflow" not in _runner_name(options):  # on Dataflow, the launcher only submits
            result.wait_until_finish()
    except Exception as e:  # pylint: disable=broad-except
        message = _user_error_in(e)
        if message:
            raise UserError(message) from None
        raise
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    run = finish_training(plan, result, log, pipeline_seconds=time.time() - start)
    if run.metrics is not None:
        run.metrics.setdefault("summary", {})["wall_seconds"] = round(time.time() - start, 1)
    return run
