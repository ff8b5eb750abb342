"""benchmarks/bench_window --quick runs end to end and reports both comparisons (shape, not speed)."""
import pytest

from benchmarks import bench_window


@pytest.mark.slow
@pytest.mark.integration
def test_bench_window_quick_reports_both_ratios(tmp_path):
    result = bench_window.main(["--quick", f"--work_dir={tmp_path / 'w'}"])
    live, training = result["live"], result["training"]
    assert live["with"]["predictions"] == live["without"]["predictions"] == live["events"]
    assert live["with"]["late_events"] == 0 and live["ratio_with_over_without"] > 0
    assert training["with"]["rows_good"] == training["without"]["rows_good"] == training["rows"]
    assert training["ratio_with_over_without"] > 0
