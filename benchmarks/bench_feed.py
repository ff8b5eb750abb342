"""How Keras is fed: tf_keras' array adapter (fit(x, y, shuffle=True)) vs beam_ml's training_dataset.

    python -m benchmarks.bench_feed                  # 12 small fits each (a bench_tune trial) + 2M rows x 2 epochs
    python -m benchmarks.bench_feed --quick          # tiny: checks the machinery

Small: the retention-trial shape (9,637 rows x 20 features, batch 96, 10 epochs, a 64-32 MLP,
one TensorFlow thread, a trial's callbacks: validation on 2,409 rows each epoch, early stopping,
plateaus), alternating the two feeds; per fit, the time from `on_train_end` to
`fit` returning (the adapter's teardown) is reported separately: a fit "stalls" when that is
over 0.5 s. Big: 2,000,000 rows x 30 features, batch 512, 2 epochs, once each way, so the
per-epoch permutation cost shows.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def _fit(feed: str, x, y, batch_size: int, epochs: int, validation=None) -> tuple[float, float]:
    """(seconds of the whole fit, seconds from on_train_end until fit returned).

    With `validation`, the callbacks of a trial (beam_ml.training.trainer.fit_epochs): the
    per-epoch validation pass, early stopping on val_loss, plateaus, the learning-rate log.
    """
    import tf_keras as keras

    from beam_ml.training.families import build_model
    from beam_ml.training.trainer import training_dataset, trial_callbacks

    class _End(keras.callbacks.Callback):
        at = 0.0

        def on_train_end(self, logs=None):
            self.at = time.perf_counter()

    keras.utils.set_random_seed(1)
    model = build_model({"family": "mlp", "hidden_units": [64, 32], "dropout": 0.0, "optimizer": "adam",
                         "learning_rate": 1e-3}, "binary", x.shape[1], 2)
    end = _End()
    callbacks = trial_callbacks(validation, patience=epochs)[0] + [end]
    start = time.perf_counter()
    if feed == "arrays":
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True, callbacks=callbacks)
    else:
        model.fit(training_dataset(x, y, batch_size, 1), epochs=epochs, verbose=0, callbacks=callbacks)
    done = time.perf_counter()
    return done - start, done - end.at


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=12)
    parser.add_argument("--big_rows", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import numpy as np

    fits, big_rows, rows, epochs = (2, 20_000, 2_000, 2) if args.quick else (args.fits, args.big_rows, 9637, 10)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(size=rows) > 1).astype(np.int64)
    xv = rng.normal(size=(rows // 4, 20)).astype(np.float32)
    yv = (xv[:, 0] + 0.5 * xv[:, 1] ** 2 > 1).astype(np.int64)
    small = {"arrays": [], "dataset": []}
    for _ in range(fits):
        for feed in small:
            small[feed].append(_fit(feed, x, y, 96, epochs, validation=(xv, yv)))
    xb = rng.normal(size=(big_rows, 30)).astype(np.float32)
    yb = (xb[:, 0] > 1).astype(np.int64)
    big = {feed: _fit(feed, xb, yb, 512, 2)[0] for feed in ("arrays", "dataset")}
    results = {"rows": rows, "epochs": epochs, "fits": fits, "big_rows": big_rows}
    for feed, runs in small.items():
        totals = sorted(t for t, _ in runs)
        results[feed] = {"median_fit_s": round(totals[len(totals) // 2], 2),
                         "mean_fit_s": round(sum(totals) / len(totals), 2),
                         "stalls": sum(e > 0.5 for _, e in runs),
                         "teardown_s": [round(e, 2) for _, e in runs], "big_2_epochs_s": round(big[feed], 1)}
    results["small_median_dataset_vs_arrays"] = round(results["dataset"]["median_fit_s"] /
                                                      results["arrays"]["median_fit_s"], 2)
    results["small_mean_dataset_vs_arrays"] = round(results["dataset"]["mean_fit_s"] /
                                                    results["arrays"]["mean_fit_s"], 2)
    results["big_dataset_vs_arrays"] = round(big["dataset"] / big["arrays"], 2)
    print(json.dumps(results, indent=2), flush=True)
    for feed in small:
        r = results[feed]
        print(f"{feed:8s} small fit median {r['median_fit_s']:.2f} s, mean {r['mean_fit_s']:.2f} s, "
              f"stalls {r['stalls']}/{fits}; {big_rows} rows x 2 epochs {r['big_2_epochs_s']:.1f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
