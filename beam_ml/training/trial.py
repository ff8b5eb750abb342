"""Training as Beam stages: one trial per element, then the final model, exported.

    trials | "Reshuffle" >> beam.Reshuffle()
           | "TrainTrials" >> beam.ParDo(TrainTrialDoFn(ctx), ready=AsSingleton(ready))
    board  | "TrainFinal" >> beam.ParDo(TrainFinalDoFn(ctx), results=AsList(trial_results), ready=...)
    test   | "RefitAll" >> beam.ParDo(RefitDoFn(ctx), board=..., results=..., ready=..., evaluated=...)

A trial (beam_ml.tuning.expand_trials) trains one parameter set with one fold
as validation and the other folds as training data, and reports the
validation metric, the best epoch (early stopping on the validation loss) and
its validation scores (for an out-of-fold decision threshold). Trials are
independent, so a runner spreads them over its workers: local processes with
`--direct_running_mode=multi_processing --direct_num_workers=N`, VMs on
Dataflow. Each worker reads the transformed TFRecords of a run once and keeps
them in memory for all its trials.

The final stage trains the leaderboard's selected set (beam_ml.tuning.leaderboard:
by default the simplest within one standard error of the best), on

* every non-test fold with `--tune` (the epoch count and learning-rate
  schedule of its median cross-validation fold; the decision threshold from
  its out-of-fold validation scores), or
* without `--tune`, it is the selected 'select' trial itself (trained on folds
  1..k-1 with early stopping on fold 0, the threshold from fold 0): its
  weights are loaded, not trained again; except a model its family fits
  exactly (the linear model with optimizer lbfgs), which has no epochs to
  choose and is refit on every non-test fold (threshold still from fold 0);

then exports it: with --final_fit=non_test as the next model version (the
served one); by default (--final_fit=all) under evaluated_model/, where the
test split scores it, after which `refit_all` fits the same settings (the exact
fit; or the median fold's epoch count and learning-rate schedule) on every
good row, test included, and exports THAT as the next model version, its
metadata naming the evaluated model and carrying its test metrics with the
phrase of `refit_note`. Every file goes through `beam_ml.fs` or
`tf.io.gfile`, so the output dir may be on gs://.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import apache_beam as beam
import numpy as np

from beam_ml import fs
from beam_ml.spec import DatasetSpec
from beam_ml.training import families
from beam_ml.tuning import describe, selected

__all__ = ["TrialContext", "TrainTrialDoFn", "TrainFinalDoFn", "RefitDoFn", "run_trial", "train_final", "refit_all",
           "refit_note", "EVALUATED_MODEL"]

# Where a 'select' trial leaves its weights for the final stage.
_WEIGHTS = "weights/model"
# With --final_fit=all: where the model the test split evaluates is exported (the refit is model/<version>).
EVALUATED_MODEL = "evaluated_model"


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial of a run shares (plain data: it is pickled to the workers).

    Attributes:
      output_dir: the run's output dir (TFRecords, transform_fn; checkpoints go here).
      spec: the dataset spec as a dict.
      cv_folds: k.
      metric: the validation metric that ranks parameter sets.
      target_precision: for the recall_at_precision metric.
      patience: early-stopping patience in epochs.
      verbose: Keras progress output of the trainings a user watches (select trials, final refit).
      run_id: this run's id (the in-memory data cache is per run).
      threads: TensorFlow threads per worker process (0: TensorFlow's default).
      tune: cross-validation (True) or one validation fold (False).
      dataset_name: for the model metadata.
      selection_rule: how the leaderboard picks the exported set (beam_ml.tuning.leaderboard).
      final_fit: 'all' (refit on every good row after the test evaluation) or 'non_test'.
    """

    output_dir: str
    spec: dict
    cv_folds: int
    metric: str
    target_precision: float = 0.9
    patience: int = 5
    verbose: int = 0
    run_id: str = ""
    threads: int = 0
    tune: bool = False
    dataset_name: str = ""
    selection_rule: str = "one_se"
    final_fit: str = "all"

    @property
    def dataset_spec(self) -> DatasetSpec:
        return DatasetSpec.from_dict(self.spec)


def _class_counts(counts: dict, splits, classes) -> list[int]:
    return [int(sum(counts[s][c] for s in splits)) for c in classes]


def _fold_splits(k: int, validation: Optional[int]) -> list[str]:
    from beam_ml.preprocess import fold_split

    return [fold_split(j) for j in range(k) if j != validation]


def run_trial(ctx: TrialContext, trial: dict, counts: dict, log=print) -> dict:
    """Trains one (parameter set, validation fold) and returns its result (plain data)."""
    from beam_ml.evaluation import bootstrap_se, validation_metrics
    from beam_ml.preprocess import fold_split
    from beam_ml.training.trainer import load_splits, predict_outputs

    start = time.time()
    spec = ctx.dataset_spec
    fold = trial["fold"]
    train_splits = _fold_splits(ctx.cv_folds, fold)
    x, y = load_splits(ctx.output_dir, spec, train_splits, cache_key=ctx.run_id)
    xv, yv = load_splits(ctx.output_dir, spec, [fold_split(fold)], cache_key=ctx.run_id)
    select = trial["mode"] == "select"
    trial_dir = fs.join(ctx.output_dir, "checkpoints", trial["trial_id"])
    callbacks = []
    if select:
        import tf_keras as keras

        callbacks.append(keras.callbacks.TensorBoard(fs.join(ctx.output_dir, "logs", trial["trial_id"])))
    # Only the model of the flags talks while it trains (no --tune): the user is waiting on it.
    verbose = ctx.verbose if select and trial["set_index"] == 0 else 0
    fitted = families.fit_model(trial["params"], spec.task, x, y, validation=(xv, yv),
                       class_counts=_class_counts(counts, train_splits, spec.label_classes), seed=trial["seed"],
                       patience=ctx.patience, verbose=verbose, numeric_columns=len(spec.numeric_columns),
                       backup_dir=fs.join(trial_dir, "backup") if select else None, extra_callbacks=callbacks)
    out = predict_outputs(fitted.model, xv, spec.task)
    vm = validation_metrics(spec.task, yv, out, ctx.target_precision)
    score = vm.get(ctx.metric)
    result = {k: trial[k] for k in ("trial_id", "set_id", "set_index", "params", "fold", "seed", "mode")}
    result.update(
        metric=ctx.metric, score=None if score is None or np.isnan(score) else float(score),
        validation=vm, best_epoch=fitted.best_epoch, epochs_run=len(fitted.history.get("loss", [])),
        batch_size=fitted.batch_size, class_weights=fitted.class_weights, history=fitted.history,
        train_rows=int(len(x)), validation_rows=int(len(xv)), solver=fitted.solver)
    if not ctx.tune and result["score"] is not None:
        # One validation fold: the selection rule's noise is the bootstrap error of this score.
        result["score_se"] = bootstrap_se(spec.task, ctx.metric, yv, out, ctx.target_precision, seed=trial["seed"])
    result.update(seconds=round(time.time() - start, 2), pid=os.getpid())
    if spec.task != "multiclass":
        # Out-of-fold scores: the refit's decision threshold is chosen on them.
        result["validation_scores"] = np.round(out.astype(np.float64), 6).tolist()
        result["validation_labels"] = yv.astype(int).tolist()
    if select:
        path = fs.join(trial_dir, _WEIGHTS)
        fitted.model.save_weights(path)
        result["weights"] = path
    shown = "n/a" if result["score"] is None else f"{result['score']:.4f}"
    log(f"[beam_ml] trial {trial['trial_id']} done: {describe(trial['params'])}, validation fold {fold}: "
        f"{ctx.metric}={shown} (best epoch {fitted.best_epoch}, {result['seconds']:.1f} s)")
    return result


class _TrainingDoFn(beam.DoFn):
    """A DoFn that trains: holds the run's TrialContext, limits TensorFlow's threads once per worker."""

    def __init__(self, ctx: TrialContext):
        self._ctx = ctx

    def setup(self):
        from beam_ml.training.trainer import limit_threads

        limit_threads(self._ctx.threads)


class TrainTrialDoFn(_TrainingDoFn):
    """Runs one trial per element; the side input `ready` (the split counts) exists once the data is written."""

    def process(self, trial: dict, ready: dict):
        yield run_trial(self._ctx, trial, ready["splits"], log=lambda m: print(m, flush=True))


def _oof_threshold(results: list[dict], set_id: str) -> Optional[float]:
    from beam_ml.evaluation import best_f1_threshold

    rs = [r for r in results if r["set_id"] == set_id and "validation_scores" in r]
    if not rs:
        return None
    scores = np.concatenate([np.asarray(r["validation_scores"]) for r in rs])
    labels = np.concatenate([np.asarray(r["validation_labels"]) for r in rs])
    return best_f1_threshold(labels, scores)


def _median_fold(results: list[dict], set_id: str) -> dict:
    rs = sorted((r for r in results if r["set_id"] == set_id), key=lambda r: (r["best_epoch"], r["fold"]))
    return rs[len(rs) // 2]


def _fit_selected(ctx: TrialContext, best: dict, results: list[dict], counts: dict, splits: list[str], name: str,
                  log) -> tuple[dict, object, int]:
    """Fits the selected set on `splits` with no validation rows: the median fold's epoch count and schedule.

    Returns (params with the epochs run, the FitResult, rows fitted on).
    """
    import tf_keras as keras

    from beam_ml.training.trainer import load_splits

    spec = ctx.dataset_spec
    params = dict(best["params"])
    exact = families.of(params, spec.task).exact_solver(params)
    x, y = load_splits(ctx.output_dir, spec, splits, cache_key=ctx.run_id)
    median = _median_fold(results, best["set_id"])
    params["epochs"] = max(1, int(median["best_epoch"]))
    lr = median["history"].get("lr", [])[: params["epochs"]]
    how = f"fitted exactly ({exact})" if exact else f"{params['epochs']} epochs (the validation's best)"
    log(f"[beam_ml] {name} model: {describe(params)} on all {len(x)} {' + '.join(_split_words(splits))} rows, {how}")
    fitted = families.fit_model(params, spec.task, x, y, validation=None,
                                class_counts=_class_counts(counts, splits, spec.label_classes), seed=median["seed"],
                                verbose=ctx.verbose, numeric_columns=len(spec.numeric_columns),
                                backup_dir=fs.join(ctx.output_dir, "checkpoints", name, "backup"),
                                lr_schedule=lr, extra_callbacks=[keras.callbacks.TensorBoard(
                                    fs.join(ctx.output_dir, "logs", name))])
    return params, fitted, int(len(x))


def _split_words(splits: list[str]) -> list[str]:
    from beam_ml.preprocess import TEST_SPLIT

    return ["train+validation"] + (["test"] if TEST_SPLIT in splits else [])


def _export(ctx: TrialContext, model, params: dict, threshold: float, root: str, metadata: dict) -> str:
    """Exports `model` as the next version under `root` with the run's metadata plus `metadata`."""
    import tensorflow_transform as tft

    from beam_ml.export import export_model

    spec = ctx.dataset_spec
    return export_model(root, tft.TFTransformOutput(ctx.output_dir), model, spec, threshold, metadata={
        "dataset": ctx.dataset_name, "params": params, "family": families.of(params, spec.task).name,
        "model_name": describe(params), "tuned": ctx.tune, **metadata})


def refit_note(test_rows: int, all_rows: int) -> str:
    """The phrase every place showing test metrics of a refit model carries."""
    return f"measured on {test_rows} held-out rows before the final refit on all {all_rows} rows"


def train_final(ctx: TrialContext, board: list[dict], results: list[dict], counts: dict, log=print) -> dict:
    """Trains (or, without --tune, loads) the best set's model, exports it and returns what was exported.

    With ctx.final_fit 'all' this is the model the test split evaluates: it is
    exported under <output_dir>/EVALUATED_MODEL, and `refit_all` exports the
    served version; with 'non_test' it is the served version (model/<version>).
    """
    start = time.time()
    spec = ctx.dataset_spec
    best = selected(board)
    params = dict(best["params"])
    exact = families.of(params, spec.task).exact_solver(params)
    if ctx.tune or exact:
        # With --tune: the best set on every non-test fold. Without: an exactly fitted model (the linear
        # one) has no epoch count for the validation fold to choose, so it is refit on every non-test
        # fold too (the same convex problem with all the rows); the threshold stays fold 0's.
        params, fitted, train_rows = _fit_selected(ctx, best, results, counts, _fold_splits(ctx.cv_folds, None),
                                                   "final", log)
        model, history, solver, batch_size = fitted.model, fitted.history, fitted.solver, fitted.batch_size
        median = _median_fold(results, best["set_id"])
        if ctx.tune:
            threshold = _oof_threshold(results, best["set_id"])
            threshold_from = "out-of-fold validation scores of the best set"
        else:
            threshold = median["validation"].get("threshold")
            threshold_from = "the validation fold"
    else:
        trial = next(r for r in results if r["set_id"] == best["set_id"])
        model = families.build_model(params, spec.task, _input_dim(ctx, spec), spec.num_classes)
        model.load_weights(trial["weights"]).expect_partial()
        history, train_rows, batch_size = trial["history"], trial["train_rows"], trial["batch_size"]
        threshold = trial["validation"].get("threshold")
        threshold_from = "the validation fold"
        solver = None
    if threshold is None:
        threshold = 0.5
    cv = {"metric": best["metric"], "mean": best["mean"], "std": best["std"], "se": best.get("se"),
          "scores": best["scores"], "folds": best["folds"], "selection_rule": ctx.selection_rule}
    served = ctx.final_fit == "non_test"
    root = fs.join(ctx.output_dir, "model" if served else EVALUATED_MODEL)
    version_dir = _export(ctx, model, params, threshold, root, {
        "cv": cv, "threshold_from": threshold_from, "train_rows": train_rows, "solver": solver,
        "final_fit": "non_test"})
    if served:
        # The Keras model over transformed features, kept for skew checks against the export.
        model.save(fs.join(ctx.output_dir, "keras_model"), save_format="tf", include_optimizer=False)
    log(f"[beam_ml] exported {version_dir} ({time.time() - start:.1f} s)")
    return {"version_dir": version_dir, "threshold": float(threshold), "threshold_from": threshold_from,
            "params": params, "name": describe(params), "history": history, "train_rows": train_rows,
            "batch_size": batch_size, "epochs_run": len(history.get("loss", [])), "cv": cv, "solver": solver,
            "final_fit": "non_test", "seconds": round(time.time() - start, 2)}


def refit_all(ctx: TrialContext, board: list[dict], results: list[dict], counts: dict, evaluated: dict, test: dict,
              log=print) -> dict:
    """Refits the selected set on every good row (folds and test) and exports it as the served version.

    The settings are those selection chose (the exact fit; or the epoch count
    and learning-rate schedule of the validation), the decision threshold the
    evaluated model's. The test metrics stay those of `evaluated` (scored
    before this refit): the returned dict's `test_note` says so.
    """
    from beam_ml.preprocess import TEST_SPLIT

    start = time.time()
    best = selected(board)
    splits = _fold_splits(ctx.cv_folds, None) + [TEST_SPLIT]
    params, fitted, rows = _fit_selected(ctx, best, results, counts, splits, "refit", log)
    note = refit_note(int(test.get("rows", 0)), rows)
    version_dir = _export(ctx, fitted.model, params, evaluated["threshold"], fs.join(ctx.output_dir, "model"), {
        "cv": evaluated["cv"], "threshold_from": evaluated["threshold_from"], "train_rows": rows,
        "solver": fitted.solver, "final_fit": "all", "test_metrics_note": note,
        "evaluated_model": evaluated["version_dir"], "evaluated_train_rows": evaluated["train_rows"]})
    fitted.model.save(fs.join(ctx.output_dir, "keras_model"), save_format="tf", include_optimizer=False)
    log(f"[beam_ml] exported {version_dir}, refit on all {rows} rows; test metrics {note} "
        f"({time.time() - start:.1f} s)")
    return dict(evaluated, version_dir=version_dir, params=params, name=describe(params), history=fitted.history,
                train_rows=rows, batch_size=fitted.batch_size, epochs_run=len(fitted.history.get("loss", [])),
                solver=fitted.solver, final_fit="all", test_note=note,
                evaluated={k: v for k, v in evaluated.items() if k != "params"},
                seconds=round(time.time() - start, 2))


def _input_dim(ctx: TrialContext, spec: DatasetSpec) -> int:
    import tensorflow_transform as tft

    from beam_ml.training.data import feature_dim
    from transforms.preprocessing import transformed_feature_names

    return feature_dim(tft.TFTransformOutput(ctx.output_dir).transformed_feature_spec(),
                       transformed_feature_names(spec))


class TrainFinalDoFn(_TrainingDoFn):
    """Trains and exports the final model from the leaderboard (one element)."""

    def process(self, board: list, results: list, ready: dict):
        yield train_final(self._ctx, board, list(results), ready["splits"], log=lambda m: print(m, flush=True))


class RefitDoFn(_TrainingDoFn):
    """Refits on every good row and exports the served version; its element is the test metrics (so it runs after)."""

    def process(self, test: dict, board: list, results: list, ready: dict, evaluated: dict):
        yield refit_all(self._ctx, board, list(results), ready["splits"], evaluated, test,
                        log=lambda m: print(m, flush=True))
