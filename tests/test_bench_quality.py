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
