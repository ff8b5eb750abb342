"""A new user's first minute: `pipelines.train` with default flags on a 1,000-row, 30-column CSV, phase by phase.

    python -m benchmarks.bench_first_minute            # 1,000 rows x 30 columns (29 features + label)
    python -m benchmarks.bench_first_minute --quick    # 300 rows: checks the machinery (a slow test)

One run, in fresh processes as a user runs them:

* train: ``python -m pipelines.train --input=data.csv --label=y --output_dir=out`` (default flags), from
  the command to report.html on disk, split into phases. The phases come from the process itself
  (a timestamp when the interpreter starts and after the imports) and from the artifacts' mtimes, each
  the end of a stage of the one Beam pipeline: transform_fn/ (read, split and tf.Transform's analysis),
  data/*.tfrecord (transform and TFRecords written), the trials' weights, evaluated_model/ (the model the
  test split scores, exported), model/ minus the refit's own seconds (test evaluation), model/ (the
  refit on every row, exported), report.html (report). Stages of one pipeline overlap a little
  (the DirectRunner runs what is ready); the mtimes are when each one's output landed.
* predict: ``python -m pipelines.predict --model_dir=out --json=<one row>``, wall clock.
* help: ``python -m pipelines.train --help`` and a mistyped flag (``--epoch=5``), wall clock.

The machine's load is printed with the numbers (os.getloadavg): on a shared machine every time is
inflated, and the phases tell which cost to cut next.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# Runs in the train subprocess: the clock starts with the interpreter (the imports are the first phase).
_DRIVER = """
import json, os, sys, time
t0 = time.time()
import pipelines.train, beam_ml.jobs.train, beam_ml.preprocess  # noqa: E401  (Beam, tf.Transform, TensorFlow: the job's imports; pipelines.train alone defers them)
t1 = time.time()
print("BENCH " + json.dumps({"started": t0, "imported": t1}), flush=True)
pipelines.train.run(sys.argv[1:])
print("BENCH " + json.dumps({"finished": time.time()}), flush=True)
"""


def write_csv(path: str, rows: int, columns: int = 30, seed: int = 0) -> dict:
    """A binary-classification CSV: columns-3 numeric features, 2 categorical, label y (logistic in 5 features)."""
    rng = np.random.default_rng(seed)
    numeric = columns - 3
    x = rng.normal(size=(rows, numeric))
    cat_a = rng.choice(["red", "green", "blue"], size=rows)
    cat_b = rng.choice([f"k{i}" for i in range(12)], size=rows)
    logit = x[:, :5] @ np.array([1.2, -0.8, 0.6, 0.4, -0.3]) + np.where(cat_a == "red", 0.7, 0.0) - 0.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    header = [f"f{i}" for i in range(numeric)] + ["color", "kind", "y"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(rows):
            w.writerow([f"{v:.5f}" for v in x[i]] + [cat_a[i], cat_b[i], y[i]])
    first = dict(zip(header, [float(v) for v in x[0]] + [str(cat_a[0]), str(cat_b[0])]))
    return {"header": header, "first_row": first}


def _mtime(pattern: str) -> float:
    paths = glob.glob(pattern, recursive=True)
    if not paths:
        raise RuntimeError(f"missing artifact: {pattern}")
    return max(os.path.getmtime(p) for p in paths)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wall(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=900)
    return time.time() - start, proc


def train_phases(csv_path: str, out: str) -> dict:
    """Runs pipelines.train (default flags) in a fresh process; returns the phases in seconds and the metrics."""
    wall, proc = _wall([sys.executable, "-c", _DRIVER, f"--input={csv_path}", "--label=y", f"--output_dir={out}"])
    if proc.returncode != 0:
        raise RuntimeError(f"pipelines.train failed: {proc.stderr[-2000:]}")
    marks = {}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            marks.update(json.loads(line[len("BENCH "):]))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    refit_s = float(metrics["final"]["seconds"]) if metrics["final"].get("evaluated") else 0.0
    served = _mtime(os.path.join(out, "model", "*", "saved_model.pb"))
    evaluated = (_mtime(os.path.join(out, "evaluated_model", "*", "saved_model.pb")) if refit_s else served)
    ends = [("imports", marks["imported"]),
            ("read, split, tf.Transform analyze", _mtime(os.path.join(out, "transform_fn", "**"))),
            ("transform, write TFRecords", _mtime(os.path.join(out, "data", "*.tfrecord*"))),
            ("trials", _mtime(os.path.join(out, "checkpoints", "*", "weights*", "**"))),
            ("export (evaluated model)", evaluated),
            ("test evaluation", served - refit_s if refit_s else served),
            ("refit on every row, export", served),
            ("report", _mtime(os.path.join(out, "report.html"))),
            ("exit", marks["finished"])]
    phases, previous = {}, marks["started"]
    for name, end in ends:
        phases[name] = round(max(0.0, end - previous), 2)
        previous = max(previous, end)
    return {"wall_s": round(wall, 2), "command_to_report_s": round(ends[-2][1] - marks["started"], 2),
            "interpreter_start_s": round(wall - (marks["finished"] - marks["started"]), 2),
            "phases_s": phases, "test": {k: metrics["test"].get(k) for k in ("roc_auc", "accuracy", "rows")},
            "model": metrics["summary"]["model"], "test_metrics": metrics["summary"].get("test_metrics")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--columns", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="300 rows: checks the machinery")
    parser.add_argument("--work_dir", default=None, help="where the CSV and the run go (default: a temp dir)")
    args = parser.parse_args(argv)
    rows = 300 if args.quick else args.rows
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_first_minute-")
    os.makedirs(work, exist_ok=True)
    csv_path = os.path.join(work, "data.csv")
    data = write_csv(csv_path, rows, args.columns)
    out = os.path.join(work, "out")
    load_before = os.getloadavg()[0]
    train = train_phases(csv_path, out)
    predict_s, proc = _wall([sys.executable, "-m", "pipelines.predict", f"--model_dir={out}",
                             "--json=" + json.dumps(data["first_row"])])
    if proc.returncode != 0 or '"score"' not in proc.stdout:
        raise RuntimeError(f"pipelines.predict failed: {proc.stdout[-1000:]} {proc.stderr[-2000:]}")
    help_s, proc = _wall([sys.executable, "-m", "pipelines.train", "--help"])
    if proc.returncode != 0 or "--final_fit" not in proc.stdout:
        raise RuntimeError(f"pipelines.train --help failed: {proc.stderr[-2000:]}")
    typo_s, proc = _wall([sys.executable, "-m", "pipelines.train", "--epoch=5"])
    if proc.returncode == 0 or "--epoch" not in proc.stdout + proc.stderr:
        raise RuntimeError(f"pipelines.train --epoch=5 did not fail naming the flag: {proc.stderr[-2000:]}")
    results = {"rows": rows, "columns": args.columns, "train": train, "predict_one_row_s": round(predict_s, 2),
               "train_help_s": round(help_s, 2), "train_bad_flag_s": round(typo_s, 2),
               "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count()}
    print(f"pipelines.train, default flags, {rows} rows x {args.columns} columns: {train['command_to_report_s']:.1f} s "
          f"from the command to report.html ({train['wall_s']:.1f} s wall, load {load_before:.1f} on "
          f"{os.cpu_count()} CPUs)", flush=True)
    for name, seconds in train["phases_s"].items():
        print(f"  {name:<36} {seconds:6.1f} s", flush=True)
    print(f"pipelines.predict, one row: {predict_s:.1f} s wall; pipelines.train --help: {help_s:.1f} s; "
          f"a mistyped flag: {typo_s:.1f} s", flush=True)
    print(json.dumps(results, indent=2), flush=True)
    return results


if __name__ == "__main__":
    main()
