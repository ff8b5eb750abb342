"""The streaming benchmark's scorers produce complete, correct outputs (never timings).

    python -m pytest tests/test_bench_stream.py -q -m integration

Runs `benchmarks.bench_stream` at a tiny scale (300 events, a 3 s latency
phase) on a session model, the 4-partition two-worker run included; every
scorer's output is checked by the benchmark
itself (each event id predicted once, scores equal to the offline model's)
and the test asserts those checks passed and counted what they should.
"""
import json
import os

import pytest

from benchmarks import bench_stream as bench


@pytest.mark.integration
@pytest.mark.slow
def test_every_scorer_completes_correctly(fraud, tmp_path):
    report = bench.run(["--events=300", "--latency_seconds=3", f"--model_dir={fraud[0]}",
                        f"--work_dir={tmp_path}", "--startup_timeout=120", "--drain_seconds=20"])

    assert set(report["methods"]) == {"ours", "a", "b", "bo", "ours2", "b4"}
    for name, method in report["methods"].items():
        assert method["problems"] == [], name
        assert method["throughput"]["events"] == 300, name
        assert method["throughput"]["events_per_s"] > 0, name
    # The two-worker run read a 4-partition topic, in total exactly --events records.
    assert report["produce_wide"]["events"] == 300
    for name in ("ours", "ours2"):
        assert report["methods"][name]["counts"]["predictions"] == 300, name
        assert report["methods"][name]["counts"]["rows_in"] == 300, name
    assert report["methods"]["a"]["scored"] == 300
    for name in ("ours", "b"):
        lat = report["methods"][name]["latency"]
        assert lat["sent"] == lat["received"] > 0 and lat["problems"] == [], name
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"], name
    assert {"ours/(b) throughput", "ours2/(b4) throughput", "ours/(bo) throughput"} <= set(report["ratios"])
    with open(os.path.join(tmp_path, "bench_stream.json")) as f:
        assert json.load(f)["methods"]["ours2"]["problems"] == []


def test_check_predictions_catches_broken_outputs():
    offline = {"e1": 0.1, "e2": 0.9}
    good = [{"event_id": "e1", "score": 0.1, "processing_ts": 1}, {"event_id": "e2", "score": 0.9, "processing_ts": 2}]
    assert bench.check_predictions(good, ["e1", "e2"], offline) == []
    assert bench.check_predictions(good[:1], ["e1", "e2"], offline)  # one missing
    assert bench.check_predictions(good + good[:1], ["e1", "e2"], offline)  # a duplicate
    wrong = [good[0], {"event_id": "e2", "score": 0.5, "processing_ts": 2}]
    assert any("scores differ" in p for p in bench.check_predictions(wrong, ["e1", "e2"], offline))
