"""benchmarks.bench_monitor --quick completes and reports what it should (never timings)."""
import json
import os

import pytest

from benchmarks import bench_monitor
from tests.test_monitor_stream import trained_monitor_model


@pytest.mark.integration
@pytest.mark.slow
def test_quick_run_reports_the_ratio_and_the_detection_delay(tmp_path_factory, tmp_path):
    model_root, _ = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    report = bench_monitor.run(["--quick", f"--work_dir={tmp_path}", f"--model_dir={model_root}"])
    assert report == json.load(open(os.path.join(tmp_path, "bench_monitor.json")))
    for name in ("plain", "monitor"):
        (run,) = report["runs"][name]
        assert run["events"] == 4000 and run["counts"]["predictions"] == 4000 and run["events_per_s"] > 0
    assert report["ratio"] > 0
    d = report["detection"]
    assert d["alerts_before_shift"] == 0 and d["windows"] == (1250 + 1000) // 500
    # The shift starts half-way through window 2: it is caught there or in the next window.
    for feature in (bench_monitor.NUMERIC, bench_monitor.CATEGORICAL):
        assert d[feature] in (250, 750), (feature, d[feature])
