"""Model families: each builds, fits and describes its models; the registry; old spellings of a set."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from beam_ml import tuning
from beam_ml.errors import UserError
from beam_ml.training import families
from beam_ml.training.trainer import predict_outputs

BASE = {"hidden_units": [8], "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.05, "batch_size": 32,
        "epochs": 10, "class_weights": "auto", "l2": 0.0}


def _data(task, n=240, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if task == "multiclass":
        y = (x[:, :3]).argmax(axis=1).astype(np.int64)
    else:
        y = (x[:, 0] + 0.3 * x[:, 1] > 0.9).astype(np.int64)
    return x, y


def _fit(params, task, validation=True):
    x, y = _data(task)
    xv, yv = _data(task, n=80, seed=1)
    counts = list(np.bincount(y, minlength=3 if task == "multiclass" else 2))
    return families.fit_model(params, task, x, y, validation=(xv, yv) if validation else None, class_counts=counts,
                              seed=3), xv, yv


# (family, task, set, Keras model name, output width, name the set describes itself with)
CASES = [
    ("linear", "binary", dict(BASE, hidden_units=[], optimizer="lbfgs"), "binary_linear", 1, "linear lbfgs C=1"),
    ("linear", "binary", dict(BASE, hidden_units=[]), "binary_linear", 1, "linear adam lr=0.05 batch=32"),
    ("linear", "multiclass", dict(BASE, hidden_units=[], optimizer="lbfgs", l2=0.01), "multiclass_linear", 3,
     "linear lbfgs l2=0.01"),
    ("linear", "anomaly", dict(BASE, hidden_units=[]), "linear_autoencoder", 5, "linear adam lr=0.05 batch=32"),
    ("mlp", "binary", BASE, "binary_mlp", 1, "mlp 8 dropout=0.1 adam lr=0.05 batch=32"),
    ("mlp", "multiclass", dict(BASE, class_weights="none"), "multiclass_mlp", 3,
     "mlp 8 dropout=0.1 adam lr=0.05 batch=32 weights=none"),
    ("autoencoder", "anomaly", dict(BASE, hidden_units=[8, 4]), "autoencoder", 5,
     "autoencoder 8-4 dropout=0.1 adam lr=0.05 batch=32"),
]


@pytest.mark.parametrize("name,task,raw,model_name,width,described", CASES)
def test_each_family_builds_fits_and_describes_its_models(name, task, raw, model_name, width, described):
    params = families.resolve(raw, task)  # the old spelling (no `family`) names it
    family = families.get(name)
    assert params["family"] == name and families.of(params) is family
    assert family.describe(params) == tuning.describe(params) == described
    model = families.build_model(params, task, 5, 3)
    assert model.name == model_name and model.output_shape == (None, width)
    fitted, xv, yv = _fit(params, task)
    assert fitted.model.name == model_name
    scores = predict_outputs(fitted.model, xv, task)
    assert np.isfinite(scores).all() and len(scores) == len(xv)
    if family.exact_solver(params):  # one exact fit: no epochs
        assert fitted.solver["name"] == "lbfgs" and fitted.best_epoch == 1 and len(fitted.history["loss"]) == 1
    else:
        assert fitted.solver is None and 1 <= fitted.best_epoch <= len(fitted.history["loss"]) <= params["epochs"]
        assert "val_loss" in fitted.history
    if task == "binary":  # it learned something: better than chance on held-out rows
        assert roc_auc_score(yv, scores) > 0.7


def test_an_exact_fit_without_validation_and_an_epoch_fit_with_a_schedule():
    fitted, _, _ = _fit(families.resolve(dict(BASE, hidden_units=[], optimizer="lbfgs"), "binary"), "binary",
                        validation=False)
    assert "val_loss" not in fitted.history and fitted.solver["converged"]
    x, y = _data("binary")
    fitted = families.fit_model(families.resolve(dict(BASE, epochs=3), "binary"), "binary", x, y, validation=None,
                                class_counts=list(np.bincount(y)), seed=1, lr_schedule=[0.01, 0.005, 0.001])
    assert fitted.history["lr"] == pytest.approx([0.01, 0.005, 0.001])


def test_the_registry_names_every_family_and_their_optimizers():
    assert list(families.FAMILIES) == ["linear", "mlp", "autoencoder"]
    assert families.BASELINE is families.get("linear")
    assert tuning.OPTIMIZERS == families.OPTIMIZERS == ("adam", "sgd", "rmsprop", "adagrad", "lbfgs")
    assert "lbfgs" in families.get("linear").optimizers("binary")
    assert "lbfgs" not in families.get("linear").optimizers("anomaly")
    assert "lbfgs" not in families.get("mlp").optimizers("binary")
    with pytest.raises(UserError, match="family 'tree': expected one of linear, mlp, autoencoder"):
        families.get("tree")
    for family in families.FAMILIES.values():
        assert family.name and family.tasks and set(family.tasks) <= set(families.base.TASKS)


@pytest.mark.parametrize("raw,task,name", [
    ({"hidden_units": []}, "binary", "linear"),
    ({"hidden_units": []}, "anomaly", "linear"),
    ({"hidden_units": [64, 32]}, "binary", "mlp"),
    ({"hidden_units": [64, 32]}, "multiclass", "mlp"),
    ({"hidden_units": [64, 32]}, "anomaly", "autoencoder"),
    ({"hidden_units": [], "optimizer": "lbfgs"}, "binary", "linear"),
    ({"family": "linear", "hidden_units": [64]}, "binary", "linear"),  # the field wins over the layers
])
def test_old_spellings_map_to_a_family_once(raw, task, name):
    assert families.family_name(raw, task) == name
    params = families.resolve(dict(BASE, **raw), task)
    assert params["family"] == name
    assert families.resolve(params, task) == params  # resolving again changes nothing
    if name == "linear":
        assert params["hidden_units"] == [] and params["dropout"] == 0.0


def test_grid_files_with_old_spellings_and_the_family_key(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("hidden_units: ['16', '']\noptimizer: [adam, lbfgs]\n")
    with pytest.raises(UserError, match="optimizer lbfgs .* fits only the linear model"):
        tuning.parameter_sets(tuning.parse_param_grid(str(old)), BASE)  # lbfgs × hidden layers
    old.write_text("hidden_units: ['']\noptimizer: [lbfgs]\nl2: [0, 0.01]\n")
    sets = tuning.parameter_sets(tuning.parse_param_grid(str(old)), BASE)
    assert [(s["family"], tuning.describe(s)) for s in sets] == [("linear", "linear lbfgs C=1"),
                                                                ("linear", "linear lbfgs l2=0.01")]
    grid = tuning.parse_param_grid('{"family": ["linear", "mlp"], "hidden_units": ["32,16"]}')
    sets = tuning.parameter_sets(grid, BASE)
    assert [tuning.describe(s) for s in sets] == ["linear adam lr=0.05 batch=32",
                                                 "mlp 32-16 dropout=0.1 adam lr=0.05 batch=32"]
    with pytest.raises(UserError, match="family mlp fits binary or multiclass tasks, not anomaly"):
        tuning.parameter_sets(grid, BASE, task="anomaly")  # an anomaly network is an autoencoder
    with pytest.raises(UserError, match="--param_grid: family 'tree': expected one of"):
        tuning.parse_param_grid('{"family": ["tree"]}')
    with pytest.raises(UserError, match="family mlp needs hidden layers"):
        tuning.parameter_sets({"family": ["mlp"], "hidden_units": [[]]}, BASE)


def test_seeds_do_not_depend_on_the_family_field():
    """A set's trial seed is what it was before sets named their family: old runs reproduce."""
    sets = tuning.parameter_sets(None, BASE)
    trials = tuning.expand_trials(sets, [0])
    bare = tuning.expand_trials([{k: v for k, v in s.items() if k != "family"} for s in sets], [0])
    assert [t["seed"] for t in trials] == [t["seed"] for t in bare]


def test_the_selection_rule_asks_the_family_how_complex_a_set_is():
    linear = families.resolve(dict(BASE, hidden_units=[]), "binary")
    mlp = families.resolve(dict(BASE, hidden_units=[64, 32]), "binary")
    assert families.of(linear).complexity(linear) == 0 < families.of(mlp).complexity(mlp) == 96


def _spec(numeric: int, categorical: int = 0):
    from beam_ml.spec import ColumnSpec, DatasetSpec

    columns = [ColumnSpec(f"n{i}", "numeric") for i in range(numeric)]
    columns += [ColumnSpec(f"c{i}", "categorical", max_categories=20) for i in range(categorical)]
    columns.append(ColumnSpec("y", "label"))
    return DatasetSpec(columns=columns, task="binary", label="y", label_classes=["0", "1"])


@pytest.mark.parametrize("numeric, categorical, units, epochs", [
    (9, 2, [64, 32], 30),       # retention-like tabular data: the small network, as before
    (30, 0, [64, 32], 30),      # credit-card fraud's 30 columns
    (64, 0, [64, 32], 30),      # digits 8x8: still small
    (100, 0, [64, 32], 50),
    (150, 50, [128, 64], 50),
    (300, 0, [256, 128], 50),
    (784, 0, [512, 256], 50),   # MNIST pixels
    (5000, 0, [512, 256], 50),  # capped
])
def test_the_default_network_follows_the_input_width(numeric, categorical, units, epochs):
    from beam_ml.training.families.mlp import default_network

    spec = _spec(numeric, categorical)
    assert default_network(spec) == (units, epochs)
    assert default_network(spec) == default_network(_spec(numeric, categorical))  # pure: the spec alone decides


def test_auto_flags_resolve_to_the_default_network_and_explicit_flags_win():
    from beam_ml.jobs.train import _size_network
    from beam_ml.options import TrainOptions, parse_pipeline_options

    wide = _spec(784)
    opts = parse_pipeline_options(["--input=x.csv", "--label=y"], TrainOptions).view_as(TrainOptions).validated()
    _size_network(opts, wide)
    base = tuning.base_params(opts)
    assert (base["hidden_units"], base["epochs"]) == ([512, 256], 50)
    # The search still holds the linear model next to it (the one-standard-error rule chooses).
    assert [families.family_name(p) for p in tuning.parameter_sets(None, base, task="binary")] == ["mlp", "linear"]
    opts = parse_pipeline_options(["--input=x.csv", "--label=y", "--hidden_units=16", "--epochs=7"],
                                  TrainOptions).view_as(TrainOptions).validated()
    _size_network(opts, wide)
    assert (tuning.base_params(opts)["hidden_units"], tuning.base_params(opts)["epochs"]) == ([16], 7)
