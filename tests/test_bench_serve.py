"""The serving benchmark runs every phase and reports complete figures (never asserts timings).

    python -m pytest tests/test_bench_serve.py -q -m slow
"""
import json

import pytest

from benchmarks import bench_serve
from tests.model_fixture import trained_fraud_model


@pytest.mark.slow
@pytest.mark.integration
def test_quick_run_reports_every_phase(tmp_path, tmp_path_factory):
    root, _ = trained_fraud_model(str(tmp_path_factory.getbasetemp()))
    out = tmp_path / "report.json"
    report = bench_serve.run(["--quick", f"--model_dir={root}", f"--work_dir={tmp_path}", "--clients=8",
                              f"--json_out={out}"])
    assert json.loads(out.read_text())["goals"].keys() == report["goals"].keys()
    for phase in ("ours_one", "ours_many", "ours_reload", "a_one", "a_many"):
        m = report[phase]
        assert m["requests"] > 0 and m["ok"] + m["errors"] == m["requests"], phase
        assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"], phase
    assert report["ours_exit_status"] == 0
    reload = report["ours_reload"]
    assert reload["errors"] == 0 and reload["unnamed"] == 0
    # both versions answered during the phase, each response naming the one that scored it
    assert {int(k.split("@")[0]) for k in reload["versions"]} == {reload["exported_version"] - 1,
                                                                   reload["exported_version"]}
    assert report["b_cli"]["calls"] == 1 and report["b_cli"]["p50_ms"] > 0
    assert {"one client p50 < 5 ms", "64 clients >= 3x (a)", "reload: zero failed, every response named"} <= \
        set(report["goals"])
