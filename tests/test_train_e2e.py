"""End to end: pipelines.train.run on small data → artifacts, quality, dead letters, no skew, report.html."""
import base64
import glob
import html.parser
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from beam_ml import datasets
from beam_ml.errors import UserError
from beam_ml.monitoring.browser import chromium
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
    assert meta["threshold"] == pytest.approx(m["test"]["threshold"])
    # The model's metadata names its parameters, its validation score and its test metrics.
    assert meta["params"] == m["final"]["params"] and meta["cv"]["mean"] == pytest.approx(m["leaderboard"][0]["mean"])
    assert meta["test_metrics"]["roc_auc"] == pytest.approx(m["test"]["roc_auc"])
    assert os.path.isfile(os.path.join(d, "model", "1", "saved_model.pb"))
    # The TFRecords hold every good row, once, per split (z-scored numerics, one-hot categoricals).
    import tensorflow_transform as tft

    feature_spec = tft.TFTransformOutput(d).transformed_feature_spec()
    per_split = result.counts["rows_per_split"]
    assert sorted(per_split) == ["fold0", "fold1", "fold2", "fold3", "fold4", "test"]
    for split, expected in per_split.items():
        prefix = "test" if split == "test" else f"fold-{split[4:]}"
        files = glob.glob(os.path.join(d, "data", f"{prefix}-*.tfrecord"))
        rows = [tf.io.parse_single_example(r, feature_spec) for r in tf.data.TFRecordDataset(files)]
        assert len(rows) == expected > 0, split
        assert float(tf.reduce_sum(rows[0]["salary_xf"])) == 1.0
    # One history row per epoch the evaluated model ran (the curves the validation watched; the refit has
    # no validation rows); TensorBoard got the same epochs.
    history = open(os.path.join(d, "history.csv")).read().strip().splitlines()
    assert len(history) - 1 == m["final"]["evaluated"]["epochs_run"] > 0
    assert glob.glob(os.path.join(d, "logs", "**", "events.out.tfevents.*"), recursive=True)
    # The plots are real PNG images, referenced by the report with the test metrics.
    import matplotlib.image

    for png in ("learning_curves.png", "confusion_matrix.png", "roc_pr.png", "calibration.png", "leaderboard.png"):
        image = matplotlib.image.imread(os.path.join(d, png))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, png
    report = open(os.path.join(d, "report.md")).read()
    assert "![confusion matrix](confusion_matrix.png)" in report
    assert f"| roc_auc | {m['test']['roc_auc']:.4f} |" in report


@pytest.mark.slow
def test_counts_add_up_and_bad_rows_are_dead_lettered(retention_run):
    result, path, lines = retention_run
    c = result.counts
    assert c["rows_in"] == len(lines) - 1 == c["rows_good"] + c["rows_dead"]
    assert c["rows_dead"] == 3
    assert c["rows_train"] + c["rows_validation"] + c["rows_test"] == c["rows_good"]
    assert 0.17 < c["rows_test"] / c["rows_good"] < 0.23  # the test split: 20%
    # Folds are stratified: every fold holds the same number of rows of each class, give or take one.
    for cls in ("0", "1"):
        per_fold = [c["label_counts"][f"fold{j}"][cls] for j in range(5)]
        assert max(per_fold) - min(per_fold) <= 1, (cls, per_fold)
    dead = [json.loads(l) for f in glob.glob(os.path.join(result.output_dir, "dead_letter", "*.jsonl"))
            for l in open(f)]
    by_line = {d["position"]: d for d in dead}
    assert sorted(by_line) == [11, 21, 31]
    assert "wrong number of fields" in by_line[11]["reason"]
    assert "expected a number, got 'high'" in by_line[21]["reason"]
    assert "unknown label 'maybe'" in by_line[31]["reason"]
    assert all(d["source"] == path for d in dead)


@pytest.mark.slow
def test_test_metrics_clear_a_meaningful_bar(retention_run):
    result, _, _ = retention_run
    metrics = json.load(open(os.path.join(result.output_dir, "metrics.json")))
    m = metrics["test"]
    base_rate = m["base_rate"]
    assert m["roc_auc"] > 0.90, m
    assert m["accuracy"] > max(base_rate, 1 - base_rate) + 0.05, m  # beats "always the majority class"
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == m["rows"] == result.counts["rows_test"]
    assert 0.0 < m["threshold"] < 1.0
    # The candidates: the flags' MLP and the linear model, compared on the validation fold; the winner is exported.
    board = metrics["leaderboard"]
    assert {r["name"] for r in board} == {"mlp 64-32 dropout=0.2 adam lr=0.001", "linear lbfgs C=1"}
    assert board[0]["mean"] >= board[1]["mean"] and sum(r["selected"] for r in board) == 1
    chosen = next(r for r in board if r["selected"])
    assert {k: v for k, v in chosen["params"].items() if k != "epochs"} == \
        {k: v for k, v in metrics["final"]["params"].items() if k != "epochs"}
    assert metrics["final"]["threshold_from"] == "the validation fold"
    # Slices by each categorical feature partition the test rows.
    for feature in ("sales", "salary"):
        assert sum(r["rows"] for r in m["slices"][feature]) <= m["rows"]
    assert sum(r["rows"] for r in m["slices"]["salary"]) == m["rows"]  # 3 values, all shown


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
def test_beam_transformed_test_data_matches_serving_transform(retention_run):
    """The TFRecords Beam wrote hold exactly what the in-graph transform gives for the test rows."""
    result, path, _ = retention_run
    import tensorflow_transform as tft

    spec = DatasetSpec.load(result.spec_path)
    tft_output = tft.TFTransformOutput(result.output_dir)
    fs = tft_output.transformed_feature_spec()
    files = glob.glob(os.path.join(result.output_dir, "data", "test-*.tfrecord"))
    beam_rows = next(iter(tf.data.TFRecordDataset(files).batch(100000).map(lambda s: tf.io.parse_example(s, fs))))
    n = int(beam_rows[LABEL_KEY].shape[0])
    assert n == result.counts["rows_test"]
    # Re-derive the test rows from the CSV (same hash split) and transform them in-graph.
    from beam_ml.io.csv import iter_chunks, parse_csv_chunk
    from beam_ml.preprocess import stable_hash_fraction
    from beam_ml.spec import read_header
    header = read_header(path)
    batches = [parse_csv_chunk(c, l, path, header, spec).batch for l, c in iter_chunks(path)]
    raw_cols = {}
    for b in batches:
        mask = stable_hash_fraction(b, spec.key_column, 42) < 0.2
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
    (["--test_fraction=1.5"], "--test_fraction"),
    (["--cv_folds=1"], "--cv_folds"),
    (["--tune", "--param_grid={\"dropot\": [0.1]}"], "--param_grid: unknown parameter"),
    (["--param_grid={\"dropout\": [0.1]}"], "--param_grid: only applies with --tune"),
    (["--hidden_units=64,x"], "--hidden_units"),
])
def test_bad_flags_fail_fast_naming_the_flag(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train.run(argv)


def test_a_binary_tune_metric_on_multiclass_data_names_the_flag(tmp_path):
    p = tmp_path / "three.csv"
    p.write_text("x,y\n" + "".join(f"{i},{'abc'[i % 3]}\n" for i in range(30)))
    with pytest.raises(UserError, match="--tune_metric: pr_auc is a binary metric"):
        train.run([f"--input={p}", "--label=y", "--tune", "--tune_metric=pr_auc", f"--output_dir={tmp_path / 'o'}"])


def test_missing_label_column_names_it(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="--label: column 'target' is not in"):
        train.run([f"--input={p}", "--label=target", f"--output_dir={tmp_path}"])


class _Sections(html.parser.HTMLParser):
    """Collects section ids, images and whether any tag loads something external."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("script", "link", "iframe") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.slow
def test_report_html_is_self_contained_with_every_section_and_real_images(retention_run):
    result, _, _ = retention_run
    from beam_ml.training.report_html import SECTIONS

    page = open(os.path.join(result.output_dir, "report.html"), encoding="utf-8").read()
    parser = _Sections()
    parser.feed(page)
    assert parser.sections == list(SECTIONS)
    assert parser.external == []  # one file: nothing to fetch
    assert len(parser.images) == 5
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    text = " ".join(parser.text)
    m = json.load(open(os.path.join(result.output_dir, "metrics.json")))
    assert f"{m['test']['roc_auc']:.4f}" in text and "serve_dict" in text and "satisfaction_level" in text
    assert "linear lbfgs C=1" in text  # the leaderboard


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")
def test_report_html_renders_in_headless_chromium(retention_run, tmp_path):
    """The page loads without console errors and lays out to its full height with every image decoded."""
    result, _, _ = retention_run
    page = os.path.join(result.output_dir, "report.html")
    shot = tmp_path / "report.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", f"--screenshot={shot}",
           f"file://{page}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    errors = [l for l in run.stderr.splitlines() if "CONSOLE" in l and "ERROR" in l.upper()]
    assert errors == []
    import matplotlib.image

    image = matplotlib.image.imread(str(shot))
    assert image.shape[0] >= 1000 and image.std() > 0.05  # drawn, not blank
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=120)
    from beam_ml.training.report_html import SECTIONS

    assert dom.returncode == 0 and dom.stdout.count("<section") == len(SECTIONS)


@pytest.mark.slow
def test_the_served_model_is_refit_on_every_row_after_the_test_evaluation(retention_run):
    """Default --final_fit=all: the test split scored the evaluated model; the served version saw every good row."""
    result, _, lines = retention_run
    d, c = result.output_dir, result.counts
    m = json.load(open(os.path.join(d, "metrics.json")))
    final, evaluated = m["final"], m["final"]["evaluated"]
    assert final["final_fit"] == "all" and final["train_rows"] == c["rows_good"]
    assert evaluated["train_rows"] == (c["rows_train"] + c["rows_validation"] if evaluated["solver"]
                                       else c["rows_train"])
    assert evaluated["version_dir"] == os.path.join(d, "evaluated_model", "1")
    if not final["solver"]:  # an MLP: refit for the epochs the validation chose, with its schedule
        assert final["epochs_run"] == final["params"]["epochs"] >= 1
    phrase = f"measured on {c['rows_test']} held-out rows before the final refit on all {c['rows_good']} rows"
    served, before = ServingModel.load(os.path.join(d, "model")), ServingModel.load(evaluated["version_dir"])
    assert served.version == 1 and served.metadata["train_rows"] == c["rows_good"]
    assert served.metadata["test_metrics_note"] == m["summary"]["test_metrics"] == phrase
    assert before.metadata["test_metrics"] == served.metadata["test_metrics"]
    assert served.threshold == before.threshold == pytest.approx(m["test"]["threshold"])
    for name in ("report.md", "report.html"):
        assert phrase in open(os.path.join(d, name), encoding="utf-8").read(), name
    from beam_ml.training.report import summary_text

    assert phrase in summary_text(m)
    rows = [dict(zip(lines[0].split(","), r.split(","))) for r in lines[40:60]]
    for r in rows:
        r.pop("left")
        for k in r:
            if k not in served.spec.categorical_columns:
                r[k] = float(r[k])
    a = np.array([p["score"] for p in served.predict_records(rows)])
    b = np.array([p["score"] for p in before.predict_records(rows)])
    assert np.abs(a - b).max() > 1e-4  # a different fit, not a copy
