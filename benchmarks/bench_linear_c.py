"""Does choosing LogisticRegression's C beat the fixed C=1 on bench_quality's held-out rows?

    python -m benchmarks.bench_linear_c                                # 8 datasets x 6 holdout splits, ~4 min
    python -m benchmarks.bench_linear_c --seeds=0 --only=breast_cancer  # one dataset, one split, seconds

Each dataset of benchmarks/bench_quality (mnist left out: too slow for a grid) is split into given and
held-out rows exactly as bench_quality splits it (`split_holdout`, one split per --seeds value; seed 0 is
bench_quality's own split), with the same scikit-learn features (`lr_features`, on the columns the
spec inferred from the given rows marks numeric and categorical). The baseline (a) is bench_quality's
LogisticRegression(C=1) with scikit-learn's default tol=1e-4; every other variant is fitted to
convergence (tol=1e-6) at the C some rule picks from GRID, using the given rows only:

* LR C=1 converged: the same objective fitted to convergence (what ours' exact linear fit computes);
* (b) the C with the best mean score over a stratified 5-fold CV of the given rows (ties: closest to 1),
  (c) the smallest C within one standard error of that best mean;
* the default training run's budget: the pipeline's own test split (20%, hash of the line number)
  and stratified folds of the rest (beam_ml.preprocess's hashes and Beam's quantiles), fitted on
  folds 1-4 and validated on fold 0: (d) the best C there, (e) the smallest C within one
  (bootstrap) standard error of the difference to the best;
* (f) `--tune`'s budget: 5-fold CV over those same folds;
* (g) C=1 unless another C's 5-fold CV mean beats C=1's by more than the SE of the paired difference,
  (h) C=1 unless another C beats it on fold 0 by more than the SE of the difference.

The chosen model is refitted on all given rows and scored on the held-out rows (ROC-AUC; accuracy for
digits), as bench_quality scores. Tables: per dataset on the first seed, each variant's held-out score,
chosen C and difference to (a); then per variant over every seed, on how many splits it is >= (a) on
all datasets, how many dataset-splits are >= / < (a), and the mean difference. The full report (every
C's held-out score, the CV and fold-0 scores) goes to <work_dir>/report.json. A third table, on the first seed,
scores LR(C=1) on the datasets with missing categorical values with a missing value imputed as the most
frequent (bench_quality's features) or kept as its own category, at tol=1e-4 and 1e-6.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from beam_ml.io.batches import LINE_COLUMN
from beam_ml.preprocess import (_FOLD_SEED_OFFSET, PreprocessConfig, assign_folds, fold_boundaries,
                                stable_hash_fraction)
from beam_ml.spec import infer_spec
from benchmarks.bench_quality import DATASETS, _labels, _score, lr_features, split_holdout, write_dataset

GRID = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 100)
DEFAULT_DATASETS = [n for n in DATASETS if n != "mnist"]
SEEDS = (0, 1, 2, 3, 4, 5)
FOLDS = 5
TOL_DEFAULT, TOL_CONVERGED = 1e-4, 1e-6
BOOTSTRAP = 200
_TIE = 1e-12  # scores this close count as equal
# key -> label; each key K has the held-out score under K and the chosen C under K + "C".
VARIANTS = (("conv1", "LR C=1 converged"), ("cv", "(b) 5-fold CV best C"), ("c1se", "(c) 5-fold CV one-SE"),
            ("f0", "(d) fold 0 best C"), ("f01se", "(e) fold 0 one-SE"), ("tune", "(f) 5-fold CV, non-test rows"),
            ("g", "(g) C=1 unless CV beats it by 1 SE"), ("h", "(h) C=1 unless fold 0 beats it by 1 SE"))


def closest_to_1(candidates: Sequence[float]) -> float:
    """Of equally good C values, the one nearest the default C=1 (on a log scale; the smaller on a tie)."""
    return min(candidates, key=lambda c: (abs(np.log(c)), c))


def best_c(scores: Mapping[float, float]) -> float:
    """The C with the highest score (ties: closest to 1)."""
    top = max(scores.values())
    return closest_to_1([c for c in scores if scores[c] >= top - _TIE])


def smallest_within(scores: Mapping[float, float], margin: Mapping[float, float]) -> float:
    """The smallest (most regularised) C whose score is within margin[C] of the best (the one-SE rule)."""
    top = max(scores.values())
    return min(c for c in scores if scores[c] >= top - margin[c])


def one_unless_beaten(scores: Mapping[float, float], margin: Mapping[float, float]) -> float:
    """C=1, unless some C scores more than margin[C] above C=1: then the best of those."""
    better = [c for c in scores if scores[c] - scores[1] > margin[c] + _TIE]
    return max(better, key=lambda c: scores[c]) if better else 1


def pipeline_folds(y: np.ndarray, config: PreprocessConfig = PreprocessConfig(None, "")) -> tuple:
    """(is_test, fold) per row of a CSV with these labels, as the training pipeline splits it by line number.

    The hashes and the fold assignment are beam_ml.preprocess's; the per-class fold boundaries come from
    Beam's ApproximateQuantilesCombineFn with the pipeline's parameters, run in-process.
    """
    lines = pa.RecordBatch.from_arrays([pa.array(np.arange(len(y), dtype=np.int64) + 2)], names=[LINE_COLUMN])
    is_test = stable_hash_fraction(lines, None, config.split_seed) < config.test_fraction
    fold_hash = stable_hash_fraction(lines, None, config.split_seed + _FOLD_SEED_OFFSET)
    boundaries = {}
    for c in np.unique(y):
        # build_preprocess's parameters (its epsilon keeps the quantiles exact at these sizes)
        fn = ApproximateQuantilesCombineFn.create(num_quantiles=config.cv_folds + 1, epsilon=1e-4,
                                                  input_batched=True)
        acc = fn.add_input(fn.create_accumulator(), fold_hash[(y == c) & ~is_test].tolist())
        boundaries[c] = fold_boundaries(fn.extract_output(fn.merge_accumulators([acc])), config.cv_folds)
    return is_test, assign_folds(fold_hash, y, boundaries)


def _model(features, c: float, tol: float):
    return make_pipeline(clone(features), LogisticRegression(C=c, max_iter=5000, tol=tol))


def _held_out_score(task: str, num_classes: int, y: np.ndarray, probs: np.ndarray) -> float:
    return _score(task, num_classes, y, probs if task == "multiclass" else probs[:, 1])


def bootstrap_se(score: Callable, y: np.ndarray, probs: np.ndarray, resamples: int = BOOTSTRAP) -> float:
    """The bootstrap standard error of score(y, probs) over the rows (draws with one class skipped)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        try:
            values.append(score(y[idx], probs[idx]))
        except ValueError:  # one class drawn
            continue
    return float(np.std(values, ddof=1))


def choose_c(task: str, num_classes: int, features, x: pd.DataFrame, y: np.ndarray, x_held: pd.DataFrame,
             y_held: np.ndarray, grid: Sequence[float] = GRID, resamples: int = BOOTSTRAP) -> dict:
    """Every variant's chosen C and held-out score for one split (see the module docstring).

    Args:
      task, num_classes: the spec's, for the score (ROC-AUC binary, accuracy multiclass).
      features: an unfitted scikit-learn transformer of the feature columns (cloned per fit).
      x, y: the given rows, in CSV order (their line numbers decide the pipeline's folds), labels as ints.
      x_held, y_held: the held-out rows.
      grid: the C values to choose from (must hold 1); resamples: bootstrap draws for fold 0's standard errors.
    Returns:
      {"base": (a)'s held-out score, "oracle": {C: held-out score}, K: score, K + "C": chosen C per variant,
       "cv_means", "fold0": {C: score}, "rows_given", "rows_fold0"}.
    """
    y, y_held = np.asarray(y), np.asarray(y_held)

    def score(yy, probs):
        return _held_out_score(task, num_classes, yy, probs)

    def fit(c, rows=slice(None), tol=TOL_CONVERGED):
        return _model(features, c, tol).fit(x.iloc[rows], y[rows])

    oracle = {c: score(y_held, fit(c).predict_proba(x_held)) for c in grid}
    out = {"rows_given": len(y), "base": score(y_held, fit(1, tol=TOL_DEFAULT).predict_proba(x_held)),
           "oracle": oracle, "conv1C": 1}

    cv = {c: [] for c in grid}
    for train, val in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y):
        for c in grid:
            cv[c].append(score(y[val], fit(c, train).predict_proba(x.iloc[val])))
    means = {c: float(np.mean(v)) for c, v in cv.items()}
    se = {c: float(np.std(v, ddof=1) / np.sqrt(FOLDS)) for c, v in cv.items()}
    top = max(grid, key=lambda c: (means[c], -abs(np.log(c))))
    paired_se = {c: float(np.std(np.subtract(cv[c], cv[1]), ddof=1) / np.sqrt(FOLDS)) for c in grid}
    out.update(cvC=best_c(means), c1seC=smallest_within(means, {c: se[top] for c in grid}),
               gC=one_unless_beaten(means, paired_se), cv_means=means)

    is_test, fold = pipeline_folds(y)
    train, val = ~is_test & (fold != 0), ~is_test & (fold == 0)
    f0, f0_se = {}, {}
    for c in grid:
        probs = fit(c, train).predict_proba(x.iloc[val])
        f0[c], f0_se[c] = score(y[val], probs), bootstrap_se(score, y[val], probs, resamples)
    top0 = max(grid, key=lambda c: (f0[c], -abs(np.log(c))))
    out.update(f0C=best_c(f0), f01seC=smallest_within(f0, {c: float(np.hypot(f0_se[top0], f0_se[c])) for c in grid}),
               hC=one_unless_beaten(f0, {c: float(np.hypot(f0_se[c], f0_se[1])) for c in grid}), fold0=f0,
               rows_fold0=int(val.sum()))

    tune = {c: float(np.mean([score(y[~is_test & (fold == k)],
                                    fit(c, ~is_test & (fold != k)).predict_proba(x.iloc[~is_test & (fold == k)]))
                              for k in range(FOLDS)])) for c in grid}
    out["tuneC"] = best_c(tune)
    out.update({key: oracle[out[key + "C"]] for key, _ in VARIANTS})
    return out


def missing_values(task: str, num_classes: int, num: list, cat: list, x: pd.DataFrame, y: np.ndarray,
                   x_held: pd.DataFrame, y_held: np.ndarray) -> dict:
    """Held-out score of LogisticRegression(C=1) with a missing categorical value imputed as the most frequent
    (bench_quality's features) or kept as a category of its own, at scikit-learn's default tol and converged."""
    return {f"{key}, tol={tol:.0e}".replace("e-0", "e-"): _held_out_score(task, num_classes, y_held, _model(
                lr_features(num, cat, missing_as_category=as_category), 1, tol).fit(x, y).predict_proba(x_held))
            for key, as_category in (("most frequent", False), ("own category", True))
            for tol in (TOL_DEFAULT, TOL_CONVERGED)}


def run_split(name: str, seed: int, work: str, missing: bool = False) -> dict:
    """bench_quality's split `seed` of one dataset, its features, and choose_c on it (and, with `missing` and
    missing categorical values in the given rows, missing_values)."""
    label, positive = DATASETS[name]
    full = os.path.join(work, f"{name}.csv")
    if not os.path.exists(full):
        write_dataset(name, full)
    given, held = os.path.join(work, f"{name}.s{seed}.given.csv"), os.path.join(work, f"{name}.s{seed}.holdout.csv")
    split_holdout(full, label, given, held, seed=seed)
    spec = infer_spec(given, label, positive_label=positive)
    columns = spec.numeric_columns + spec.categorical_columns
    frames = [pd.read_csv(p, dtype={c: str for c in spec.categorical_columns + [label]}) for p in (given, held)]
    args = (frames[0][columns], _labels(frames[0], spec), frames[1][columns], _labels(frames[1], spec))
    result = choose_c(spec.task, spec.num_classes, lr_features(spec.numeric_columns, spec.categorical_columns), *args)
    if missing and spec.categorical_columns and frames[0][spec.categorical_columns].isna().any().any():
        result["missing_values"] = missing_values(spec.task, spec.num_classes, spec.numeric_columns,
                                                  spec.categorical_columns, *args)
    return dict(dataset=name, seed=seed, **result)


def summarize(rows: list[dict]) -> list[dict]:
    """Per variant over every dataset-split: splits >= (a) on every dataset, dataset-splits >= / <, mean diff."""
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for key, name in VARIANTS:
        diff = np.array([r[key] - r["base"] for r in rows])
        out.append({"variant": key, "name": name, "splits": len(seeds),
                    "splits_all_at_least": sum(all(r[key] - r["base"] >= -_TIE for r in rows if r["seed"] == s)
                                               for s in seeds),
                    "at_least": int((diff >= -_TIE).sum()), "below": int((diff < -_TIE).sum()),
                    "mean_diff": float(diff.mean()),
                    "mean_diff_by_dataset": {d: float(np.mean([r[key] - r["base"] for r in rows if r["dataset"] == d]))
                                             for d in dict.fromkeys(r["dataset"] for r in rows)}})
    return out


def print_tables(rows: list[dict], summary: list[dict]) -> None:
    first = min(r["seed"] for r in rows)
    print(f"\nHeld-out score (ROC-AUC; accuracy for digits) on split seed={first}; (a) is LogisticRegression(C=1, "
          "tol=1e-4); each variant: score (chosen C, minus (a)).")
    print("\n| dataset | rows given | (a) LR C=1 | " + " | ".join(n for _, n in VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    for r in (r for r in rows if r["seed"] == first):
        cells = [f"{r[k]:.5f} (C={r[k + 'C']:g}, {r[k] - r['base']:+.5f})" for k, _ in VARIANTS]
        print(f"| {r['dataset']} | {r['rows_given']} | {r['base']:.5f} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    print(f"\nOver split seeds {','.join(map(str, seeds))}: variant minus (a).")
    print("\n| variant | splits >= (a) on every dataset | dataset-splits >= / < (a) | mean minus (a) |")
    print("|---|---|---|---|")
    for s in summary:
        print(f"| {s['name']} | {s['splits_all_at_least']}/{s['splits']} | {s['at_least']} / {s['below']} | "
              f"{s['mean_diff']:+.5f} |")
    missing = [r for r in rows if "missing_values" in r]
    if missing:
        keys = list(missing[0]["missing_values"])
        print(f"\nLogisticRegression(C=1) held out on split seed={first}, the datasets with missing categorical "
              "values: a missing value imputed as the most frequent (bench_quality's features) or its own category.")
        print("\n| dataset | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for r in missing:
            print(f"| {r['dataset']} | " + " | ".join(f"{r['missing_values'][k]:.5f}" for k in keys) + " |")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="holdout split seeds, comma-separated")
    parser.add_argument("--only", "--datasets", dest="datasets", default=",".join(DEFAULT_DATASETS),
                        help=f"comma-separated, of: {', '.join(DATASETS)}")
    parser.add_argument("--work_dir", default="out/bench_linear_c")
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (expected some of {', '.join(DATASETS)})")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    with threadpool_limits(1):  # one core: the machine is shared, and the fits are small
        for seed in seeds:
            for name in names:
                rows.append(run_split(name, seed, args.work_dir, missing=seed == seeds[0]))
                print(json.dumps({k: rows[-1][k] for k in ("dataset", "seed", "base")
                                  + tuple(k + s for k, _ in VARIANTS for s in ("", "C"))}), flush=True)
    summary = summarize(rows)
    print_tables(rows, summary)
    report = {"command": " ".join(["python -m benchmarks.bench_linear_c"] + (sys.argv[1:] if argv is None else argv)),
              "grid": GRID, "seeds": seeds, "rows": rows, "summary": summary}
    with open(os.path.join(args.work_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    return report


if __name__ == "__main__":
    main()
