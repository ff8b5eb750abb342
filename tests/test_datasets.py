"""Tests for beam_ml.datasets: schemas, determinism, class balance, re-use.

    python -m pytest tests/test_datasets.py -q
"""

import csv
import os

import numpy as np
import pytest

from beam_ml import datasets
from beam_ml.errors import UserError

_SCHEMAS = {
    "retention": [
        "satisfaction_level", "last_evaluation", "number_project",
        "average_montly_hours", "time_spend_company", "Work_accident", "left",
        "promotion_last_5years", "sales", "salary",
    ],
    "absenteeism": [
        "employee_id", "date", "department", "age", "tenure_years",
        "distance_to_work_km", "workload_index", "prior_absences_90d",
        "day_of_week", "month", "overtime_hours_week", "health_score",
        "has_children", "absent",
    ],
    "fraud": ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"],
    "digits": [*(f"pixel{i}" for i in range(64)), "label"],
}


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    return header, {name: [r[i] for r in rows] for i, name in enumerate(header)}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Each dataset written once at a small size (digits: all of it)."""
    out = tmp_path_factory.mktemp("datasets")
    sizes = {"retention": 3000, "absenteeism": 3000, "fraud": 3000, "digits": None}
    return {name: _read(datasets.write_csv(name, str(out / f"{name}.csv"), rows=rows))
            for name, rows in sizes.items()}


def test_registry_matches_the_files(small):
    assert set(datasets.DATASETS) == set(_SCHEMAS)
    for name, info in datasets.DATASETS.items():
        header, columns = small[name]
        assert info.name == name
        assert info.label in header
        assert info.key is None or info.key in header
        assert info.task in ("binary", "multiclass")
        if info.task == "binary":
            assert set(columns[info.label]) == {info.positive_label, *columns[info.label]}
            assert len(set(columns[info.label])) == 2
        else:
            assert info.positive_label is None


@pytest.mark.parametrize("name", sorted(_SCHEMAS))
def test_schema_is_exact(small, name):
    header, columns = small[name]
    assert header == _SCHEMAS[name]
    lengths = {len(v) for v in columns.values()}
    assert len(lengths) == 1  # every row has every column


@pytest.mark.parametrize("name", sorted(_SCHEMAS))
def test_same_seed_same_bytes(tmp_path, name):
    rows = None if name == "digits" else 500
    a = datasets.write_csv(name, str(tmp_path / "a.csv"), rows=rows, seed=7)
    b = datasets.write_csv(name, str(tmp_path / "b.csv"), rows=rows, seed=7)
    c = datasets.write_csv(name, str(tmp_path / "c.csv"), rows=rows, seed=8)
    with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
        bytes_a, bytes_b, bytes_c = fa.read(), fb.read(), fc.read()
    assert bytes_a == bytes_b
    if name != "digits":  # real data: the seed has nothing to draw
        assert bytes_a != bytes_c


@pytest.mark.parametrize("name, rows", [("retention", 123), ("absenteeism", 777),
                                        ("fraud", 1001), ("digits", 50)])
def test_rows_is_exact(tmp_path, name, rows):
    _, columns = _read(datasets.write_csv(name, str(tmp_path / "x.csv"), rows=rows))
    assert len(columns[datasets.DATASETS[name].label]) == rows


def test_default_rows(tmp_path):
    for name in ("retention", "absenteeism", "digits"):
        info = datasets.DATASETS[name]
        _, columns = _read(datasets.write_csv(name, str(tmp_path / f"{name}.csv")))
        assert len(columns[info.label]) == info.default_rows
    assert datasets.DATASETS["retention"].default_rows == 14_999
    assert datasets.DATASETS["fraud"].default_rows == 100_000


def test_retention_balance_and_ranges(tmp_path):
    _, c = _read(datasets.write_csv("retention", str(tmp_path / "r.csv")))
    left = np.array(c["left"], dtype=int)
    assert set(c["left"]) == {"0", "1"}
    assert 0.21 < left.mean() < 0.27
    sat = np.array(c["satisfaction_level"], dtype=float)
    ev = np.array(c["last_evaluation"], dtype=float)
    assert 0.09 <= sat.min() and sat.max() <= 1.0
    assert 0.36 <= ev.min() and ev.max() <= 1.0
    assert set(map(int, c["number_project"])) <= set(range(2, 8))
    hours = np.array(c["average_montly_hours"], dtype=int)
    assert 96 <= hours.min() and hours.max() <= 310
    assert set(map(int, c["time_spend_company"])) <= set(range(2, 11))
    assert set(c["salary"]) == {"low", "medium", "high"}
    assert set(c["sales"]) == {"sales", "technical", "support", "IT", "product_mng",
                               "marketing", "RandD", "accounting", "hr", "management"}
    # The known structure: the unhappy leave far more often.
    assert left[sat < 0.2].mean() > 0.45 > 0.2 > left[sat > 0.5].mean()


def test_absenteeism_balance_and_cells(tmp_path):
    _, c = _read(datasets.write_csv("absenteeism", str(tmp_path / "a.csv")))
    absent = np.array(c["absent"]) == "Yes"
    assert set(c["absent"]) == {"Yes", "No"}
    assert 0.035 < absent.mean() < 0.065
    assert all(len(e) == 5 and e[0] == "E" and e[1:].isdigit() for e in c["employee_id"])
    assert all(len(d) == 10 and d[4] == d[7] == "-" for d in c["date"])
    assert set(c["day_of_week"]) == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert set(c["has_children"]) == {"Yes", "No"}
    health = c["health_score"]
    missing = np.array([h == "" for h in health])
    assert 0.03 < missing.mean() < 0.12  # missing cells exist, but few
    # Signal: past absences predict absence.
    prior = np.array(c["prior_absences_90d"], dtype=int)
    assert absent[prior >= 5].mean() > 2 * absent[prior == 0].mean()


def test_fraud_balance_and_shape(tmp_path):
    _, c = _read(datasets.write_csv("fraud", str(tmp_path / "f.csv"), rows=50_000))
    assert set(c["Class"]) == {"0", "1"}
    fraud = np.array(c["Class"], dtype=int)
    assert 0.0012 < fraud.mean() < 0.0023
    time_s = np.array(c["Time"], dtype=float)
    assert np.all(np.diff(time_s) >= 0) and time_s.max() <= 172_800
    assert np.array(c["Amount"], dtype=float).min() >= 0
    v1 = np.array(c["V1"], dtype=float)
    v28 = np.array(c["V28"], dtype=float)
    assert v1.std() > 3 * v28.std()  # PCA components: decreasing variance
    v14 = np.array(c["V14"], dtype=float)
    assert v14[fraud == 1].mean() < v14[fraud == 0].mean() - 1


def test_digits_are_the_real_ones(small):
    from sklearn.datasets import load_digits

    header, c = small["digits"]
    real = load_digits()
    pixels = np.array([c[f"pixel{i}"] for i in range(64)], dtype=int).T
    assert pixels.shape == (1797, 64)
    np.testing.assert_array_equal(pixels, real.data.astype(int))
    assert [int(v) for v in c["label"]] == real.target.tolist()
    assert set(c["label"]) == {str(d) for d in range(10)}


def test_digits_refuses_more_rows_than_exist(tmp_path):
    with pytest.raises(ValueError, match="1797"):
        datasets.write_csv("digits", str(tmp_path / "d.csv"), rows=1798)


def test_materialize_writes_once_and_reuses(tmp_path):
    data_dir = str(tmp_path / "data")
    path = datasets.materialize("retention", data_dir, rows=200)
    assert path == os.path.join(data_dir, "retention_200.csv")
    first = os.stat(path)
    assert path == datasets.materialize("retention", data_dir, rows=200)
    assert os.stat(path).st_mtime_ns == first.st_mtime_ns
    assert datasets.materialize("retention", data_dir).endswith(
        os.sep + "retention.csv")
    # No temp file left behind, and another seed never shares the file.
    other = datasets.materialize("retention", data_dir, rows=200, seed=1)
    assert other != path
    assert sorted(os.listdir(data_dir)) == sorted(
        ["retention_200.csv", "retention.csv", os.path.basename(other)])


def test_materialize_reuses_an_existing_file(tmp_path):
    path = tmp_path / "fraud_10.csv"
    path.write_text("already here\n")
    assert datasets.materialize("fraud", str(tmp_path), rows=10) == str(path)
    assert path.read_text() == "already here\n"


def test_unknown_dataset_is_named_in_the_error(tmp_path):
    with pytest.raises(UserError, match="--dataset: unknown dataset 'nope'; choose one of absenteeism"):
        datasets.materialize("nope", str(tmp_path))
