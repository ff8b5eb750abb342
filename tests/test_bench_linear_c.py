"""benchmarks/bench_linear_c.py: the rules that choose C, on a tiny synthetic problem and on one real split."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_linear_c
from benchmarks.bench_quality import lr_features


def test_the_rules_pick_the_c_they_promise():
    scores = {0.1: 0.80, 0.3: 0.85, 1: 0.86, 3: 0.86, 10: 0.84}
    assert bench_linear_c.best_c(scores) == 1  # 1 and 3 tie: the one closest to C=1
    assert bench_linear_c.smallest_within(scores, {c: 0.02 for c in scores}) == 0.3
    # 10 scores best but not by its margin; 3 beats C=1 by more than its own
    beaten = {0.1: 0.8, 1: 0.86, 3: 0.90, 10: 0.91}
    assert bench_linear_c.one_unless_beaten(beaten, {0.1: 0, 1: 0, 3: 0.01, 10: 0.1}) == 3
    assert bench_linear_c.one_unless_beaten(scores, {c: 0.0 for c in scores}) == 1


def _synthetic(n=300):
    """A learnable binary problem: two informative numerics, one noise column, a categorical; 240 given rows."""
    rng = np.random.default_rng(7)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "noise": rng.normal(size=n),
                      "colour": rng.choice(["red", "green", "blue"], n)})
    logit = 1.5 * x["a"] - x["b"] + (x["colour"] == "red") * 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy(np.int64)
    return x, y, slice(0, 240), slice(240, n)


def test_choose_c_on_a_small_synthetic_problem():
    x, y, given, held = _synthetic()
    grid = (0.1, 1, 10)  # a short grid keeps the test fast
    r = bench_linear_c.choose_c("binary", 2, lr_features(["a", "b", "noise"], ["colour"]), x.iloc[given],
                                y[given], x.iloc[held], y[held], grid=grid, resamples=50)
    assert r["rows_given"] == 240 and 0 < r["rows_fold0"] < 240 * 0.25
    assert sorted(r["oracle"]) == list(grid)
    assert 0.7 < r["base"] <= 1.0 and abs(r["conv1"] - r["base"]) < 0.01  # a learnable signal; tol barely matters
    for key, _ in bench_linear_c.VARIANTS:
        assert r[key + "C"] in grid
        assert r[key] == r["oracle"][r[key + "C"]]  # each column is the held-out score of the C it chose
    assert r["conv1C"] == 1 and r["cvC"] == bench_linear_c.best_c(r["cv_means"]) and r["f0C"] == bench_linear_c.best_c(
        r["fold0"])
    assert r["c1seC"] <= r["cvC"] and r["f01seC"] <= r["f0C"]  # one-SE rules never pick a larger C than the best
    summary = bench_linear_c.summarize([dict(r, dataset="synthetic", seed=0)])
    conv1 = next(s for s in summary if s["variant"] == "conv1")
    assert conv1["at_least"] + conv1["below"] == 1 and conv1["mean_diff"] == pytest.approx(r["conv1"] - r["base"])


def test_a_missing_category_imputed_or_kept_as_its_own():
    x, y, given, held = _synthetic()
    x = x.assign(colour=x["colour"].where(np.arange(len(x)) % 4 > 0))  # one value in four missing
    missing = bench_linear_c.missing_values("binary", 2, ["a", "b", "noise"], ["colour"], x.iloc[given], y[given],
                                            x.iloc[held], y[held])
    assert list(missing) == ["most frequent, tol=1e-4", "most frequent, tol=1e-6", "own category, tol=1e-4",
                             "own category, tol=1e-6"]
    assert all(0.7 < v <= 1.0 for v in missing.values())
    assert missing["most frequent, tol=1e-6"] != missing["own category, tol=1e-6"]  # two different models


def test_an_unknown_dataset_or_seed_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench_linear_c.main(["--only=breast_cancer_typo", f"--work_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        bench_linear_c.main(["--seeds=0,x", f"--work_dir={tmp_path}"])


@pytest.mark.slow
def test_one_dataset_one_split_end_to_end(tmp_path, capsys):
    report = bench_linear_c.main(["--only=breast_cancer", "--seeds=0", f"--work_dir={tmp_path}"])
    out = capsys.readouterr().out
    (row,) = report["rows"]
    assert row["dataset"] == "breast_cancer" and row["seed"] == 0 and row["rows_given"] == 456
    # bench_quality's seed-0 split: LogisticRegression(C=1) scores 0.97820 there, C=1 converged the same.
    assert row["base"] == pytest.approx(0.97820, abs=5e-5) and row["conv1"] == pytest.approx(row["base"], abs=1e-4)
    table = [line for line in out.splitlines() if line.startswith("| breast_cancer |")]
    assert len(table) == 1 and table[0].startswith("| breast_cancer | 456 | 0.97820 | ")
    assert table[0].count("(C=") == len(bench_linear_c.VARIANTS)
    summary = [line for line in out.splitlines() if line.startswith("| ") and "/1 |" in line]
    assert [line.split(" | ")[0][2:] for line in summary] == [name for _, name in bench_linear_c.VARIANTS]
    assert "missing_values" not in row and "own category" not in out  # breast_cancer has no categorical column
    with open(tmp_path / "report.json") as f:
        saved = json.load(f)
    assert saved["rows"][0]["cvC"] == row["cvC"] and len(saved["summary"]) == len(bench_linear_c.VARIANTS)
