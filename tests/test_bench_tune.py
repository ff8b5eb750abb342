"""The --tune benchmark runs end to end on tiny data and checks what it compares (the full run is separate)."""
import pytest

pytestmark = pytest.mark.slow


def test_bench_tune_quick(tmp_path):
    from benchmarks import bench_tune

    r = bench_tune.main(["--quick", f"--work_dir={tmp_path}"])
    # The same candidates on both sides: the grid's set plus the linear model, on the same 2 folds.
    assert r["sets"] == r["gridsearch"]["candidates"] == r["gridsearch_same_feed"]["candidates"] == 2
    assert r["trials"] == 4
    assert r["worker_pids_2"] == 2  # ours' 2-worker run trained trials in both worker processes
    for key in ("ours_2_workers_s", "gridsearch_s", "gridsearch_same_feed_s"):
        assert r[key] > 0
    assert 0.5 < r["ours_test_roc_auc"] <= 1.0 and 0.5 < r["gridsearch"]["test_roc_auc"] <= 1.0
    assert 0.5 < r["gridsearch_same_feed"]["test_roc_auc"] <= 1.0
    assert 0.0 < r["ours_best"]["mean"] <= 1.0 and 0.0 < r["gridsearch"]["best_score"] <= 1.0
