"""End to end: pipelines.train.run on small data → artifacts, quality, dead letters, no skew."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_ml import datasets
from beam_ml.errors import UserError
from beam_ml.records import records_to_columns
from beam_ml.serving import ServingModel
from beam_ml.spec import DatasetSpec
from beam_ml.training.data import stack_features
from pipelines import train
from transforms.preprocessing import LABEL_KEY, transform_inputs, transformed_feature_names



@pytest.fixture(scope="module")
def retention_run(tmp_path_factory):
    """One real training run on 4,000 retention rows with a few malformed rows injected."""
    root = tmp_path_factory.mktemp("retention")
    src = datasets.materialize("retention", str(root / "data"), rows=4000)
    lines = open(src).read().splitlines()
    # Inject bad rows: wrong field count, text in a numeric column, an unknown label.
    lines.insert(10, "0.5,0.5,3")
    lines.insert(20, lines[20].replace(lines[20].split(",")[0], "high", 1))
    cells = lines[30].split(",")
    cells[6] = "maybe"
    lines[30] = ",".join(cells)
    path = root / "hr_messy.csv"
    path.write_text("\n".join(lines) + "\n")
    out = root / "out"
    result = train.run([f"--input={path}", "--label=left", f"--output_dir={out}", "--epochs=12",
                        "--runner=DirectRunner", "--verbose=0"])
    return result, str(path), lines


@pytest.mark.slow
def test_artifacts_hold_what_they_promise(retention_run):
    result, _, _ = retention_run
    d = result.output_dir
    # The spec and counts on disk are the ones the run used and reported.
    spec = DatasetSpec.load(os.path.join(d, "spec.json"))
    assert spec.label == "left" and set(spec.categorical_columns) == {"sales", "salary"}
    assert json.load(open(os.path.join(d, "counts.json"))) == result.counts
    # metrics.json names the exported version, whose metadata carries the same spec and threshold.
    m = json.load(open(os.path.join(d, "metrics.json")))
    assert m["summary"]["model_version_dir"] == os.path.join(d, "model", "1")
    meta = json.load(open(os.path.join(d, "model", "1", "assets.extra", "beam_ml.json")))
    assert meta["version"] == 1 and meta["spec"] == spec.to_dict()
    assert meta["threshold"] == pytest.approx(m["eval"]["threshold"])
    assert os.path.isfile(os.path.join(d, "model", "1", "saved_model.pb"))
    # The TFRecords hold every good row, transformed (z-scored numerics, one-hot categoricals).
    import tensorflow_transform as tft

    feature_spec = tft.TFTransformOutput(d).transformed_feature_spec()
    for split, expected in (("train", result.counts["rows_train"]), ("eval", result.counts["rows_eval"])):
        files = glob.glob(os.path.join(d, "data", f"{split}-*.tfrecord"))
        rows = [tf.io.parse_single_example(r, feature_spec) for r in tf.data.TFRecordDataset(files)]
        assert len(rows) == expected, split
        assert float(tf.reduce_sum(rows[0]["salary_xf"])) == 1.0
    # One history row per epoch run; TensorBoard got the same epochs.
    history = open(os.path.join(d, "history.csv")).read().strip().splitlines()
    assert len(history) - 1 == m["summary"]["epochs_run"] > 0
    assert glob.glob(os.path.join(d, "logs", "train", "events.out.tfevents.*"))
    # The plots are real PNG images, referenced by the report with the eval metrics.
    import matplotlib.image

    for png in ("learning_curves.png", "confusion_matrix.png"):
        image = matplotlib.image.imread(os.path.join(d, png))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, png
    report = open(os.path.join(d, "report.md")).read()
    assert "![confusion matrix](confusion_matrix.png)" in report
    assert f"| roc_auc | {m['eval']['roc_auc']:.4f} |" in report


@pytest.mark.slow
def test_counts_add_up_and_bad_rows_are_dead_lettered(retention_run):
    result, path, lines = retention_run
    c = result.counts
    assert c["rows_in"] == len(lines) - 1 == c["rows_good"] + c["rows_dead"]
    assert c["rows_dead"] == 3
    assert c["rows_train"] + c["rows_eval"] == c["rows_good"]
    assert 0.25 < c["rows_eval"] / c["rows_good"] < 0.35  # 70/30 split
    dead = [json.loads(l) for f in glob.glob(os.path.join(result.output_dir, "dead_letter", "*.jsonl"))
            for l in open(f)]
    by_line = {d["position"]: d for d in dead}
    assert sorted(by_line) == [11, 21, 31]
    assert "wrong number of fields" in by_line[11]["reason"]
    assert "expected a number, got 'high'" in by_line[21]["reason"]
    assert "unknown label 'maybe'" in by_line[31]["reason"]
    assert all(d["source"] == path for d in dead)


@pytest.mark.slow
def test_eval_metrics_clear_a_meaningful_bar(retention_run):
    result, _, _ = retention_run
    m = json.load(open(os.path.join(result.output_dir, "metrics.json")))["eval"]
    base_rate = m["base_rate"]
    assert m["roc_auc"] > 0.90, m
    assert m["accuracy"] > max(base_rate, 1 - base_rate) + 0.05, m  # beats "always the majority class"
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == result.counts["rows_eval"]
    assert 0.0 < m["threshold"] < 1.0


@pytest.mark.slow
def test_serving_parity_raw_rows_vs_keras_on_transformed(retention_run):
    """The export on RAW rows == the trained Keras model on tf.Transform's features of those rows."""
    result, path, _ = retention_run
    import tensorflow_transform as tft
    import tf_keras

    spec = DatasetSpec.load(result.spec_path)
    model = ServingModel.load(os.path.join(result.output_dir, "model"))
    import csv
    rows = list(csv.DictReader(open(path)))[100:400]
    cols = records_to_columns(rows, spec)
    exported = model.predict_columns(cols)["score"]

    tft_output = tft.TFTransformOutput(result.output_dir)
    raw = {k: tf.constant(v) for k, v in cols.items()}
    transformed = tft_output.transform_raw_features(transform_inputs(raw, spec), drop_unused_features=True)
    keras_model = tf_keras.models.load_model(os.path.join(result.output_dir, "keras_model"), compile=False)
    direct = keras_model.predict(stack_features(transformed, transformed_feature_names(spec)), verbose=0).ravel()
    np.testing.assert_allclose(exported, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_beam_transformed_eval_data_matches_serving_transform(retention_run):
    """The TFRecords Beam wrote hold exactly what the in-graph transform gives for the eval rows."""
    result, path, _ = retention_run
    import tensorflow_transform as tft

    spec = DatasetSpec.load(result.spec_path)
    tft_output = tft.TFTransformOutput(result.output_dir)
    fs = tft_output.transformed_feature_spec()
    files = glob.glob(os.path.join(result.output_dir, "data", "eval-*.tfrecord"))
    beam_rows = next(iter(tf.data.TFRecordDataset(files).batch(100000).map(lambda s: tf.io.parse_example(s, fs))))
    n = int(beam_rows[LABEL_KEY].shape[0])
    assert n == result.counts["rows_eval"]
    # Re-derive the eval rows from the CSV (same hash split) and transform them in-graph.
    from beam_ml.io.csv import iter_chunks, parse_csv_chunk
    from beam_ml.preprocess import stable_hash_fraction
    from beam_ml.spec import read_header
    header = read_header(path)
    batches = [parse_csv_chunk(c, l, path, header, spec).batch for l, c in iter_chunks(path)]
    raw_cols = {}
    for b in batches:
        mask = stable_hash_fraction(b, spec.key_column, 42) < 0.3
        b = b.filter(mask)
        for name in spec.feature_columns:
            vals = [v[0] for v in b.column(name).to_pylist()]
            raw_cols.setdefault(name, []).extend(vals)
    raw = {k: tf.constant(np.array(v, dtype=object if k in spec.categorical_columns else np.float32))
           for k, v in raw_cols.items()}
    graph = tft_output.transform_raw_features(transform_inputs(raw, spec), drop_unused_features=True)
    for name in transformed_feature_names(spec):
        a = np.sort(np.asarray(beam_rows[name]).reshape(n, -1), axis=0)
        b = np.sort(np.asarray(graph[name]).reshape(n, -1), axis=0)
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_bad_row_threshold_fails_the_run(tmp_path):
    p = tmp_path / "bad.csv"
    good = "".join(f"{i},{i % 3},{'Yes' if i % 2 else 'No'}\n" for i in range(1000))
    bad = "".join(f"{i},oops,No\n" for i in range(15))  # 1.5% > the default 1%
    p.write_text("x,y,label\n" + good + bad)
    with pytest.raises(UserError, match="--max_bad_rows_fraction: 15 of 1015 rows"):
        train.run([f"--input={p}", "--label=label", f"--output_dir={tmp_path / 'o'}", "--preprocess_only",
                   "--runner=DirectRunner"])
    assert os.path.getsize(glob.glob(str(tmp_path / "o" / "dead_letter" / "*.jsonl"))[0]) > 0


@pytest.mark.parametrize("argv,message", [
    (["--input=/no/such.csv", "--label=y"], "--input: file not found: /no/such.csv"),
    (["--epochz=3"], "unknown flag --epochz"),
    (["--dataset=nope"], "--dataset: unknown dataset 'nope'"),
    (["--eval_fraction=1.5"], "--eval_fraction"),
    (["--hidden_units=64,x"], "--hidden_units"),
])
def test_bad_flags_fail_fast_naming_the_flag(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train.run(argv)


def test_missing_label_column_names_it(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="--label: column 'target' is not in"):
        train.run([f"--input={p}", "--label=target", f"--output_dir={tmp_path}"])
