"""Windowed features (--features_sql): what they cost live and in training, each against the same job without them.

    python -m benchmarks.bench_window            # 50k events over 10k cards; 2M training rows
    python -m benchmarks.bench_window --quick    # a shape check: 4k events, 40k rows

One run, in one process, on 127.0.0.1 (its own in-memory Tansu broker):

* live: two models trained on the same generated card stream
  (`beam_ml.features.cards`), one with the 3-aggregate hopping statement
  (COUNT/SUM/MAX over 10 minutes, advance 1 minute, keyed by card), one
  without. The same --events events over --keys distinct cards are produced to
  a 1-partition topic and scored by `pipelines.stream_predict` (DirectRunner,
  --max_records as the stop condition) with each model; events/s =
  predictions / (last - first processing_ts). Goal (issue 26): with >= 0.8x without.
* training: `pipelines.train --preprocess_only` (read, split, tf.Transform,
  TFRecords) on --rows rows, with the statement (the point-in-time computation:
  each batch split per key into compact chunks, group per key, run each key's
  events in line order, features joined back to the Arrow batches) and without;
  rows/s as the job reports it (rows / pipeline seconds). The load average
  before and after each run is printed with it: the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from typing import Optional, Sequence

from beam_ml.features.cards import CARD_FEATURES_SQL, card_events, write_card_csv
from beam_ml.testing import TansuBroker, read_topic
from benchmarks.bench_stream import _new_topic
from pipelines import produce, stream_predict, train

__all__ = ["main"]


def _log(msg: str) -> None:
    print(f"[bench_window] {msg}", flush=True)


def _train(csv_path: str, out: str, features: bool, *extra: str):
    argv = [f"--input={csv_path}", "--label=Class", f"--output_dir={out}", "--epochs=1", "--runner=DirectRunner",
            "--verbose=0", "--drop_columns=card_id,ts", *extra]
    if features:
        argv += [f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=ts"]
    return train.run(argv)


def _stream_rate(bootstrap: str, model_dir: str, topic: str, n: int, max_batch_size: int) -> dict:
    # 1-partition topics made up front: an auto-created topic may have several partitions, and
    # events keyed by event id would then spread one card over partitions (read out of order).
    out = _new_topic(bootstrap, f"preds-{os.path.basename(os.path.dirname(model_dir))}")
    dlq = _new_topic(bootstrap, "dlq")
    started = time.perf_counter()
    run = stream_predict.run([f"--model_dir={model_dir}", f"--input_topic={topic}", f"--output_topic={out}",
                              f"--dead_letter_topic={dlq}", f"--bootstrap_servers={bootstrap}",
                              "--runner=DirectRunner", "--streaming", f"--max_records={n}", "--max_read_time=900",
                              f"--group_id={out}", f"--max_batch_size={max_batch_size}"])
    wall = time.perf_counter() - started
    preds = [json.loads(r.value) for r in read_topic(bootstrap, out, n, timeout=120)]
    ts = [p["processing_ts"] for p in preds]
    span = (max(ts) - min(ts)) / 1000.0 if ts else 0.0
    return {"predictions": len(preds), "events_per_second": round(len(preds) / span, 1) if span else None,
            "wall_seconds": round(wall, 1), "late_events": run.counts.get("late_events", 0)}


def bench_live(work: str, events: int, keys: int, train_rows: int, max_batch_size: int) -> dict:
    train_csv = write_card_csv(os.path.join(work, "train.csv"), card_events(train_rows, cards=keys, seed=1))
    models = {}
    for name, features in (("with", True), ("without", False)):
        _train(train_csv, os.path.join(work, f"model_{name}"), features)
        models[name] = os.path.join(work, f"model_{name}", "model")
    stream_csv = write_card_csv(os.path.join(work, "stream.csv"), card_events(events, cards=keys, seed=2))
    result = {"events": events, "distinct_keys": keys}
    with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = _new_topic(bootstrap, "cards")
        produce.run([f"--input={stream_csv}", f"--topic={topic}", f"--bootstrap_servers={bootstrap}"])
        for name in ("without", "with"):
            result[name] = _stream_rate(bootstrap, models[name], topic, events, max_batch_size)
            _log(f"stream_predict {name} features: {result[name]}")
    w, wo = result["with"]["events_per_second"], result["without"]["events_per_second"]
    result["ratio_with_over_without"] = round(w / wo, 3) if w and wo else None
    return result


def bench_training(work: str, rows: int, keys: int) -> dict:
    csv_path = write_card_csv(os.path.join(work, "big.csv"), card_events(rows, cards=keys, seed=3))
    result = {"rows": rows, "distinct_keys": keys}
    for name, features in (("without", False), ("with", True)):
        load_before = os.getloadavg()[0]
        run = _train(csv_path, os.path.join(work, f"pre_{name}"), features, "--preprocess_only")
        c = run.counts or {}
        result[name] = {"rows_per_second": c.get("rows_per_second"), "pipeline_seconds": c.get("pipeline_seconds"),
                        "rows_good": c.get("rows_good"),
                        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        _log(f"train --preprocess_only {name} features: {result[name]}")
    w, wo = result["with"]["rows_per_second"], result["without"]["rows_per_second"]
    result["ratio_with_over_without"] = round(w / wo, 3) if w and wo else None
    return result


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_window", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the machine")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--train_rows", type=int, default=20_000, help="rows the two served models are trained on")
    p.add_argument("--rows", type=int, default=2_000_000, help="rows of the training-side measurement")
    p.add_argument("--max_batch_size", type=int, default=256)
    p.add_argument("--only", default="live,training", help="live, training or both")
    p.add_argument("--work_dir", default="out/bench_window")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse_args(argv)
    if args.quick:
        args.events, args.keys, args.train_rows, args.rows = 4000, 1000, 3000, 40_000
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "quick": args.quick}
    only = set(args.only.split(","))
    if "live" in only:
        result["live"] = bench_live(args.work_dir, args.events, args.keys, args.train_rows, args.max_batch_size)
    if "training" in only:
        result["training"] = bench_training(args.work_dir, args.rows, args.keys)
    print(json.dumps(result, indent=2), flush=True)
    with open(os.path.join(args.work_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
