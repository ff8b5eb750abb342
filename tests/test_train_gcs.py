"""The whole training job with its output dir on gs:// (the GCS emulator; TensorFlow through the test proxy)."""
import pytest

from beam_ml import datasets, fs
from pipelines import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_train_writes_every_artifact_to_gcs(gcs_root, tmp_path):
    src = datasets.materialize("retention", str(tmp_path / "data"), rows=1500)
    out = f"{gcs_root}/runs/hr"
    result = train.run([f"--input={src}", "--label=left", f"--output_dir={out}", "--epochs=2", "--verbose=0",
                        "--runner=DirectRunner"])
    assert result.output_dir == out
    counts = fs.read_json(f"{out}/counts.json")
    assert counts["rows_in"] == 1500 == counts["rows_good"] and counts == result.counts
    metrics = fs.read_json(f"{out}/metrics.json")
    assert metrics["test"]["rows"] == counts["rows_test"] and metrics["summary"]["model_version_dir"] == f"{out}/model/1"
    names = set(fs.list_dir(out))
    assert {"spec.json", "data", "transform_fn", "model", "keras_model", "report.html", "report.md",
            "roc_pr.png", "history.csv", "dead_letter"} <= names
    assert fs.match(f"{out}/data/fold-0-*.tfrecord") and fs.match(f"{out}/data/test-*.tfrecord")
    meta = fs.read_json(f"{out}/model/1/assets.extra/beam_ml.json")
    assert meta["test_metrics"]["rows"] == counts["rows_test"] and meta["params"]["epochs"] == 2
    assert fs.read_text(f"{out}/report.html").count("data:image/png;base64,") == 5
    # The export on gs:// serves: TensorFlow loads it from the bucket and scores a raw row.
    import tensorflow as tf

    loaded = tf.saved_model.load(f"{out}/model/1")
    args = {arg: tf.constant(["low" if col == "salary" else "sales"]) if col in ("sales", "salary")
            else tf.constant([0.5]) for col, arg in meta["raw_inputs"].items()}
    score = float(loaded.signatures["serve_dict"](**args)["score"][0])
    assert 0.0 <= score <= 1.0


TRAIN_STEPS = {"ReadCsv", "SplitTrainTest", "FoldQuantiles", "Analyze", "Transform", "EncodeExamples", "WriteSplits",
               "CheckRows", "DataReady", "Trials", "ShuffleTrials", "TrainTrials", "CollectTrials",
               "Leaderboard", "TrainFinal", "ScoreTest", "EvaluateTest", "TestMetrics", "WriteReport"}


def test_train_with_tune_is_translated_and_staged_on_dataflow_and_only_submits(gcs_root, gcs_bucket, tmp_path):
    """On the DataflowRunner the launcher plans, translates and stages: trials, refit and report run on workers."""
    from beam_ml.testing.dataflow import stage_on_dataflow

    src = datasets.materialize("retention", str(tmp_path / "data"), rows=300)
    out = f"{gcs_root}/runs/df"
    staged = stage_on_dataflow("pipelines.train", [f"--input={src}", "--label=left", f"--output_dir={out}",
                                                   "--tune", "--cv_folds=3"], bucket=gcs_bucket, name="train")
    assert TRAIN_STEPS <= set(staged.job.top_level_labels)
    assert {"beam_ml/training/trial.py", "beam_ml/evaluation.py", "beam_ml/tuning.py"} <= staged.job.package_modules
    # Submitted, not run: the plan wrote the spec (tf.Transform its temp dir while building); no data,
    # trial, model or report exists yet.
    assert staged.result.metrics is None and staged.result.counts is None
    assert set(fs.list_dir(out)) <= {"spec.json", "tmp"} and "spec.json" in fs.list_dir(out)
