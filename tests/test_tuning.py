"""The search space, the trials it expands to and the leaderboard (pure functions)."""
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml import tuning
from beam_ml.errors import UserError

BASE = {"hidden_units": [64, 32], "dropout": 0.2, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 0,
        "epochs": 30, "class_weights": "auto", "l2": 0.0}


def test_json_grid_is_parsed_and_normalized():
    grid = tuning.parse_param_grid('{"hidden_units": ["64,32", "128", ""], "dropout": [0, 0.2], '
                                   '"optimizer": ["adam", "rmsprop"], "batch_size": [32, 128], '
                                   '"learning_rate": [1e-3, 3e-3]}')
    assert grid["hidden_units"] == [[64, 32], [128], []]
    assert grid["dropout"] == [0.0, 0.2] and grid["batch_size"] == [32, 128]


def test_yaml_file_grid(tmp_path):
    p = tmp_path / "grid.yaml"
    p.write_text("hidden_units: ['64,32', linear]\nlearning_rate: 0.01\n")
    assert tuning.parse_param_grid(str(p)) == {"hidden_units": [[64, 32], []], "learning_rate": [0.01]}


@pytest.mark.parametrize("text,message", [
    ('{"dropot": [0.1]}', "unknown parameter.*dropot"),
    ('{"dropout": [1.5]}', "dropout 1.5"),
    ('{"optimizer": ["adamw"]}', "optimizer 'adamw'"),
    ('{"hidden_units": ["64,x"]}', "hidden_units"),
    ('{"batch_size": [12.5]}', "batch_size"),
    ('{"dropout": []}', "empty list"),
    ('{"dropout": [0.1}', "not valid JSON"),
    ("/no/such/grid.yaml", "neither a JSON object nor an existing file"),
])
def test_bad_grids_name_the_flag_and_the_problem(text, message):
    with pytest.raises(UserError, match="--param_grid: .*" + message):
        tuning.parse_param_grid(text)


_values = st.fixed_dictionaries({}, optional={
    "dropout": st.lists(st.sampled_from([0, 0.1, 0.25, 0.5]), min_size=1, max_size=3),
    "learning_rate": st.lists(st.floats(1e-5, 1.0), min_size=1, max_size=3),
    "hidden_units": st.lists(st.lists(st.integers(1, 512), max_size=3), min_size=1, max_size=3),
    "batch_size": st.lists(st.integers(0, 4096), min_size=1, max_size=3),
    "optimizer": st.lists(st.sampled_from(tuning.OPTIMIZERS), min_size=1, max_size=4),
})


@settings(max_examples=60, deadline=None)
@given(_values)
def test_any_valid_grid_round_trips_through_json_and_yields_a_linear_candidate(grid):
    text = json.dumps({k: [",".join(map(str, v)) if k == "hidden_units" else v for v in vals]
                       for k, vals in grid.items()} or {"dropout": [0.1]})
    parsed = tuning.parse_param_grid(text)
    for key, values in grid.items():
        assert parsed[key] == [list(v) if key == "hidden_units" else v for v in values]
    hidden = parsed.get("hidden_units", [BASE["hidden_units"]])
    if "lbfgs" in parsed.get("optimizer", []) and any(hidden):
        with pytest.raises(UserError, match="optimizer lbfgs .* fits only the linear model"):
            tuning.parameter_sets(parsed, BASE)
        return
    sets = tuning.parameter_sets(parsed, BASE)
    assert sum(1 for s in sets if s["hidden_units"] == []) >= 1
    assert len({json.dumps(s, sort_keys=True) for s in sets}) == len(sets)  # distinct
    assert len(sets) <= math.prod(len(v) for v in parsed.values()) + 1


def test_grid_product_random_search_and_max_trials():
    grid = {"hidden_units": [[64], [128]], "dropout": [0.0, 0.2], "learning_rate": [1e-3, 3e-3]}
    sets = tuning.parameter_sets(grid, BASE)
    assert len(sets) == 9 and sets[-1]["hidden_units"] == [] and sets[-1]["dropout"] == 0.0
    # Logistic regression fitted exactly, scikit-learn's C=1: the usual baseline itself.
    assert sets[-1]["optimizer"] == "lbfgs" and sets[-1]["l2"] == 0.0
    assert tuning.describe(sets[-1]) == "linear lbfgs C=1"
    # The linear autoencoder has no exact fit here: Adam, with the step raised for a convex model.
    anomaly = tuning.parameter_sets(grid, BASE, task="anomaly")[-1]
    assert anomaly["hidden_units"] == [] and anomaly["optimizer"] == "adam" and anomaly["learning_rate"] == 0.01
    assert len(tuning.parameter_sets(grid, BASE, max_trials=3)) == 4  # 3 + the linear model
    a = tuning.parameter_sets(grid, BASE, search="random", max_trials=5, seed=1)
    b = tuning.parameter_sets(grid, BASE, search="random", max_trials=5, seed=1)
    assert a == b and len(a) == 6  # seeded; plus the linear model


def test_trials_have_stable_ids_and_one_seed_per_set():
    sets = tuning.parameter_sets({"dropout": [0.0, 0.3]}, BASE)
    trials = tuning.expand_trials(sets, range(3))
    assert [t["trial_id"] for t in trials[:4]] == ["s00-f0", "s00-f1", "s00-f2", "s01-f0"]
    assert len(trials) == 9 and len({t["seed"] for t in trials}) == 3
    assert trials == tuning.expand_trials(sets, range(3))


def _result(set_id, index, fold, score, hidden=(64,), best_epoch=5):
    return {"set_id": set_id, "set_index": index, "params": dict(BASE, hidden_units=list(hidden)), "fold": fold,
            "score": score, "best_epoch": best_epoch, "seconds": 1.0}


def test_leaderboard_ranks_by_mean_with_sample_std_and_prefers_the_simpler_model_on_ties():
    results = [_result("s00", 0, f, s) for f, s in enumerate([0.80, 0.90])] + \
              [_result("s01", 1, f, s, hidden=()) for f, s in enumerate([0.85, 0.85])] + \
              [_result("s02", 2, f, s, best_epoch=e) for f, (s, e) in enumerate([(0.9, 3), (0.92, 9), (0.91, 4)])]
    board = tuning.leaderboard(results, "roc_auc")
    assert [r["set_id"] for r in board] == ["s02", "s01", "s00"]
    assert board[0]["mean"] == pytest.approx(0.91) and board[0]["std"] == pytest.approx(0.01)
    assert board[0]["median_best_epoch"] == 4 and board[0]["rank"] == 1
    tie = tuning.leaderboard([_result("s00", 0, 0, 0.8), _result("s01", 1, 0, 0.8, hidden=())], "roc_auc")
    assert tie[0]["set_id"] == "s01"  # linear wins a tie


def test_one_standard_error_rule_exports_the_simplest_set_within_the_noise_of_the_best():
    results = [_result("s00", 0, f, s, hidden=(128, 64)) for f, s in enumerate([0.90, 0.94, 0.92])] + \
              [_result("s01", 1, f, s, hidden=(16,)) for f, s in enumerate([0.90, 0.92, 0.91])] + \
              [_result("s02", 2, f, s, hidden=()) for f, s in enumerate([0.85, 0.86, 0.87])]
    board = tuning.leaderboard(results, "roc_auc")
    assert [r["set_id"] for r in board] == ["s00", "s01", "s02"]  # ranked by mean, as before
    assert board[0]["se"] == pytest.approx(0.02 / math.sqrt(3))
    # s01's 0.91 is within one SE (0.0115) of 0.92 and has fewer units; the linear 0.86 is not.
    assert [r["selected"] for r in board] == [False, True, False]
    assert tuning.selected(board)["set_id"] == "s01"
    best = tuning.leaderboard(results, "roc_auc", rule="best")
    assert tuning.selected(best)["set_id"] == "s00" and best[0]["selected"]
    with pytest.raises(UserError, match="--selection_rule: 'median'"):
        tuning.leaderboard(results, "roc_auc", rule="median")


def test_with_one_fold_the_rule_uses_the_trials_bootstrap_error():
    mlp, linear = _result("s00", 0, 0, 0.90), _result("s01", 1, 0, 0.87, hidden=())
    pick = lambda a, b: tuning.selected(tuning.leaderboard([a, b], "roc_auc"))["set_id"]  # noqa: E731
    assert pick(dict(mlp, score_se=0.04), linear) == "s01"
    assert pick(dict(mlp, score_se=0.01), linear) == "s00"
    assert pick(mlp, linear) == "s00"  # no error known: 0
    # The error of the difference: a perfect fold (bootstrap error 0) does not win on a lead of 0.001.
    board = tuning.leaderboard([dict(mlp, score=1.0, score_se=0.0), dict(linear, score=0.999, score_se=0.0013)],
                               "roc_auc")
    assert tuning.selected(board)["set_id"] == "s01" and board[1]["margin"] == pytest.approx(0.0013)
    assert pick(dict(mlp, score=1.0, score_se=0.0), dict(linear, score=0.99, score_se=0.0013)) == "s00"


def test_lbfgs_is_for_the_linear_model_only():
    with pytest.raises(UserError, match="model flags: optimizer lbfgs fits only the linear model"):
        tuning.normalize_params(dict(BASE, optimizer="lbfgs"), where="model flags")
    with pytest.raises(UserError, match="optimizer lbfgs .* not 'mlp 64-32"):
        tuning.parameter_sets({"optimizer": ["adam", "lbfgs"]}, BASE)
    with pytest.raises(UserError, match=r"\(anomaly\)"):
        tuning.parameter_sets({"hidden_units": [""], "optimizer": ["lbfgs"]}, BASE, task="anomaly")
    sets = tuning.parameter_sets({"hidden_units": [""], "optimizer": ["lbfgs"], "l2": [0.0, 0.01]}, BASE)
    assert [tuning.describe(s) for s in sets] == ["linear lbfgs C=1", "linear lbfgs l2=0.01"]


def test_a_fold_without_a_score_does_not_poison_the_mean():
    board = tuning.leaderboard([_result("s00", 0, 0, None), _result("s00", 0, 1, 0.7)], "roc_auc")
    assert board[0]["mean"] == pytest.approx(0.7)


def test_the_default_space_is_eight_mlps_and_the_linear_model():
    sets = tuning.parameter_sets(tuning.DEFAULT_GRID, BASE)
    assert len(sets) == 9
    assert sorted({tuple(s["hidden_units"]) for s in sets}) == [(), (64, 32), (128, 64)]
    assert all(isinstance(s["learning_rate"], float) for s in sets)
