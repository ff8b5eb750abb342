"""The read benchmark runs end to end on small files and checks what it reads.

    python -m pytest tests/test_bench_read.py -q -m slow

Behaviour only (every form is read with the expected good, dead and blank
counts; the report has every figure), never timings.
"""
import json
import os

import pytest

from beam_ml.io.csv import read_csv_file
from beam_ml.spec import infer_spec
from benchmarks import bench_read as bench


def test_the_dirty_file_has_the_damage_it_claims(tmp_path):
    from beam_ml import datasets

    clean = datasets.materialize("fraud", str(tmp_path), rows=3000)
    expected = bench.make_dirty(clean, str(tmp_path / "dirty.csv"))
    assert expected == {"lines_in": 3000, "rows_good": 2970, "rows_dead": 30, "blank_lines": 3}
    spec = infer_spec(clean, bench.LABEL)
    reasons = [d.reason for r in read_csv_file(str(tmp_path / "dirty.csv"), spec) for d in r.dead]
    for part in ("invalid UTF-8", "unterminated quoted field", "wrong number of fields", "expected a number",
                 "unknown label"):
        assert sum(part in r for r in reasons) == 6, part
    bench.run_reader(str(tmp_path / "dirty.csv"), spec, expected)  # raises if the counts differ


@pytest.mark.slow
def test_benchmark_runs_and_reports_every_figure(tmp_path):
    report = bench.main(["--rows=3000", "--big_mb=2", "--repeats=1", f"--work_dir={tmp_path}"])
    assert set(report["read"]) == {"clean", "gzip", "dirty"}
    for form in report["read"].values():
        assert form["pipeline"]["rows_per_s"] > 0 and form["reader"]["rows_per_cpu_s"] > 0
    assert all(v > 0 for v in report["read_ratios"].values())
    assert report["scale"]["rows"] > 3000 and report["scale"]["speedup_2_vs_1"] > 0
    assert sum(report["scale"]["workers_2"]["rows_per_worker"]) == report["scale"]["rows"]
    with open(os.path.join(tmp_path, "bench_read.json")) as f:
        assert json.load(f)["read"]["dirty"]["rows_dead"] == 30
