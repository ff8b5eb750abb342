"""The other tasks end to end (multiclass, anomaly), and resuming an interrupted run."""
import json
import os
import subprocess
import sys
import time

import pytest

from beam_ml.serving import ServingModel
from pipelines import train

pytestmark = pytest.mark.slow


def test_digits_multiclass_softmax(tmp_path):
    out = tmp_path / "digits"
    result = train.run(["--dataset=digits", f"--data_dir={tmp_path / 'data'}", f"--output_dir={out}",
                        "--epochs=25", "--verbose=0", "--runner=DirectRunner"])
    m = result.metrics["test"]
    assert m["accuracy"] > 0.9, m
    assert set(m["per_class"]) == {str(i) for i in range(10)}
    assert len(m["confusion_matrix"]) == 10 and sum(map(sum, m["confusion_matrix"])) == result.counts["rows_test"]
    assert [r["value"] for r in m["slices"]["label"]] == [str(i) for i in range(10)]
    # The softmax-regression candidate was compared with the MLP on validation accuracy.
    assert {r["name"].split()[0] for r in result.metrics["leaderboard"]} == {"mlp", "linear"}
    model = ServingModel.load(str(out))
    row = {f"pixel{i}": 0.0 for i in range(64)}
    p = model.predict_records([row])[0]
    assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-4
    assert p["class"] in [str(i) for i in range(10)]


def test_fraud_anomaly_autoencoder(tmp_path):
    out = tmp_path / "anomaly"
    result = train.run(["--dataset=fraud", "--dataset_rows=40000", f"--data_dir={tmp_path / 'data'}",
                        "--task=anomaly", f"--output_dir={out}", "--epochs=10", "--verbose=0",
                        "--runner=DirectRunner"])
    m = result.metrics["test"]
    assert m["roc_auc"] > 0.85, m  # reconstruction error ranks fraud above normal
    meta = json.load(open(out / "model" / "1" / "assets.extra" / "beam_ml.json"))
    assert meta["task"] == "anomaly" and meta["threshold"] == pytest.approx(m["threshold"])
    # The linear autoencoder is the linear candidate; validation PR-AUC chose between them.
    board = result.metrics["leaderboard"]
    assert board[0]["metric"] == "pr_auc" and any(r["name"].startswith("linear") for r in board)


def test_interrupted_training_resumes_from_last_epoch(tmp_path):
    """Kill the training process mid-run; the re-run continues from its last finished epoch."""
    out = tmp_path / "resume"
    argv = [sys.executable, "-m", "pipelines.train", "--dataset=retention", "--dataset_rows=3000",
            f"--data_dir={tmp_path / 'data'}", f"--output_dir={out}", "--epochs=40",
            "--early_stopping_patience=40", "--batch_size=32", "--verbose=2"]
    env = dict(os.environ, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    deadline = time.time() + 300
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Epoch 4/") or time.time() > deadline:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert any(l.startswith("Epoch 4/") for l in seen), "".join(seen[-20:])
    # The model of the flags is trial s00-f0 (validated on fold 0); its state survives the kill.
    backup = out / "checkpoints" / "s00-f0" / "backup"
    assert os.path.isdir(backup)

    again = subprocess.run(argv[:-3] + ["--epochs=6", "--early_stopping_patience=40", "--batch_size=32",
                                        "--verbose=2"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    epochs = [l.split()[1] for l in again.stdout.splitlines() if l.startswith("Epoch ")]
    assert epochs and epochs[0] == "4/6", epochs  # epochs 1-3 finished before the kill
    assert not os.path.isdir(backup) or os.listdir(backup) == []  # emptied once training completes
    final = json.load(open(out / "metrics.json"))["final"]
    assert final["evaluated"]["epochs_run"] in (6, 3)  # all 6, or restored from 3
    # Then the refit on every row ran the epochs the validation chose, from scratch.
    assert final["epochs_run"] == final["params"]["epochs"] <= 6


ROW = {"satisfaction_level": 0.1, "last_evaluation": 0.9, "number_project": 7, "average_montly_hours": 280,
       "time_spend_company": 4, "Work_accident": 0, "promotion_last_5years": 0, "sales": "sales", "salary": "low"}


@pytest.mark.parametrize("final_fit", ["all", "non_test"])
def test_the_exact_linear_model_is_logistic_regression_on_the_rows_final_fit_names(tmp_path, final_fit):
    """--hidden_units= --optimizer=lbfgs: the export is scikit-learn's LogisticRegression(C=1) on every good row
    (--final_fit=all, the default: after the test evaluation) or on every non-test row (--final_fit=non_test)."""
    import numpy as np
    import tf_keras as keras
    from sklearn.linear_model import LogisticRegression

    from beam_ml.spec import DatasetSpec
    from beam_ml.training.trainer import load_splits

    out = tmp_path / "exact"
    flags = [] if final_fit == "all" else [f"--final_fit={final_fit}"]
    result = train.run(["--dataset=retention", "--dataset_rows=2000", f"--data_dir={tmp_path / 'data'}",
                        f"--output_dir={out}", "--hidden_units=", "--optimizer=lbfgs", "--verbose=0",
                        "--runner=DirectRunner", *flags])
    m = result.metrics
    assert [r["name"] for r in m["leaderboard"]] == ["linear lbfgs C=1"]  # the flags' model is already linear
    final = m["final"]
    assert final["solver"]["name"] == "lbfgs" and final["solver"]["converged"]
    # Refit on validation + train (no epochs to choose), and with 'all' the test rows too; the threshold is
    # still the validation fold's.
    non_test = [f"fold{j}" for j in range(5)]
    fitted_on = non_test + (["test"] if final_fit == "all" else [])
    assert final["train_rows"] == sum(result.counts["rows_per_split"][s] for s in fitted_on)
    assert final["threshold_from"] == "the validation fold"
    spec = DatasetSpec.load(str(out / "spec.json"))
    x, y = load_splits(str(out), spec, fitted_on)
    xt, _ = load_splits(str(out), spec, ["test"])
    # Retention's 24% leavers are under a third of the stayers: 'auto' weights classes as sklearn's 'balanced'.
    assert m["summary"]["class_weights"] != "none"
    reference = LogisticRegression(max_iter=5000, tol=1e-8, class_weight="balanced").fit(x, y).predict_proba(xt)[:, 1]
    exported = keras.models.load_model(str(out / "keras_model"), compile=False).predict(xt, verbose=0).reshape(-1)
    np.testing.assert_allclose(exported, reference, atol=5e-4)
    model = ServingModel.load(str(out))
    assert model.version == 1 and model.metadata["train_rows"] == final["train_rows"]
    served = model.predict_records([ROW])[0]
    assert 0.0 <= served["score"] <= 1.0 and served["class"] in ("0", "1")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "fitted exactly by L-BFGS" in html
    rows_test, rows_all = result.counts["rows_test"], result.counts["rows_good"]
    phrase = f"measured on {rows_test} held-out rows before the final refit on all {rows_all} rows"
    if final_fit == "non_test":
        assert not (out / "evaluated_model").exists() and "evaluated" not in final
        assert "final refit" not in json.dumps(m) + html + json.dumps(model.metadata)
        return
    # The test metrics are the evaluated (pre-refit) model's, and every place showing them says so.
    evaluated = final["evaluated"]
    assert evaluated["train_rows"] == sum(result.counts["rows_per_split"][s] for s in non_test)
    assert evaluated["version_dir"] == str(out / "evaluated_model" / "1")
    assert m["summary"]["test_metrics"] == phrase == model.metadata["test_metrics_note"]
    assert phrase in html and phrase in (out / "report.md").read_text()
    from beam_ml.training.report import summary_text

    assert phrase in summary_text(m)
    assert model.metadata["test_metrics"]["roc_auc"] == pytest.approx(m["test"]["roc_auc"])
    before = ServingModel.load(evaluated["version_dir"])
    assert before.metadata["train_rows"] == evaluated["train_rows"] and before.metadata["test_metrics"]
    assert before.predict_records([ROW])[0]["score"] != pytest.approx(served["score"], abs=1e-6)


def test_lbfgs_with_hidden_layers_fails_fast_naming_the_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--dataset=retention", "--dataset_rows=300", f"--data_dir={tmp_path / 'data'}",
                    f"--output_dir={tmp_path / 'o'}", "--optimizer=lbfgs"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "optimizer lbfgs fits only the linear model" in err[-1]
