"""What a new user waits for: one row scored without Beam, Keras or tf.Transform; train's --help and a typo
without TensorFlow or Beam."""
import json
import os
import subprocess
import sys

import pytest

from tests.model_fixture import feature_rows, trained_fraud_model

_REPORT_MODULES = """
import json, sys
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in
      ("tensorflow", "tensorflow_transform", "tf_keras", "keras", "apache_beam"))}))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _modules(proc: subprocess.CompletedProcess) -> set:
    last = [l for l in proc.stdout.splitlines() if l.startswith('{"modules"')][-1]
    return {m.split(".")[0] for m in json.loads(last)["modules"]}


@pytest.mark.slow
def test_predict_one_row_imports_neither_beam_nor_keras_nor_tf_transform(tmp_path_factory):
    root, csv_path = trained_fraud_model(str(tmp_path_factory.getbasetemp()))
    row = feature_rows(csv_path, 1)[0]
    proc = _run("import json\nfrom pipelines import predict\n"
                f"print('RESULT', json.dumps(predict.run(['--model_dir={root}', '--json=' + json.dumps({row!r})])))\n"
                + _REPORT_MODULES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = _modules(proc)
    assert "tensorflow" in loaded
    assert not loaded & {"apache_beam", "tensorflow_transform", "tf_keras", "keras"}, loaded
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])
    # The same score as the model loaded in a process where Keras is imported (this one: pytest's).
    import tf_keras  # noqa: F401

    from beam_ml.serving import ServingModel, score_records

    expected = score_records(ServingModel.load(root), [row])[0]
    assert result[0]["score"] == pytest.approx(expected["score"], abs=1e-6)
    assert result[0]["class"] == expected["class"] and result[0]["model_version"] == expected["model_version"]


@pytest.mark.parametrize("flag, status, says", [("--help", 0, "--final_fit"), ("--epoch=5", 2, "unknown flag --epoch")])
def test_train_help_and_a_typo_answer_without_tensorflow(flag, status, says):
    proc = _run("import sys\nfrom pipelines import train\n"
                f"try:\n    train.main([{flag!r}])\nexcept SystemExit as e:\n    print('STATUS', e.code)\n"
                + _REPORT_MODULES)
    assert f"STATUS {status}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    assert not _modules(proc) & {"apache_beam", "tensorflow", "tensorflow_transform", "tf_keras", "keras"}
