"""--tune end to end: trials as Beam elements in parallel worker processes, leaderboard, refit, test metrics."""
import os

import pytest

from beam_ml import datasets, fs
from pipelines import train

pytestmark = pytest.mark.slow

GRID = '{"hidden_units": ["32", "16,8"], "dropout": [0.0], "learning_rate": [0.003]}'


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    src = datasets.materialize("retention", str(root / "data"), rows=2500)
    out = root / "out"
    result = train.run([f"--input={src}", "--label=left", f"--output_dir={out}", "--tune", f"--param_grid={GRID}",
                        "--cv_folds=3", "--epochs=4", "--verbose=0", "--runner=DirectRunner",
                        "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    return result


def test_every_set_is_cross_validated_in_parallel_processes(tuned):
    m = tuned.metrics
    board = m["leaderboard"]
    # 2 MLPs from the grid + the linear model, each on all 3 folds.
    assert sorted(r["name"] for r in board) == ["linear lbfgs C=1", "mlp 16-8 adam lr=0.003",
                                                "mlp 32 adam lr=0.003"]
    assert all(r["folds"] == [0, 1, 2] and len(r["scores"]) == 3 for r in board)
    assert [r["rank"] for r in board] == [1, 2, 3]
    assert board[0]["mean"] >= board[1]["mean"] >= board[2]["mean"]
    trials = m["trials"]
    assert sorted(t["trial_id"] for t in trials) == sorted(f"s0{s}-f{f}" for s in range(3) for f in range(3))
    assert len({t["pid"] for t in trials}) >= 2  # the runner's two worker processes both trained trials
    assert os.getpid() not in {t["pid"] for t in trials}  # and the launcher none


def test_the_best_set_is_refit_on_train_plus_validation_and_exported_with_its_cv_scores(tuned):
    m = tuned.metrics
    board, final = m["leaderboard"], m["final"]
    best = next(r for r in board if r["selected"])
    # One standard error: the simplest set whose mean is within std/√3 of the top mean.
    near = [r for r in board if r["mean"] >= board[0]["mean"] - board[0]["se"] - 1e-9]
    assert best["params"] == min(near, key=lambda r: (sum(r["params"]["hidden_units"]), r["rank"]))["params"]
    assert board[0]["se"] == pytest.approx(board[0]["std"] / 3 ** 0.5)
    assert final["params"]["hidden_units"] == best["params"]["hidden_units"]
    # Evaluated on test after training on every fold; then refit with the same epochs on the test rows too.
    assert final["evaluated"]["train_rows"] == sum(tuned.counts["rows_per_split"][f"fold{j}"] for j in range(3))
    assert final["train_rows"] == tuned.counts["rows_good"]
    assert final["params"]["epochs"] == best["median_best_epoch"] <= 4
    assert final["epochs_run"] == final["evaluated"]["epochs_run"] == final["params"]["epochs"]
    assert final["threshold_from"] == "out-of-fold validation scores of the best set"
    meta = fs.read_json(os.path.join(m["summary"]["model_version_dir"], "assets.extra", "beam_ml.json"))
    assert meta["tuned"] is True and meta["cv"]["scores"] == best["scores"]
    assert meta["test_metrics"]["rows"] == tuned.counts["rows_test"] == m["test"]["rows"]
    assert m["test"]["roc_auc"] > 0.85


def test_the_closing_summary_shows_the_leaderboard(tuned):
    from beam_ml.training.report import summary_text

    text = summary_text(tuned.metrics)
    assert "leaderboard (validation roc_auc, mean ± std over 3 fold(s))" in text
    assert text.count(" ± ") == 1 + 3 and "report.html" in text  # the heading and one line per set
