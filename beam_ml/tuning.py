"""The search space, the trials it expands to, and the leaderboard: pure functions.

    grid = parse_param_grid('{"hidden_units": ["64,32", "128"], "dropout": [0, 0.2]}')
    sets = parameter_sets(grid, base_params(opts), search="grid")       # the linear model always among them
    trials = expand_trials(sets, folds=range(5))                         # one Beam element each
    board = leaderboard(results, metric="roc_auc")                       # mean ± std per set, best first

A parameter set is a plain dict over PARAM_KEYS; its `family` (linear, mlp,
autoencoder: beam_ml.training.families) says what kind of model it is, and a
set without one (`hidden_units: []` is the linear model) gets it when the
search forms its sets. Every set a search yields includes one linear
candidate (logistic or softmax regression on the transformed features, a
linear autoencoder for anomaly), so the chosen model is never worse than the
linear baseline on validation.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from typing import Any, Iterable, Mapping, Optional, Sequence

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.training import families

__all__ = ["PARAM_KEYS", "DEFAULT_GRID", "parse_param_grid", "normalize_params", "base_params", "parameter_sets",
           "expand_trials", "describe", "default_tune_metric", "leaderboard", "selected", "set_id"]

# Every family's optimizers ('lbfgs': the linear family's exact fit of a classifier).
OPTIMIZERS = families.OPTIMIZERS
SELECTION_RULES = ("one_se", "best")
CLASS_WEIGHTS = ("auto", "balanced", "none")
PARAM_KEYS = ("family", "hidden_units", "dropout", "optimizer", "learning_rate", "batch_size", "epochs",
              "class_weights", "l2")

# --tune without --param_grid: two widths, with and without dropout, two
# learning rates (8 MLPs) plus the linear model: 9 sets.
DEFAULT_GRID = {"hidden_units": ["64,32", "128,64"], "dropout": [0.0, 0.2], "learning_rate": [1e-3, 3e-3]}


def _hidden_units(value: Any, where: str) -> list[int]:
    if isinstance(value, (list, tuple)):
        units = [int(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        units = [] if value == 0 else [value]
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "0", "linear", "none"):
            return []
        try:
            units = [int(v) for v in text.replace("-", ",").split(",") if v.strip()]
        except ValueError:
            raise UserError(f"{where}: hidden_units {value!r}: expected comma-separated integers or \"\" (linear)")
    else:
        raise UserError(f"{where}: hidden_units {value!r}: expected \"64,32\", [64, 32] or \"\" (linear)")
    if any(u <= 0 for u in units):
        raise UserError(f"{where}: hidden_units {value!r}: layer sizes must be positive")
    return units


def normalize_params(params: Mapping[str, Any], where: str = "--param_grid") -> dict[str, Any]:
    """Checks and canonicalizes one parameter set (types, ranges); raises UserError naming `where`."""
    unknown = set(params) - set(PARAM_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown parameter(s) {', '.join(sorted(unknown))}; expected some of "
                        f"{', '.join(PARAM_KEYS)}")
    out = dict(params)
    try:
        if "hidden_units" in out:
            out["hidden_units"] = _hidden_units(out["hidden_units"], where)
        if "dropout" in out:
            out["dropout"] = float(out["dropout"])
            if not 0.0 <= out["dropout"] < 1.0:
                raise UserError(f"{where}: dropout {out['dropout']}: expected a value in [0, 1)")
        if "learning_rate" in out:
            out["learning_rate"] = float(out["learning_rate"])
            if out["learning_rate"] <= 0:
                raise UserError(f"{where}: learning_rate {out['learning_rate']}: expected > 0")
        for key, low in (("batch_size", 0), ("epochs", 1)):
            if key in out:
                if float(out[key]) != int(out[key]) or int(out[key]) < low:
                    raise UserError(f"{where}: {key} {out[key]!r}: expected an integer >= {low}")
                out[key] = int(out[key])
        if "l2" in out:
            out["l2"] = float(out["l2"])
            if out["l2"] < 0:
                raise UserError(f"{where}: l2 {out['l2']}: expected >= 0")
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}")
    if "optimizer" in out and out["optimizer"] not in OPTIMIZERS:
        raise UserError(f"{where}: optimizer {out['optimizer']!r}: expected one of {', '.join(OPTIMIZERS)}")
    if "class_weights" in out and out["class_weights"] not in CLASS_WEIGHTS:
        raise UserError(f"{where}: class_weights {out['class_weights']!r}: expected one of {', '.join(CLASS_WEIGHTS)}")
    if "family" in out and out["family"] not in families.FAMILIES:
        raise UserError(f"{where}: family {out['family']!r}: expected one of {', '.join(families.FAMILIES)}")
    if "family" in out or "hidden_units" in out:  # the set says which model it is: can it use its optimizer?
        families.check_optimizer(out, where=where)
    return out


def _load_grid_text(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{"):
        return stripped

    if not fs.is_file(stripped):
        raise UserError(f"--param_grid: neither a JSON object nor an existing file: {text!r}")
    return fs.read_text(stripped)


def parse_param_grid(text: str) -> dict[str, list]:
    """The grid of --param_grid: a JSON object of lists, or a .json/.yaml file holding one.

    A scalar value is a one-value list. Every value is checked as a parameter.

    Raises:
      UserError: naming --param_grid and what is wrong.
    """
    raw = _load_grid_text(text)
    is_yaml = not raw.lstrip().startswith("{")
    try:
        if is_yaml:
            import yaml

            grid = yaml.safe_load(raw)
        else:
            grid = json.loads(raw)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(f"--param_grid: not valid {'YAML' if is_yaml else 'JSON'}: {str(e).splitlines()[0]}")
    if not isinstance(grid, dict) or not grid:
        raise UserError("--param_grid: expected a non-empty object of parameter lists, e.g. {\"dropout\": [0, 0.2]}")
    out = {}
    for key, values in grid.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise UserError(f"--param_grid: {key} has an empty list")
        out[key] = [normalize_params({key: v})[key] for v in values]
    return out


def base_params(opts) -> dict[str, Any]:
    """The parameter set of the model flags (--hidden_units, --dropout, ...)."""
    return normalize_params({
        "hidden_units": opts.hidden_unit_list, "dropout": opts.dropout, "optimizer": opts.optimizer,
        "learning_rate": opts.learning_rate, "batch_size": opts.batch_size, "epochs": opts.epochs,
        "class_weights": opts.class_weights, "l2": 0.0}, where="model flags")


def _key(params: Mapping[str, Any]) -> str:
    # Without `family`: it follows from the layers and the task, and leaving it out keeps each set's
    # seed (expand_trials) what it was before the field existed, so old runs reproduce.
    return json.dumps({k: params[k] for k in PARAM_KEYS if k in params and k != "family"}, sort_keys=True)


def parameter_sets(grid: Optional[Mapping[str, Sequence]], base: Mapping[str, Any], search: str = "grid",
                   max_trials: int = 0, seed: int = 42, task: str = "binary") -> list[dict[str, Any]]:
    """The parameter sets to try: the grid's product over `base`, plus the linear model.

    Args:
      grid: key → values (parse_param_grid); None or {} means just `base`.
      base: the values of keys the grid does not set (the model flags).
      search: 'grid' (every combination, the first `max_trials` if > 0) or
        'random' (`max_trials` distinct combinations, 10 by default, seeded).
      max_trials: most sets from the grid (0: all; random: 10).
      seed: the random search's seed.
      task: the dataset's task (the added linear model is fitted exactly for binary and multiclass).

    Returns:
      Distinct sets, each with its `family` (families.resolve), with at least one
      linear model: if the grid has none, the linear baseline of the first
      combination is added last (families.BASELINE.baseline).

    Raises:
      UserError: a combination its family cannot fit (lbfgs with hidden layers or for anomaly,
        a family for another task).
    """
    grid = {k: [normalize_params({k: v})[k] for v in values] for k, values in (grid or {}).items()}
    keys = list(grid)
    combos = [dict(base, **dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))] \
        if keys else [dict(base)]
    if search == "random":
        n = max_trials or 10
        if n < len(combos):
            combos = random.Random(seed).sample(combos, n)
    elif max_trials and max_trials < len(combos):
        combos = combos[:max_trials]
    sets, seen = [], set()
    for p in combos:
        p = families.resolve(p, task)
        if _key(p) not in seen:
            seen.add(_key(p))
            sets.append(p)
    if not any(families.of(p) is families.BASELINE for p in sets):
        sets.append(families.BASELINE.baseline(combos[0], task))
    return sets


def set_id(index: int) -> str:
    return f"s{index:02d}"


def expand_trials(sets: Sequence[Mapping[str, Any]], folds: Iterable[int], seed: int = 42,
                  mode: str = "cv") -> list[dict[str, Any]]:
    """One trial per (parameter set, validation fold): the elements of the trials stage.

    Each trial has a stable id (`s03-f2`), its own seed (model init and
    shuffling: the set's seed, the same for every fold, so folds differ by data
    only) and `mode`: 'cv' (score only) or 'select' (keep the trained model).
    """
    trials = []
    for i, params in enumerate(sets):
        sid = set_id(i)
        trial_seed = int(hashlib.sha256(f"{seed}/{_key(params)}".encode()).hexdigest()[:8], 16) % (2 ** 31)
        for fold in folds:
            trials.append({"trial_id": f"{sid}-f{fold}", "set_id": sid, "set_index": i, "params": dict(params),
                           "fold": int(fold), "seed": trial_seed, "mode": mode})
    return trials


def describe(params: Mapping[str, Any]) -> str:
    """A short human name for a set, its family's: 'mlp 64-32 dropout=0.2 adam lr=0.001', 'linear lbfgs C=1'."""
    return families.of(params).describe(params)


def default_tune_metric(task: str) -> str:
    """Ranking quality for binary (ROC-AUC), rare-positive ranking for anomaly (PR-AUC), accuracy for multiclass."""
    return {"binary": "roc_auc", "anomaly": "pr_auc", "multiclass": "accuracy"}[task]


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _complexity(params: Mapping[str, Any]) -> int:
    return families.of(params).complexity(params)


def leaderboard(results: Iterable[Mapping[str, Any]], metric: str, rule: str = "one_se") -> list[dict[str, Any]]:
    """Mean ± std (sample std over folds) of `metric` per parameter set, best mean first, one set `selected`.

    Ties go to the simpler model (fewer hidden units), then the earlier set.
    A set whose score is None on some fold (e.g. one class missing there)
    is ranked by the folds that have one.

    The selected set (the one refit and exported) depends on `rule`:
      'best'    the highest mean (rank 1);
      'one_se'  the simplest set (fewest hidden units: the linear model first) whose mean is
                within one standard error of the highest mean (Hastie, Tibshirani and Friedman,
                The Elements of Statistical Learning, §7.10). The standard error (each row's
                `margin`) is the best set's std/√k over k folds; with one validation fold (no
                --tune) it is √(se_best² + se²) from the bootstrap standard errors of the two
                scores on that fold (the trials' `score_se`).
      A difference smaller than the noise of the validation estimate does not pick the
      more complex model.

    Args:
      results: trial results ({set_id, set_index, params, fold, score, best_epoch, ...}).
      metric: the name of the score, recorded in every row.
      rule: 'one_se' or 'best'.
    """
    if rule not in SELECTION_RULES:
        raise UserError(f"--selection_rule: {rule!r}: expected one of {', '.join(SELECTION_RULES)}")
    by_set: dict[str, list] = {}
    for r in results:
        by_set.setdefault(r["set_id"], []).append(r)
    rows = []
    for sid, rs in by_set.items():
        rs = sorted(rs, key=lambda r: r["fold"])
        scores = [float(r["score"]) for r in rs if r.get("score") is not None and not math.isnan(r["score"])]
        epochs = sorted(int(r["best_epoch"]) for r in rs)
        if len(scores) >= 2:
            se = _std(scores) / math.sqrt(len(scores))
        else:
            se = float(next((r["score_se"] for r in rs if r.get("score_se") is not None), 0.0))
        rows.append({
            "set_id": sid, "set_index": rs[0]["set_index"], "params": rs[0]["params"],
            "name": describe(rs[0]["params"]), "metric": metric,
            "mean": sum(scores) / len(scores) if scores else float("nan"), "std": _std(scores), "se": se,
            "folds": [r["fold"] for r in rs], "scores": [r.get("score") for r in rs],
            "best_epochs": [int(r["best_epoch"]) for r in rs], "median_best_epoch": epochs[len(epochs) // 2],
            "seconds": round(sum(float(r.get("seconds", 0)) for r in rs), 2),
        })
    # Means equal to 1e-9 are ties (float sums of the same scores differ in the last bits).
    rows.sort(key=lambda r: (-(round(r["mean"], 9) if not math.isnan(r["mean"]) else -math.inf),
                             _complexity(r["params"]), r["set_index"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        r["selected"] = False
    if rows:
        chosen, top = rows[0], rows[0]
        top["margin"] = 0.0
        if rule == "one_se" and not math.isnan(top["mean"]):
            one_fold = all(len(r["folds"]) == 1 for r in rows)
            for r in rows[1:]:
                # k folds: the best set's std/√k (ESL). One fold: the error of the difference of two
                # bootstrap estimates, √(se_best² + se²): a perfect fold score has a bootstrap error of 0,
                # which alone would let any lead, however small, pick the more complex model.
                r["margin"] = math.sqrt(top["se"] ** 2 + r["se"] ** 2) if one_fold else top["se"]
            near = [r for r in rows if not math.isnan(r["mean"]) and r["mean"] >= top["mean"] - r["margin"] - 1e-9]
            chosen = min(near, key=lambda r: (_complexity(r["params"]), r["rank"]))
        chosen["selected"] = True
    return rows


def selected(board: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The leaderboard row that is refit and exported (leaderboard's `selected`; rank 1 for older boards)."""
    return next((r for r in board if r.get("selected")), board[0])
