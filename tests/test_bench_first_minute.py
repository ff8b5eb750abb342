"""The first-minute benchmark runs end to end on small data and reports every phase (the full run is separate)."""
import pytest

pytestmark = pytest.mark.slow


def test_bench_first_minute_quick(tmp_path):
    from benchmarks import bench_first_minute

    r = bench_first_minute.main(["--quick", f"--work_dir={tmp_path}"])
    phases = r["train"]["phases_s"]
    assert list(phases) == ["imports", "read, split, tf.Transform analyze", "transform, write TFRecords", "trials",
                            "export (evaluated model)", "test evaluation", "refit on every row, export", "report",
                            "exit"]
    assert all(v >= 0 for v in phases.values()) and phases["imports"] > 0 and phases["trials"] > 0
    assert sum(phases.values()) <= r["train"]["wall_s"] + 1e-6
    assert r["rows"] == 300 and 0 < r["train"]["test"]["rows"] < 300
    assert "before the final refit on all" in r["train"]["test_metrics"]
    for key in ("predict_one_row_s", "train_help_s", "train_bad_flag_s"):
        assert r[key] > 0
