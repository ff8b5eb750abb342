"""--tune wall time: ours with 2 workers vs 1 worker, and vs scikit-learn GridSearchCV(n_jobs=2), in one run.

    python -m benchmarks.bench_tune                 # retention (14,999 rows), 16-set grid (+ linear) x 5 folds
    python -m benchmarks.bench_tune --quick         # tiny, 2 workers only: checks the machinery (a slow test)

Four timings on the same data, grid, folds and model:

* ours, 2 workers: ``python -m pipelines.train --tune ... --direct_running_mode=multi_processing
  --direct_num_workers=2`` in a fresh process; wall clock of the whole job (read, split, tf.Transform,
  TFRecords, 85 trials, refit, export, test evaluation, report).
* ours, 1 worker: the same with ``--direct_num_workers=1`` (TensorFlow keeps its default threads).
* GridSearchCV(n_jobs=2): the same Keras model (beam_ml.training.families.build_model, wrapped for
  scikit-learn below: scikeras 0.13 wraps Keras 3 models only and uses the tags API scikit-learn 1.7
  removed), the same parameter grid (with the same linear candidate), the same folds
  (PredefinedSplit over ours' fold ids) on ours' transformed features, refit=True, then the test
  split scored. Timed: fit + test scoring only, so no preprocessing is charged to it. The wrapper
  feeds Keras the arrays, as scikeras does (``fit(x, y, shuffle=True)``).
* GridSearchCV(n_jobs=2) again, its wrapper feeding Keras through ours' input pipeline
  (beam_ml.training.trainer.training_dataset, predict_outputs): the same training loop as ours' trials,
  so ours / this is what the job around the trials costs. tf_keras' array adapter sometimes stalls
  ~1.1 s when its pipeline is torn down at the end of a fit (``python -m benchmarks.bench_feed``
  measures it); ours' pipeline does not.

Both sides run exactly --epochs epochs per trial (ours: early-stopping patience = epochs, so it never
stops early; scikit-learn has no validation data inside fit), one TensorFlow thread per worker process.
Every run's outputs are checked before its time counts: all trials scored, the best CV score finite.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from beam_ml.training import families

GRID16 = {"hidden_units": ["64,32", "128"], "dropout": [0.0, 0.2], "optimizer": ["adam", "rmsprop"],
          "learning_rate": [1e-3, 3e-3]}
QUICK_GRID = {"hidden_units": ["16"], "dropout": [0.0], "learning_rate": [3e-3]}


def run_ours(csv_path: str, out_dir: str, grid: dict, folds: int, epochs: int, workers: int) -> tuple[float, dict]:
    """Runs pipelines.train --tune in a fresh process; returns (wall seconds, metrics.json)."""
    argv = [sys.executable, "-m", "pipelines.train", f"--input={csv_path}", "--label=left", f"--output_dir={out_dir}",
            "--tune", f"--param_grid={json.dumps(grid)}", f"--cv_folds={folds}", f"--epochs={epochs}",
            f"--early_stopping_patience={epochs}", "--verbose=0", "--runner=DirectRunner",
            "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.pop(name, None)  # each configuration decides its own threads
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ours ({workers} workers) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out_dir, "metrics.json")) as f:
        metrics = json.load(f)
    board = metrics["leaderboard"]
    assert all(len(r["scores"]) == folds and None not in r["scores"] for r in board), board
    return wall, metrics


class KerasTabularClassifier:
    """A scikit-learn estimator over beam_ml's own Keras model (binary task), for GridSearchCV."""

    _PARAMS = ("hidden_units", "dropout", "optimizer", "learning_rate", "batch_size", "epochs", "seed", "feed")

    def __init__(self, hidden_units=(64, 32), dropout=0.0, optimizer="adam", learning_rate=1e-3, batch_size=0,
                 epochs=10, seed=42, feed="arrays"):
        self.hidden_units, self.dropout, self.optimizer = hidden_units, dropout, optimizer
        self.learning_rate, self.batch_size, self.epochs, self.seed = learning_rate, batch_size, epochs, seed
        self.feed = feed  # "arrays": fit(x, y) as scikeras calls it; "beam_ml": ours' input pipeline

    # The parts of the estimator API GridSearchCV uses (BaseEstimator would want sklearn's tag machinery).
    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import Tags, ClassifierTags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def fit(self, x, y):
        import tf_keras as keras

        from beam_ml.training.trainer import auto_batch_size, class_weights_from_counts, training_dataset

        keras.utils.set_random_seed(self.seed)
        self.classes_ = np.array([0, 1])
        params = families.resolve({"hidden_units": list(self.hidden_units), "dropout": self.dropout,
                                   "optimizer": self.optimizer, "learning_rate": self.learning_rate, "batch_size": 0,
                                   "epochs": 1, "class_weights": "auto", "l2": 0.0}, "binary")
        if families.of(params).exact_solver(params):  # ours' linear candidate: fitted exactly, the same code as ours
            self.model_ = families.fit_model(params, "binary", x, y, validation=None,
                                             class_counts=list(np.bincount(y, minlength=2)), seed=self.seed).model
            return self
        self.model_ = families.build_model(params, "binary", x.shape[1], 2)
        weights = class_weights_from_counts(np.bincount(y, minlength=2), "auto")
        batch_size = self.batch_size or auto_batch_size(len(x))
        if self.feed == "beam_ml":
            self.model_.fit(training_dataset(x, y, batch_size, self.seed), epochs=self.epochs, class_weight=weights,
                            verbose=0)
        else:
            self.model_.fit(x, y, batch_size=batch_size, epochs=self.epochs, class_weight=weights, verbose=0,
                            shuffle=True)
        return self

    def predict_proba(self, x):
        if self.feed == "beam_ml":
            from beam_ml.training.trainer import predict_outputs

            p = predict_outputs(self.model_, x, "binary")
        else:
            p = self.model_.predict(x, batch_size=8192, verbose=0).reshape(-1)
        return np.stack([1 - p, p], axis=1)

    def predict(self, x):
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)

    def score(self, x, y):
        return float((self.predict(x) == y).mean())


def _arrays(out_dir: str, folds: int):
    """Ours' transformed features: (x, y, fold id) of the non-test rows, and (x, y) of the test rows."""
    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits

    spec = DatasetSpec.load(os.path.join(out_dir, "spec.json"))
    xs, ys, ids = [], [], []
    for j in range(folds):
        x, y = load_splits(out_dir, spec, [f"fold{j}"])
        xs.append(x), ys.append(y), ids.append(np.full(len(y), j))
    xt, yt = load_splits(out_dir, spec, ["test"])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids), xt, yt


def run_gridsearch(out_dir: str, grid: dict, folds: int, epochs: int, linear: dict,
                   feed: str = "arrays") -> tuple[float, dict]:
    """GridSearchCV(n_jobs=2) over ours' folds and features; returns (fit + test seconds, results)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from beam_ml.tuning import parse_param_grid

    x, y, fold, xt, yt = _arrays(out_dir, folds)
    parsed = parse_param_grid(json.dumps(grid))
    sk_grid = [{k: [tuple(v) if k == "hidden_units" else v for v in vals] for k, vals in parsed.items()},
               {"hidden_units": [()], "dropout": [0.0], "optimizer": [linear["optimizer"]],
                "learning_rate": [linear["learning_rate"]]}]
    for g in sk_grid:
        g["epochs"] = [epochs]
    search = GridSearchCV(KerasTabularClassifier(feed=feed), sk_grid, scoring="roc_auc", cv=PredefinedSplit(fold),
                          n_jobs=2, refit=True)
    start = time.perf_counter()
    search.fit(x, y)
    test_auc = roc_auc_score(yt, search.predict_proba(xt)[:, 1])
    wall = time.perf_counter() - start
    best = search.best_index_
    return wall, {"best_score": float(search.best_score_), "best_std": float(search.cv_results_["std_test_score"][best]),
                  "best_params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in search.best_params_.items()},
                  "candidates": len(search.cv_results_["params"]), "test_roc_auc": float(test_auc)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=14999)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny data and grid: checks the machinery")
    parser.add_argument("--work_dir", default="")
    args = parser.parse_args(argv)
    grid = QUICK_GRID if args.quick else GRID16
    rows, folds, epochs = (600, 2, 2) if args.quick else (args.rows, args.folds, args.epochs)
    # One TensorFlow thread per process for the scikit-learn side's 2 loky workers (ours sets its own).
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from beam_ml import datasets

    work = args.work_dir or tempfile.mkdtemp(prefix="bench_tune_")
    csv_path = datasets.materialize("retention", os.path.join(work, "data"), rows=rows)
    results = {"rows": rows, "folds": folds, "epochs": epochs, "grid": grid, "load_before": os.getloadavg()[0]}
    # The machine may be shared: the 1-minute load average after each phase says how much CPU others took.
    w2, m2 = run_ours(csv_path, os.path.join(work, "ours2"), grid, folds, epochs, workers=2)
    results["load_after_ours2"] = os.getloadavg()[0]
    print(f"ours, 2 workers: {w2:.1f} s, best {m2['leaderboard'][0]['name']} "
          f"{m2['leaderboard'][0]['mean']:.4f} ± {m2['leaderboard'][0]['std']:.4f}", flush=True)
    if args.quick:  # the 1-worker run is the same code path; the quick check skips it
        w1, m1 = w2, m2
    else:
        w1, m1 = run_ours(csv_path, os.path.join(work, "ours1"), grid, folds, epochs, workers=1)
        results["load_after_ours1"] = os.getloadavg()[0]
        print(f"ours, 1 worker:  {w1:.1f} s", flush=True)
    linear = next(r["params"] for r in m2["leaderboard"] if families.of(r["params"]) is families.BASELINE)
    ws, sk = run_gridsearch(os.path.join(work, "ours2"), grid, folds, epochs, linear)
    results["load_after_gridsearch"] = os.getloadavg()[0]
    print(f"GridSearchCV(n_jobs=2): {ws:.1f} s, best {sk['best_params']} {sk['best_score']:.4f} ± "
          f"{sk['best_std']:.4f}", flush=True)
    wf, skf = run_gridsearch(os.path.join(work, "ours2"), grid, folds, epochs, linear, feed="beam_ml")
    results["load_after_gridsearch_same_feed"] = os.getloadavg()[0]
    print(f"GridSearchCV(n_jobs=2), ours' input pipeline: {wf:.1f} s, best {skf['best_score']:.4f} ± "
          f"{skf['best_std']:.4f}", flush=True)
    best = m2["leaderboard"][0]
    from beam_ml.tuning import selected

    chosen = selected(m2["leaderboard"])
    results.update({
        "trials": len(m2["trials"]), "sets": len(m2["leaderboard"]),
        "ours_2_workers_s": round(w2, 1), "ours_1_worker_s": round(w1, 1), "gridsearch_s": round(ws, 1),
        "speedup_2_vs_1": round(w1 / w2, 2), "ours_vs_gridsearch": round(w2 / ws, 2),
        "gridsearch_same_feed_s": round(wf, 1), "ours_vs_gridsearch_same_feed": round(w2 / wf, 2),
        "gridsearch_same_feed": skf,
        "ours_trial_seconds_2_workers": m2["summary"]["trial_seconds"],
        "ours_trial_seconds_1_worker": m1["summary"]["trial_seconds"],
        "same_best_1_and_2_workers": m1["leaderboard"][0]["set_id"] == m2["leaderboard"][0]["set_id"],
        "ours_best": {"name": best["name"], "mean": best["mean"], "std": best["std"]},
        "ours_exported": {"name": chosen["name"], "mean": chosen["mean"], "std": chosen["std"]},
        "ours_test_roc_auc": m2["test"]["roc_auc"], "gridsearch": sk,
        "best_within_noise": abs(best["mean"] - sk["best_score"]) <= max(best["std"], sk["best_std"]),
        "worker_pids_2": len({t["pid"] for t in m2["trials"]}),
    })
    print(json.dumps(results, indent=2), flush=True)
    return results


if __name__ == "__main__":
    main()
