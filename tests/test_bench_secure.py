"""The secured-streaming benchmark runs both scorers to complete, correct outputs (never timings).

    python -m pytest tests/test_bench_secure.py -q -m integration
"""
import json
import os

import pytest

from benchmarks import bench_secure


@pytest.mark.integration
@pytest.mark.slow
def test_quick_run_reports_both_runs_and_their_ratio(fraud, tmp_path):
    report = bench_secure.run(["--quick", f"--model_dir={fraud[0]}", f"--work_dir={tmp_path}"])

    assert set(report["methods"]) == {"plaintext", "sasl_ssl"}
    for name, method in report["methods"].items():
        assert method["problems"] == [], name
        assert method["throughput"]["events"] == 500 and method["throughput"]["events_per_s"] > 0, name
        assert method["counts"]["predictions"] == 500, name
    assert report["produce"]["sasl_ssl"]["events"] == report["produce"]["plaintext"]["events"] == 500
    assert report["ratio"] > 0 and report["goal"] == 0.8
    assert "cpu_ratio" in report  # None when a window is too short to sample CPU (500 events)
    with open(os.path.join(tmp_path, "bench_secure.json")) as f:
        assert json.load(f)["ratio"] == report["ratio"]
