"""fit_model's validation: the fast per-epoch pass logs what Keras' fit(validation_data=...) logs."""
import numpy as np
import pytest
import tf_keras as keras

from beam_ml.training import families, trainer

PARAMS = {"family": "mlp", "hidden_units": [16, 8], "dropout": 0.2, "optimizer": "adam", "learning_rate": 3e-3, "batch_size": 64,
          "epochs": 6, "class_weights": "auto", "l2": 1e-3}


def _data(seed, n, d, task):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    z = x @ rng.normal(size=(d, 3))
    y = (z[:, 0] > 0.8).astype(np.int64) if task == "binary" else z.argmax(axis=1).astype(np.int64)
    return x, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "anomaly"])
def test_validation_logs_equal_keras_evaluate(task):
    x, y = _data(0, 800, 6, task)
    xv, yv = _data(1, 300, 6, task)
    counts = list(np.bincount(y, minlength=3 if task == "multiclass" else 2))
    params = families.resolve(dict(PARAMS, family=None), task)  # mlp, or an autoencoder for anomaly
    ours = families.fit_model(params, task, x, y, validation=(xv, yv), class_counts=counts, seed=5, patience=100)
    # The same fit through Keras' own validation loop (fit_model's steps, without the fast callback).
    keras.utils.set_random_seed(5)
    if task == "anomaly":
        x, xv = x[y == 0], xv[yv == 0]
        target, validation = x, (xv, xv)
    else:
        target, validation = y, (xv, yv)
    model = families.build_model(params, task, 6, max(2, len(counts)))
    weights = None if task == "anomaly" else trainer.class_weights_from_counts(counts, "auto")
    ref = model.fit(trainer.training_dataset(x, target, 64, 5), epochs=6, validation_data=validation,
                    class_weight=weights, callbacks=[trainer._LearningRateLog()], verbose=0).history
    val_keys = sorted(k for k in ref if k.startswith("val_"))
    assert val_keys and sorted(k for k in ours.history if k.startswith("val_")) == val_keys
    for key in val_keys:
        np.testing.assert_allclose(ours.history[key], ref[key], rtol=2e-4, atol=2e-5, err_msg=key)
    np.testing.assert_allclose(ours.history["loss"], ref["loss"], rtol=1e-5)
    assert ours.best_epoch == int(np.argmin(ref["val_loss"])) + 1


def test_early_stopping_and_plateaus_see_the_validation_loss():
    x, y = _data(2, 600, 6, "binary")
    xv, yv = _data(3, 200, 6, "binary")
    noise = np.random.default_rng(4).integers(0, 2, len(yv))  # unlearnable labels: val_loss rises soon
    fitted = families.fit_model(dict(PARAMS, epochs=60, learning_rate=0.03), "binary", x, y,
                               validation=(xv, noise), class_counts=list(np.bincount(y)), seed=1, patience=3)
    epochs = len(fitted.history["loss"])
    assert epochs < 60 and fitted.best_epoch == int(np.argmin(fitted.history["val_loss"])) + 1
    assert min(fitted.history["lr"]) < 0.03  # ReduceLROnPlateau halved it


def test_training_dataset_is_a_fresh_seeded_permutation_each_epoch():
    x = np.arange(250, dtype=np.float32).reshape(125, 2)
    y = np.arange(125, dtype=np.int64)
    ds = trainer.training_dataset(x, y, 32, seed=3)
    epochs = []
    for _ in range(3):  # Model.fit iterates a finite dataset once per epoch
        batches = [(bx.numpy(), by.numpy()) for bx, by in ds]
        assert [len(by) for _, by in batches] == [32, 32, 32, 29]
        order = np.concatenate([by for _, by in batches])
        assert sorted(order) == list(range(125))  # every row once
        np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]), x[order])  # rows stay whole
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = np.concatenate([by.numpy() for _, by in trainer.training_dataset(x, y, 32, seed=3)])
    np.testing.assert_array_equal(again, epochs[0])  # seeded: a new pipeline repeats the first epoch


@pytest.mark.slow
def test_bench_feed_quick_times_both_feeds():
    from benchmarks import bench_feed

    r = bench_feed.main(["--quick"])
    for feed in ("arrays", "dataset"):
        assert r[feed]["median_fit_s"] > 0 and r[feed]["big_2_epochs_s"] > 0
        assert len(r[feed]["teardown_s"]) == r["fits"] == 2 and 0 <= r[feed]["stalls"] <= 2
