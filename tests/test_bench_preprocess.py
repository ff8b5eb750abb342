"""Tests that the preprocessing benchmark's baselines compute what they claim.

    python -m pytest tests/test_bench_preprocess.py -q -m slow

Behaviour only (outputs are correctly z-scored, labels intact), never timings.
"""

import json
import os

import numpy as np
import pytest

from beam_ml import datasets
from benchmarks import bench_preprocess as bench

_ROWS = 2_000


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return datasets.materialize("fraud", str(tmp_path_factory.mktemp("data")), rows=_ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["a", "b"])
def test_tft_baselines_write_z_scored_examples(tmp_path, csv_path, key):
    out_dir = str(tmp_path / key)
    bench.METHODS[key].run(csv_path, out_dir)

    columns = bench.read_tfrecords(os.path.join(out_dir, "transformed-*"))
    assert set(columns) == set(bench.CSV_COLUMNS)
    for name in bench.NUMERIC_COLUMNS:
        assert columns[name].dtype == np.float32
        assert abs(columns[name].mean()) < 1e-3
        assert abs(columns[name].std() - 1) < 1e-3
    assert set(np.unique(columns[bench.LABEL_COLUMN])) == {0, 1}
    bench.check_z_scores(columns, csv_path)
    assert os.path.exists(os.path.join(out_dir, "transform_fn", "saved_model.pb"))


@pytest.mark.slow
def test_pandas_baseline_writes_z_scored_arrays(tmp_path, csv_path):
    out_dir = str(tmp_path / "c")
    bench.run_pandas_sklearn(csv_path, out_dir)

    features = np.load(os.path.join(out_dir, "features.npy"))
    assert features.shape == (_ROWS, len(bench.NUMERIC_COLUMNS))
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(features.std(axis=0), 1, atol=1e-9)
    bench.check_z_scores(bench.read_npy(out_dir), csv_path)


@pytest.mark.slow
def test_check_rejects_unscaled_or_damaged_output(tmp_path, csv_path):
    out_dir = str(tmp_path / "c")
    bench.run_pandas_sklearn(csv_path, out_dir)
    good = bench.read_npy(out_dir)

    unscaled = dict(good, Amount=good["Amount"] * 3 + 1)
    with pytest.raises(AssertionError, match="Amount"):
        bench.check_z_scores(unscaled, csv_path)
    scrambled = dict(good, V14=np.random.default_rng(0).permutation(good["V1"]))
    with pytest.raises(AssertionError, match="V14"):
        bench.check_z_scores(scrambled, csv_path)
    relabelled = dict(good, Class=np.zeros_like(good["Class"]))
    with pytest.raises(AssertionError, match="Class"):
        bench.check_z_scores(relabelled, csv_path)


@pytest.mark.slow
def test_main_reports_json(tmp_path):
    report = bench.main([f"--rows={_ROWS}", f"--work_dir={tmp_path}", "--only=c", "--no_shapes"])

    with open(tmp_path / "bench_preprocess.json", encoding="utf-8") as f:
        assert json.load(f) == report
    (result,) = report["results"]
    assert result["key"] == "c" and result["rows"] == _ROWS
    assert result["verified"] and result["error"] is None
    assert result["rows_per_s"] > 0
    assert report["ratios"] == {"ours/(a)": None, "ours/(b)": None, "ours/(c)": None}


@pytest.mark.slow
def test_a_shape_runs_in_its_own_process_and_is_checked(tmp_path):
    csv_path = bench.write_wide_categorical(str(tmp_path / "w.csv"), rows=300)
    s = bench.measure_shape("wide_categorical", csv_path, "label", 300, str(tmp_path / "out"))
    assert s["verified"] and s["error"] is None, s
    assert 0 < s["preprocess_seconds"] < s["process_seconds"] and s["peak_rss_mb"] > 100
    goals = bench.shape_goals({"wide_categorical": s})
    assert list(goals) == ["wide_categorical preprocess < 8 s"]
    # A shape whose counts do not add up is not counted.
    bad = bench.measure_shape("wide_categorical", csv_path, "label", 301, str(tmp_path / "out2"))
    assert not bad["verified"] and "counts do not add up" in bad["error"]
