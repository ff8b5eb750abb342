"""Every command is quiet by default (progress, summary, where outputs are); --verbose brings the rest back."""
import logging
import os
import subprocess
import sys

import pytest

from beam_ml import logs

NOISE = ("cuInit", "oneDNN", "absl", "Epoch 1/", "cpu_feature_guard", "WARNING:")


@pytest.mark.parametrize("argv,level", [
    ([], 0), (["--verbose"], 2), (["--verbose=1"], 1), (["--verbose", "0"], 0), (["--verbose=0"], 0),
    (["--verbose", "--epochs=3"], 2), (["--dataset=fraud", "--verbose=2"], 2),
])
def test_the_verbose_level_of_a_command_line(argv, level):
    assert logs.verbose_level(argv) == level


def test_a_process_without_the_flag_takes_its_parents_level(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sdk_worker_main.py"])
    monkeypatch.setenv(logs.VERBOSE_ENV, "2")
    assert logs.verbose_level() == 2
    monkeypatch.setattr(sys, "argv", ["pipelines/train.py", "--verbose=0"])  # its own flag wins
    assert logs.verbose_level() == 0


def test_quiet_logging_drops_library_records_below_error_only():
    record = logging.LogRecord("root", logging.WARNING, os.path.join("x", "apache_beam", "ml", "base.py"), 1,
                               "Resource module is not available", None, None)
    assert not logs._LibraryRecords().filter(record)
    record.levelno = logging.ERROR
    assert logs._LibraryRecords().filter(record)
    ours = logging.LogRecord("root", logging.WARNING, os.path.join("x", "beam_ml", "io", "bigquery.py"), 1, "m",
                             None, None)
    assert logs._LibraryRecords().filter(ours)


def _train(tmp_path, *extra):
    argv = [sys.executable, "-m", "pipelines.train", "--dataset=retention", "--dataset_rows=800",
            f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", "--epochs=2", "--cv_folds=2",
            "--hidden_units=8", "--runner=DirectRunner", *extra]
    env = {k: v for k, v in os.environ.items() if k not in (logs.VERBOSE_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = os.getcwd()
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.slow
def test_train_prints_progress_and_a_summary_and_nothing_else(tmp_path):
    # Trials in two worker processes: they must be as quiet as the launcher.
    out = _train(tmp_path, "--tune", '--param_grid={"dropout": [0.0]}', "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2")
    for noise in NOISE:
        assert noise not in out, out
    assert "[beam_ml] trial s00-f1 done" in out and "[beam_ml] leaderboard" in out
    assert f"[beam_ml] report:  {tmp_path / 'out' / 'report.html'}" in out
    assert all(line.startswith(("[beam_ml]", "  ")) for line in out.splitlines()), out


@pytest.mark.slow
def test_verbose_brings_keras_epochs_and_library_logs_back(tmp_path):
    out = _train(tmp_path, "--verbose")
    assert "Epoch 1/2" in out and "INFO:apache_beam" in out
    assert "oneDNN" in out  # TensorFlow's own notes as it loads
    assert "[beam_ml] report:" in out
