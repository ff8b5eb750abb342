"""benchmarks/bench_avro runs end to end (quick mode) and reports both formats correctly (never timings)."""
import json
import os

import pytest

from benchmarks import bench_avro


@pytest.mark.integration
@pytest.mark.slow
def test_quick_run_reports_both_formats(fraud, tmp_path, capsys):
    report = bench_avro.run(["--quick", f"--model_dir={fraud[0]}", f"--work_dir={tmp_path}"])
    assert set(report["formats"]) == {"json", "avro_confluent"}
    for fmt, r in report["formats"].items():
        assert r["problems"] == [], fmt
        assert r["throughput"]["events"] == 500 and r["throughput"]["events_per_s"] > 0, fmt
        assert r["counts"]["predictions"] == r["counts"]["rows_in"] == 500, fmt
    assert report["produce"]["avro_confluent"]["events"] == 500
    assert report["ratio"].split("x")[0].replace(".", "").isdigit()
    out = capsys.readouterr().out
    assert "avro_confluent / json events/s:" in out and "json" in out
    with open(os.path.join(tmp_path, "bench_avro.json")) as f:
        assert json.load(f)["formats"]["avro_confluent"]["problems"] == []
