"""Preprocessing throughput: this project's pipeline against three baselines.

    python -m benchmarks.bench_preprocess
    python -m benchmarks.bench_preprocess --rows=20000 --only=a,b,c --work_dir=/tmp/bench

Every method z-scores the 30 numeric columns of a CSV in the credit-card
schema (``Time, V1..V28, Amount``; 200,000 rows by default, from
``beam_ml.datasets.materialize('fraud', ...)``), passes the label ``Class``
through, and writes the result:

* (a) ``tft-dicts``: the tf.Transform census-example recipe. ``ReadFromText``
  (header skipped), a ``Map`` parsing each line to a per-row dict,
  ``AnalyzeAndTransformDataset`` on instance dicts with metadata from a
  feature spec, ``ExampleProtoCoder``, ``WriteToTFRecord``.
* (b) ``tft-csvtfxio``: tfx_bsl's ``CsvTFXIO(..., skip_header_lines=1)``
  ``BeamSource()`` into ``AnalyzeAndTransformDataset`` with
  ``TensorAdapterConfig()``; transformed data stay RecordBatches
  (``output_record_batches=True``, the faster of tf.Transform's two outputs)
  and ``EncodeTransformedDataset`` makes the tf.Examples for
  ``WriteToTFRecord``.
* (c) ``pandas-sklearn``: ``pd.read_csv``, ``pd.get_dummies`` (a no-op on this
  all-numeric schema, but part of the usual recipe), ``StandardScaler``
  fit/transform, ``np.save``. Single machine, in memory: the ceiling a Beam
  pipeline on one core is compared with.
* (ours): ``pipelines.train.run([... '--preprocess_only', '--runner=DirectRunner'])``;
  if it fails (e.g. not written yet) the run prints ``ours: unavailable (...)``
  and still measures the baselines.

Each method runs once, sequentially, in this process; the time is the wall
clock of the whole method: Beam pipeline construction, tf.Transform analysis
and transform, and writing. Beam methods use ``--runner=DirectRunner`` with
its defaults made explicit (``--direct_num_workers=1``,
``--direct_running_mode=in_memory``): offline, the DirectRunner's Prism attempt
(a GitHub download) fails at once and it falls back to the FnApiRunner, in
this process. Before timing, each selected Beam method does one small untimed
run (``--warmup_rows``) so that one-off process costs (TensorFlow start-up,
first graph tracing) do not land on whichever method happens to run first.
The JSON also records each method's CPU seconds and the load average: a
shared CPU inflates wall-clock times.

Every output is checked after its timed run (untimed): each transformed
column must be an increasing affine function of its raw column with mean 0
and standard deviation 1, and the labels must be intact. A benchmark of a
broken pipeline would be worthless.

Then (unless ``--no_shapes``) the shapes issue 11 names, ours only, each in a
fresh ``python -m pipelines.train --preprocess_only`` subprocess whose own peak RSS (VmHWM, via ``benchmarks._peak_rss``)
is recorded, timed by counts.json's ``pipeline_seconds`` (pipeline construction,
analysis, transform and writing; not the interpreter's TensorFlow/Beam imports,
which take 5-8 s before any pipeline exists), and checked (every row read and
split, none dead) before it counts:

* ``wide_categorical``: 1,500 rows x 30 columns, 15 of them categorical (goal < 8 s);
* ``pixels``: 3,500 rows x 785 numeric columns, an MNIST-shaped table (goal < 8 s);
* ``large``: ``--large_rows`` (2,000,000) rows of the credit-card schema (goals:
  peak RSS < 2 GB, rows/s >= 1.5x the 200k run's, measured the same way).

Results are printed as a table and written to ``<work_dir>/bench_preprocess.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import sklearn
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from sklearn.preprocessing import StandardScaler
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from beam_ml import datasets

NUMERIC_COLUMNS: tuple[str, ...] = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
LABEL_COLUMN = "Class"
CSV_COLUMNS: tuple[str, ...] = (*NUMERIC_COLUMNS, LABEL_COLUMN)

_BEAM_ARGS = ("--runner=DirectRunner", "--direct_num_workers=1",
              "--direct_running_mode=in_memory")
_ORDER = ("a", "b", "c", "ours")


# ------------------------------------------------------------ the recipe

def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """z-scores every numeric column and passes the label through.

    Args:
        inputs: Raw feature tensors keyed by CSV column name.

    Returns:
        Transformed tensors under the same names.
    """
    outputs = {name: tft.scale_to_z_score(inputs[name]) for name in NUMERIC_COLUMNS}
    outputs[LABEL_COLUMN] = inputs[LABEL_COLUMN]
    return outputs


def raw_feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """The raw CSV's feature spec: float numerics and an int64 label."""
    spec = {name: tf.io.FixedLenFeature([], tf.float32) for name in NUMERIC_COLUMNS}
    spec[LABEL_COLUMN] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def parse_csv_line(line: str) -> dict[str, float | int]:
    """Parses one CSV line of the credit-card schema into an instance dict."""
    values = line.split(",")
    row: dict[str, float | int] = {
        name: float(value) for name, value in zip(NUMERIC_COLUMNS, values)}
    row[LABEL_COLUMN] = int(values[-1])
    return row


def _pipeline() -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(list(_BEAM_ARGS)))


def _tft_temp_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "tft_tmp")


def _write_outputs(examples, transform_fn, out_dir: str) -> None:
    """The tail both tf.Transform recipes share: serialized examples to TFRecords, the transform_fn."""
    _ = examples | "WriteTFRecords" >> beam.io.WriteToTFRecord(
        os.path.join(out_dir, "transformed"), file_name_suffix=".tfrecord")
    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out_dir)


# ----------------------------------------------------------- the methods

def run_tft_instance_dicts(csv_path: str, out_dir: str) -> None:
    """Baseline (a): the tf.Transform census-example recipe on per-row dicts.

    Args:
        csv_path: The input CSV (credit-card schema, with a header).
        out_dir: Receives ``transformed-*.tfrecord`` and the transform_fn.
    """
    raw_metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec())
    with _pipeline() as pipeline:
        with tft_beam.Context(temp_dir=_tft_temp_dir(out_dir)):
            raw_data = (
                pipeline
                | "ReadCsv" >> beam.io.ReadFromText(csv_path, skip_header_lines=1)
                | "ParseLines" >> beam.Map(parse_csv_line))
            (transformed_data, transformed_metadata), transform_fn = (
                (raw_data, raw_metadata)
                | "AnalyzeAndTransform"
                >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
            coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
            _write_outputs(transformed_data | "EncodeExamples" >> beam.Map(coder.encode), transform_fn, out_dir)


def run_tft_csv_tfxio(csv_path: str, out_dir: str) -> None:
    """Baseline (b): tfx_bsl's CsvTFXIO into tf.Transform, RecordBatches out.

    Args:
        csv_path: The input CSV (credit-card schema, with a header).
        out_dir: Receives ``transformed-*.tfrecord`` and the transform_fn.
    """
    csv_tfxio = tfxio.CsvTFXIO(
        file_pattern=csv_path,
        column_names=list(CSV_COLUMNS),
        schema=schema_utils.schema_from_feature_spec(raw_feature_spec()),
        skip_header_lines=1)
    with _pipeline() as pipeline:
        with tft_beam.Context(temp_dir=_tft_temp_dir(out_dir)):
            raw_data = pipeline | "ReadCsv" >> csv_tfxio.BeamSource()
            transformed_dataset, transform_fn = (
                (raw_data, csv_tfxio.TensorAdapterConfig())
                | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                    preprocessing_fn, output_record_batches=True))
            _write_outputs(transformed_dataset | "EncodeExamples" >> tft_beam.EncodeTransformedDataset(),
                           transform_fn, out_dir)


def run_pandas_sklearn(csv_path: str, out_dir: str) -> None:
    """Baseline (c): pandas + scikit-learn in memory, saved with numpy.

    Args:
        csv_path: The input CSV (credit-card schema, with a header).
        out_dir: Receives ``features.npy`` (z-scored, columns in CSV order)
            and ``labels.npy``.
    """
    frame = pd.read_csv(csv_path)
    labels = frame.pop(LABEL_COLUMN).to_numpy()
    # One-hot encodes string columns; there are none in this schema, but the
    # call (and its cost) is part of the recipe being measured.
    frame = pd.get_dummies(frame)
    features = StandardScaler().fit_transform(frame.to_numpy(dtype=np.float64))
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "features.npy"), features)
    np.save(os.path.join(out_dir, "labels.npy"), labels)


def run_ours(csv_path: str, out_dir: str) -> None:
    """(ours): the project's training pipeline, preprocessing only.

    Args:
        csv_path: The input CSV (credit-card schema, with a header).
        out_dir: The pipeline's ``--output_dir``.
    """
    from pipelines import train  # imported late: it is optional here

    result = train.run([
        f"--input={csv_path}", f"--label={LABEL_COLUMN}", "--positive_label=1",
        f"--output_dir={out_dir}", "--preprocess_only", "--runner=DirectRunner"])
    if hasattr(result, "wait_until_finish"):
        result.wait_until_finish()


# ------------------------------------------------------ reading outputs

def read_tfrecords(pattern: str) -> dict[str, np.ndarray]:
    """Reads tf.Examples of scalar or fixed-length features into columns.

    The feature spec is taken from the first record, so any such output can
    be read; ``.gz`` files are read as GZIP.

    Args:
        pattern: A glob of TFRecord files.

    Returns:
        One numpy array per feature, rows in file order.

    Raises:
        FileNotFoundError: If nothing matches `pattern`.
    """
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    compression = "GZIP" if files[0].endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(files, compression_type=compression)
    first = tf.train.Example.FromString(next(iter(dataset)).numpy())
    spec = {}
    for name, feature in first.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value
        dtype = {"float_list": tf.float32, "int64_list": tf.int64,
                 "bytes_list": tf.string}[kind]
        shape = [] if len(values) == 1 else [len(values)]
        spec[name] = tf.io.FixedLenFeature(shape, dtype)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in spec}
    for batch in dataset.batch(8192).map(lambda x: tf.io.parse_example(x, spec)):
        for name, tensor in batch.items():
            parts[name].append(tensor.numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def read_npy(out_dir: str) -> dict[str, np.ndarray]:
    """Reads baseline (c)'s output back into named columns."""
    features = np.load(os.path.join(out_dir, "features.npy"))
    columns = {name: features[:, i] for i, name in enumerate(NUMERIC_COLUMNS)}
    columns[LABEL_COLUMN] = np.load(os.path.join(out_dir, "labels.npy"))
    return columns


def _read_ours(out_dir: str) -> dict[str, np.ndarray]:
    # Takes every TFRecord under the output (train and eval splits together
    # are the whole data set) and maps the pipeline's transformed features
    # (the "numeric_xf" block, "label") back to the raw columns, so one check serves all.
    files = [f for f in glob.glob(os.path.join(out_dir, "**", "*tfrecord*"), recursive=True)
             if os.path.isfile(f) and "tmp" not in os.path.relpath(f, out_dir)]
    if not files:
        raise FileNotFoundError(f"no *tfrecord* files under {out_dir}")
    parts: dict[str, list[np.ndarray]] = {}
    for f in sorted(files):
        for name, values in read_tfrecords(f).items():
            parts.setdefault(name, []).append(values)
    columns = {name: np.concatenate(v) for name, v in parts.items()}
    if "numeric_xf" in columns:  # ours: every numeric column in one block, in spec (= CSV) order
        block = columns.pop("numeric_xf").reshape(-1, len(NUMERIC_COLUMNS))
        columns.update({name: block[:, i] for i, name in enumerate(NUMERIC_COLUMNS)})
    if LABEL_COLUMN not in columns and "label" in columns:
        columns[LABEL_COLUMN] = columns.pop("label")
    return columns


def check_z_scores(columns: dict[str, np.ndarray], csv_path: str,
                   stats_tolerance: float = 1e-3) -> dict[str, float]:
    """Asserts that `columns` are the z-scored numerics and intact labels.

    Each transformed column must be an increasing affine function of its raw
    column (checked on sorted values, as Beam does not keep row order) with
    mean 0 and standard deviation 1 over all rows, within `stats_tolerance`.
    With the default tolerance that pins the statistics to the whole data
    set's; a looser one admits statistics analyzed on a training split only.

    Args:
        columns: Transformed columns by raw column name.
        csv_path: The raw CSV they were made from.
        stats_tolerance: Allowed |mean| and |std - 1| of each column.

    Returns:
        The worst |mean|, |std - 1| and affine-fit error over the columns.

    Raises:
        AssertionError: Naming the column and what was wrong.
    """
    raw = pa_csv.read_csv(csv_path)
    n = raw.num_rows
    worst = {"max_abs_mean": 0.0, "max_abs_std_minus_1": 0.0, "max_fit_error": 0.0}
    for name in NUMERIC_COLUMNS:
        if name not in columns:
            raise AssertionError(f"output lacks column {name!r}; has {sorted(columns)}")
        got = np.sort(np.asarray(columns[name], dtype=np.float64).reshape(-1))
        if got.size != n:
            raise AssertionError(f"{name}: {got.size} values, expected {n} rows")
        x = np.sort(raw.column(name).to_numpy().astype(np.float64))
        slope, intercept = np.polyfit(x, got, 1)
        # Outputs are float32: about 7 significant digits of values that reach
        # ~100 standard deviations in the heavy-tailed columns.
        fit_error = float(np.max(np.abs(got - (slope * x + intercept))))
        fit_tolerance = 1e-4 * max(1.0, float(np.max(np.abs(got))))
        mean, std = float(got.mean()), float(got.std())
        if (slope <= 0 or fit_error > fit_tolerance or abs(mean) > stats_tolerance
                or abs(std - 1) > stats_tolerance):
            raise AssertionError(
                f"{name} is not z-scored: mean={mean:.5f} std={std:.5f} "
                f"(tolerance {stats_tolerance}), affine fit slope={slope:.4g} "
                f"max error={fit_error:.3g} (tolerance {fit_tolerance:.3g})")
        worst["max_abs_mean"] = max(worst["max_abs_mean"], abs(mean))
        worst["max_abs_std_minus_1"] = max(worst["max_abs_std_minus_1"], abs(std - 1))
        worst["max_fit_error"] = max(worst["max_fit_error"], fit_error)
    got_labels = np.asarray(columns.get(LABEL_COLUMN, [])).reshape(-1).astype(np.int64)
    want_labels = raw.column(LABEL_COLUMN).to_numpy().astype(np.int64)
    if not np.array_equal(np.sort(got_labels), np.sort(want_labels)):
        raise AssertionError(
            f"{LABEL_COLUMN}: labels changed ({int(got_labels.sum())} positives "
            f"in {got_labels.size} rows, expected {int(want_labels.sum())} in {n})")
    return {k: float(f"{v:.3g}") for k, v in worst.items()}


# ----------------------------------------------------------- the harness

@dataclasses.dataclass(frozen=True)
class Method:
    """A measured method: how to run it and how to read its output back."""

    key: str
    name: str
    run: Callable[[str, str], None]
    read: Callable[[str], dict[str, np.ndarray]]
    uses_beam: bool
    # Ours analyzes on its training split only, so whole-data statistics are
    # near, not at, 0 and 1.
    stats_tolerance: float = 1e-3


METHODS: dict[str, Method] = {
    "a": Method("a", "tft-dicts (ReadFromText+Map, ExampleProtoCoder)",
                run_tft_instance_dicts,
                lambda d: read_tfrecords(os.path.join(d, "transformed-*")), True),
    "b": Method("b", "tft-csvtfxio (CsvTFXIO, RecordBatches)", run_tft_csv_tfxio,
                lambda d: read_tfrecords(os.path.join(d, "transformed-*")), True),
    "c": Method("c", "pandas-sklearn (read_csv, StandardScaler, np.save)",
                run_pandas_sklearn, read_npy, False),
    "ours": Method("ours", "ours (pipelines.train --preprocess_only)", run_ours,
                   _read_ours, True, stats_tolerance=0.1),
}


def measure(method: Method, csv_path: str, rows: int, out_dir: str,
            verify: bool = True) -> dict:
    """Runs one method once, timed, then checks its output (untimed).

    Args:
        method: What to run.
        csv_path: Input CSV.
        rows: Its number of data rows (for rows/s).
        out_dir: A fresh output directory for the method (emptied first).
        verify: Whether to check the output with `check_z_scores`.

    Returns:
        A JSON-able record: key, name, rows, seconds (wall clock), rows_per_s,
        cpu_seconds (this process), verified, check (worst deviations) and
        error (None, or why it failed).
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    record = {"key": method.key, "name": method.name, "rows": rows, "seconds": None,
              "rows_per_s": None, "cpu_seconds": None, "verified": False,
              "check": None, "error": None}
    # CPU time of this process (all threads) beside the wall clock: on a shared
    # machine it shows how much of the wall time was spent waiting for a core.
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        method.run(csv_path, out_dir)
    except Exception as e:  # a failing method is reported, not fatal
        record["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        return record
    seconds = time.perf_counter() - start
    record.update(seconds=round(seconds, 3), rows_per_s=round(rows / seconds, 1),
                  cpu_seconds=round(time.process_time() - start_cpu, 3))
    if verify:
        try:
            record["check"] = check_z_scores(
                method.read(out_dir), csv_path, method.stats_tolerance)
            record["verified"] = True
        except (AssertionError, FileNotFoundError, KeyError, ValueError) as e:
            record["error"] = f"output check failed: {e}"
    return record


def _ratio(results: dict[str, dict], top: str, bottom: str) -> float | None:
    a, b = results.get(top), results.get(bottom)
    if not a or not b or not a["rows_per_s"] or not b["rows_per_s"]:
        return None
    return round(a["rows_per_s"] / b["rows_per_s"], 2)


def format_table(records: Sequence[dict], ratios: dict[str, float | None]) -> str:
    """Renders the results table printed at the end of a run."""
    lines = [f"{'method':<55} {'rows':>8} {'seconds':>9} {'rows/s':>10} "
             f"{'cpu s':>8}  check"]
    for r in records:
        if r["seconds"] is None:
            lines.append(f"{r['name']:<55} {r['rows']:>8} {'-':>9} {'-':>10} "
                         f"{'-':>8}  unavailable ({r['error']})")
            continue
        check = "ok" if r["verified"] else (r["error"] or "not checked")
        lines.append(f"{r['name']:<55} {r['rows']:>8} {r['seconds']:>9.1f} "
                     f"{r['rows_per_s']:>10,.0f} {r['cpu_seconds']:>8.1f}  {check}")
    for name, value in ratios.items():
        lines.append(f"{name:<20} {'-' if value is None else f'{value:.2f}x'}")
    return "\n".join(lines)


# ------------------------------------------------ shapes (ours only)

def write_wide_categorical(path: str, rows: int = 1_500, seed: int = 0) -> str:
    """15 numeric and 15 categorical columns (5..19 distinct values) and a binary label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"num{i}": np.round(rng.normal(size=rows), 3) for i in range(15)})
    for i in range(15):
        frame[f"cat{i}"] = [f"v{v}" for v in rng.integers(0, 5 + i, rows)]
    frame["label"] = (rng.random(rows) < 0.3).astype(int)
    frame.to_csv(path, index=False)
    return path


def write_pixels(path: str, rows: int = 3_500, seed: int = 0) -> str:
    """784 pixel columns (0..255) and a 10-class label: the MNIST CSV shape."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 256, size=(rows, 784)), columns=[f"pixel{i}" for i in range(784)])
    frame["label"] = rng.integers(0, 10, rows)
    frame.to_csv(path, index=False)
    return path


def measure_shape(name: str, csv_path: str, label: str, rows: int, out_dir: str) -> dict:
    """Ours in a fresh process on one CSV: preprocess seconds, rows/s, peak RSS; checked before it counts."""
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks._peak_rss", "pipelines.train", f"--input={csv_path}", f"--label={label}",
               f"--output_dir={out_dir}", "--preprocess_only", "--runner=DirectRunner"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - start
    # The child's own VmHWM (benchmarks/_peak_rss.py): its rusage would include this
    # process's resident size, which Linux carries into a child's ru_maxrss at exec.
    peaks = [int(line.split()[1]) for line in output.splitlines() if line.startswith("PEAK_RSS_KB ")]
    peak_kib = peaks[-1] if peaks else -1
    record = {"shape": name, "rows": rows, "process_seconds": round(wall, 2), "peak_rss_mb": round(peak_kib / 1024),
              "preprocess_seconds": None, "rows_per_s": None, "verified": False, "error": None}
    if proc.returncode != 0:
        record["error"] = f"exit {proc.returncode}: {output[-2000:]}"
        return record
    with open(os.path.join(out_dir, "counts.json"), encoding="utf-8") as f:
        counts = json.load(f)
    record.update(preprocess_seconds=counts["pipeline_seconds"],
                  rows_per_s=round(rows / counts["pipeline_seconds"], 1))
    splits = counts["rows_train"] + counts["rows_validation"] + counts["rows_test"]
    if counts["rows_in"] == rows == splits and counts["rows_dead"] == 0:
        record["verified"] = True
    else:
        record["error"] = f"counts do not add up: {counts}"
    return record


def run_shapes(work_dir: str, large_rows: int) -> dict:
    """The issue's shapes, each in its own subprocess, one after another (each reports its own peak RSS)."""
    data_dir = os.path.join(work_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    fraud_200k = datasets.materialize("fraud", data_dir, rows=200_000)
    cases = [
        ("wide_categorical", write_wide_categorical(os.path.join(data_dir, "wide_categorical.csv")), "label", 1_500),
        ("pixels", write_pixels(os.path.join(data_dir, "pixels.csv")), "label", 3_500),
        ("fraud_200k", fraud_200k, LABEL_COLUMN, 200_000),
    ]
    if large_rows:
        cases.append(("large", datasets.materialize("fraud", data_dir, rows=large_rows), LABEL_COLUMN, large_rows))
    shapes = {}
    for name, path, label, rows in cases:
        print(f"shape {name}: {rows} rows", flush=True)
        shapes[name] = measure_shape(name, path, label, rows, os.path.join(work_dir, "shapes", name))
        print(f"  {shapes[name]}", flush=True)
    return shapes


def shape_goals(shapes: dict) -> dict[str, str]:
    """Each shape goal of issue 11, met or not, with its figure."""
    goals = {}

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for name in ("wide_categorical", "pixels"):
        s = shapes.get(name) or {}
        if s.get("verified"):
            goals[f"{name} preprocess < 8 s"] = f"{s['preprocess_seconds']:.1f} s ({verdict(s['preprocess_seconds'] < 8)})"
    large, base = shapes.get("large") or {}, shapes.get("fraud_200k") or {}
    if large.get("verified"):
        goals["large peak RSS < 2 GB"] = f"{large['peak_rss_mb']} MB ({verdict(large['peak_rss_mb'] < 2048)})"
        if base.get("verified"):
            ratio = large["rows_per_s"] / base["rows_per_s"]
            goals["large rows/s >= 1.5x 200k"] = f"{ratio:.2f}x ({verdict(ratio >= 1.5)})"
    return goals


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows of the generated credit-card CSV (default 200000)")
    parser.add_argument("--work_dir", default=None,
                        help="data, outputs and bench_preprocess.json "
                             "(default: <tmp>/beam_ml_bench)")
    parser.add_argument("--only", default=",".join(_ORDER),
                        help="comma-separated subset of a,b,c,ours")
    parser.add_argument("--warmup_rows", type=int, default=2_000,
                        help="rows of the untimed warm-up run per Beam method; 0: none")
    parser.add_argument("--no_shapes", action="store_true",
                        help="skip the wide/pixels/large shapes (ours only, in subprocesses)")
    parser.add_argument("--large_rows", type=int, default=2_000_000,
                        help="rows of the large shape (0: skip it)")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(_ORDER))
    if unknown or not keys:
        parser.error(f"--only: unknown {unknown or 'empty list'}; choose from {','.join(_ORDER)}")
    if args.rows < 2:
        parser.error(f"--rows must be >= 2, got {args.rows}")
    args.keys = [k for k in _ORDER if k in keys]
    args.work_dir = args.work_dir or os.path.join(tempfile.gettempdir(), "beam_ml_bench")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the benchmark; returns (and writes) the JSON report.

    Args:
        argv: Command-line flags (see ``--help``); sys.argv if None.

    Returns:
        The report written to ``<work_dir>/bench_preprocess.json``.
    """
    args = _parse_args(argv)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    data_dir = os.path.join(args.work_dir, "data")
    csv_path = datasets.materialize("fraud", data_dir, rows=args.rows)
    with open(csv_path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    if tuple(header) != CSV_COLUMNS:
        raise ValueError(f"{csv_path}: header {header} is not the credit-card schema")

    if args.warmup_rows > 0:
        warm_csv = datasets.materialize("fraud", data_dir, rows=args.warmup_rows)
        for key in args.keys:
            if METHODS[key].uses_beam:
                print(f"warm-up ({key}) on {args.warmup_rows} rows", flush=True)
                measure(METHODS[key], warm_csv, args.warmup_rows,
                        os.path.join(args.work_dir, "warmup", key), verify=False)

    records = []
    for key in args.keys:
        print(f"measuring ({key}) {METHODS[key].name} on {args.rows} rows", flush=True)
        record = measure(METHODS[key], csv_path, args.rows,
                         os.path.join(args.work_dir, "out", key))
        if key == "ours" and record["error"] and record["seconds"] is None:
            print(f"ours: unavailable ({record['error']})", flush=True)
        records.append(record)

    by_key = {r["key"]: r for r in records}
    ratios = {f"ours/({k})": _ratio(by_key, "ours", k) for k in ("a", "b", "c")}
    shapes = {} if args.no_shapes else run_shapes(args.work_dir, args.large_rows)
    goals = shape_goals(shapes)
    if ratios.get("ours/(b)") is not None:
        goals["200k ours >= 5x CsvTFXIO"] = f"{ratios['ours/(b)']:.2f}x ({'met' if ratios['ours/(b)'] >= 5 else 'NOT met'})"
    report = {
        "benchmark": "bench_preprocess",
        "command": " ".join([sys.executable, "-m", "benchmarks.bench_preprocess",
                             *(sys.argv[1:] if argv is None else argv)]),
        "csv": csv_path,
        "rows": args.rows,
        "columns": len(CSV_COLUMNS),
        "beam_options": list(_BEAM_ARGS),
        "warmup_rows": args.warmup_rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    # The CPU may be shared: the load says how much.
                    "load_average_at_start": load_at_start},
        "versions": {"apache_beam": beam.__version__, "tensorflow": tf.__version__,
                     "tensorflow_transform": tft.__version__,
                     "pandas": pd.__version__, "scikit_learn": sklearn.__version__},
        "results": records,
        "ratios": ratios,
        "shapes": shapes,
        "goals": goals,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    os.makedirs(args.work_dir, exist_ok=True)
    json_path = os.path.join(args.work_dir, "bench_preprocess.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(format_table(records, ratios))
    for name, s in shapes.items():
        print(f"shape {name:<17} {s['rows']:>9} rows  preprocess {s['preprocess_seconds']} s  "
              f"{s['rows_per_s']} rows/s  peak RSS {s['peak_rss_mb']} MB  process {s['process_seconds']} s  "
              f"{'ok' if s['verified'] else s['error']}")
    for name, verdict in goals.items():
        print(f"goal: {name}: {verdict}")
    print(f"wrote {json_path}")
    return report


if __name__ == "__main__":
    main()
