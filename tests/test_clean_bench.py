"""The clean benchmark measures what it claims: every statement runs and its outputs check out.

    python -m pytest tests/test_clean_bench.py -q -m slow

Behaviour only (rows kept, masked, counted), never timings.
"""
import json

import pytest

from benchmarks import bench_clean


@pytest.mark.slow
def test_bench_clean_runs_every_statement_and_checks_outputs(tmp_path):
    table = bench_clean.fraud_events(str(tmp_path), rows=3000)
    assert table.column("Class").null_count > 0 and "userid" in table.column_names
    results = bench_clean.measure(table, batch_rows=1000, rounds=1)
    assert set(results) == set(bench_clean.statements())
    assert all(r["median_ms"] > 0 and r["rows_per_s"] > 0 for r in results.values())


@pytest.mark.slow
def test_bench_clean_main_writes_a_report(tmp_path, capsys):
    assert bench_clean.main(["--rows=2000", "--batch_rows=1000", "--stream_batch_rows=100", "--rounds=1",
                             f"--work_dir={tmp_path}"]) == 0
    report = json.loads((tmp_path / "bench_clean.json").read_text())
    assert report["rows"] == 2000 and 0 < report["overhead_vs_preprocessing"]
    assert "| typical (all of the below) |" in capsys.readouterr().out
