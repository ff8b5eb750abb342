"""The monitor's cost and speed: stream_predict with --monitor vs without, and the detection delay.

    python -m benchmarks.bench_monitor                 # 60,000 events, windows of 1000
    python -m benchmarks.bench_monitor --quick         # 4,000 events, windows of 500 (a smoke run)

One run starts its own Tansu broker on 127.0.0.1, trains a retention model once into
``<work_dir>/retention`` (unless ``--model_dir``; the model's training statistics are what the
monitor compares with), and writes ``--events`` events drawn from the training rows (JSON with
``event_id`` and ``produce_ts``) to one input topic. Then, each scorer in its own Python process
(`benchmarks.bench_stream.run_ours`: the same harness, CPU sampling and throughput window):

* (plain) ``pipelines.stream_predict`` on the topic;
* (monitor) the same with ``--monitor --monitor_window=<window> --monitor_topic=<t>``, in ABBA order
  with (plain) ``--repeats`` times; the ratio is monitor / plain events/s of the median runs
  (goal, issue 22: >= 0.9). CPU ms per 1000 events (the scorer process tree, from /proc) is
  reported beside it: events/s on a shared machine depends on what else runs, CPU per event
  much less, and plain/monitor CPU is the events/s ratio a CPU-bound run would see.

Detection delay: a second topic holds ``--shift_at`` in-distribution events, then events whose
``average_montly_hours`` is x3 and whose ``sales`` is a new category 60% of the time;
stream_predict --monitor scores it and the delay is the number of events from the first shifted
event to the end of the window whose record carries the first alert (a count window reports when
it closes), for each shifted feature. ``--shift_at`` is off a window boundary on purpose: the
first window holding the shift is partly old data.

Prints a table and writes ``<work_dir>/bench_monitor.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Optional, Sequence

import numpy as np

from benchmarks import bench_stream

__all__ = ["run", "main"]

NUMERIC, CATEGORICAL = "average_montly_hours", "sales"


def _log(msg: str) -> None:
    print(f"[bench_monitor] {msg}", flush=True)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_monitor", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=60000, help="events of each throughput run")
    p.add_argument("--window", type=int, default=1000, help="--monitor_window (events)")
    p.add_argument("--shift_at", type=int, default=10500, help="in-distribution events before the shift")
    p.add_argument("--shift_events", type=int, default=3000, help="shifted events after them")
    p.add_argument("--repeats", type=int, default=1, help="throughput runs per scorer, in ABBA order (median; an even count balances the order)")
    p.add_argument("--quick", action="store_true", help="4,000 events, windows of 500: checks the harness")
    p.add_argument("--work_dir", default="out/bench_monitor")
    p.add_argument("--model_dir", default=None, help="a retention model (with training statistics) to serve")
    p.add_argument("--max_batch_size", type=int, default=256)
    p.add_argument("--max_run_seconds", type=float, default=600.0)
    args = p.parse_args(list(argv))
    if args.quick:
        args.events, args.window, args.shift_at, args.shift_events = 4000, 500, 1250, 1000
    # What bench_stream.run_ours reads besides these.
    args.checkpoint_interval = args.poll_timeout = None
    return args


def ensure_retention_model(work_dir: str, model_dir: Optional[str]) -> tuple[str, str]:
    """(model root, the training CSV): `model_dir`, else a retention model trained once under work_dir."""
    from beam_ml import datasets
    from beam_ml.model_store import list_versions

    data_dir = os.path.join(work_dir, "data")
    csv_path = datasets.materialize("retention", data_dir)
    if model_dir:
        return model_dir, csv_path
    out = os.path.join(work_dir, "retention")
    if not list_versions(os.path.join(out, "model")):
        from beam_ml.jobs.train import train  # deferred: TensorFlow, only when there is no model yet
        from beam_ml.options import KafkaOptions, TrainOptions, parse_pipeline_options

        _log("training the retention model (once)")
        train(parse_pipeline_options(["--dataset=retention", f"--data_dir={data_dir}", f"--output_dir={out}",
                                      "--epochs=3", "--runner=DirectRunner", "--verbose=0"],
                                     TrainOptions, KafkaOptions), log=lambda m: None)
    return os.path.join(out, "model"), csv_path


def _events(csv_path: str, n: int, seed: int, shift_from: Optional[int] = None) -> list[dict]:
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    out = []
    for i, j in enumerate(rng.integers(0, len(rows), n)):
        e = {k: (float(v) if k not in (CATEGORICAL, "salary") else v) for k, v in rows[j].items() if k != "left"}
        if shift_from is not None and i >= shift_from:
            e[NUMERIC] *= 3
            if rng.random() < 0.6:
                e[CATEGORICAL] = "brand-new-category"
        e["event_id"] = f"e{i}"
        out.append(e)
    return out


def _produce(bootstrap: str, topic: str, events: list) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    for e in events:
        producer.send(topic, key=e["event_id"].encode(), value=json.dumps(dict(e, produce_ts=int(time.time() * 1000))).encode())
    producer.flush(60)
    producer.close()


def _topic(broker, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name)
    return name


def detection_delay(records: list, shift_at: int, window: int) -> dict:
    """Events from the first shifted event to the end of the first window alerting on each shifted feature."""
    out = {}
    for feature in (NUMERIC, CATEGORICAL):
        ids = sorted(r["window"]["id"] for r in records if r["type"] == "alert" and r["feature"] == feature)
        out[feature] = None if not ids else (ids[0] + 1) * window - shift_at
    before = [r for r in records if r["type"] == "alert" and (r["window"]["id"] + 1) * window <= shift_at]
    out["alerts_before_shift"] = len(before)
    return out


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark; returns (and writes) the JSON report."""
    from beam_ml.testing import TansuBroker

    args = _parse_args(argv or [])
    os.makedirs(args.work_dir, exist_ok=True)
    log_dir = os.path.join(args.work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    model_dir, csv_path = ensure_retention_model(args.work_dir, args.model_dir)
    report: dict = {"events": args.events, "window": args.window, "model_dir": model_dir, "runs": {}}
    with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = _topic(broker, "in")
        _produce(bootstrap, topic, _events(csv_path, args.events, seed=1))
        runs = {"plain": [], "monitor": []}
        for i in range(args.repeats):
            # ABBA order (plain, monitor, monitor, plain, ...): the broker slows as the run goes on (every run adds
            # topics), so a fixed order would always give the monitor the later, slower slot.
            for name in (("plain", "monitor") if i % 2 == 0 else ("monitor", "plain")):
                extra = [] if name == "plain" else [
                    "--monitor", f"--monitor_window={args.window}",
                    f"--monitor_topic={_topic(broker, 'mon')}"]
                r = bench_stream.run_ours(bootstrap, model_dir, topic, args.events, args, log_dir,
                                          name=f"{name}{i}", extra=extra)
                tp = r["throughput"]
                _log(f"{name} run {i}: {tp['events_per_s']} events/s, {tp['cpu_ms_per_1000']} CPU ms per 1000")
                runs[name].append({"events": tp["events"], "events_per_s": tp["events_per_s"],
                                   "cpu_ms_per_1000": tp["cpu_ms_per_1000"], "counts": r["counts"]})
        report["runs"] = runs
        med = {k: statistics.median(x["events_per_s"] for x in v) for k, v in runs.items()}
        report["ratio"] = round(med["monitor"] / med["plain"], 3) if med["plain"] else None
        cpu = {k: statistics.median(x["cpu_ms_per_1000"] for x in v if x["cpu_ms_per_1000"]) for k, v in runs.items()}
        # CPU per event does not depend on what else the shared machine runs: the steadier of the two.
        report["cpu_ms_per_1000"] = cpu
        report["cpu_ratio"] = round(cpu["plain"] / cpu["monitor"], 3) if cpu["monitor"] else None
        # Detection delay.
        shifted = _topic(broker, "shift")
        n = args.shift_at + args.shift_events
        _produce(bootstrap, shifted, _events(csv_path, n, seed=2, shift_from=args.shift_at))
        mon = _topic(broker, "mon")
        r = bench_stream.run_ours(bootstrap, model_dir, shifted, n, args, log_dir, name="shift",
                                  extra=["--monitor", f"--monitor_window={args.window}", f"--monitor_topic={mon}"])
        records = bench_stream.read_topic(bootstrap, mon, n // args.window, timeout=60)
        report["detection"] = dict(detection_delay(records, args.shift_at, args.window), shift_at=args.shift_at,
                                   windows=sum(1 for x in records if x["type"] == "monitoring"),
                                   predictions=r["counts"].get("predictions"))
    path = os.path.join(args.work_dir, "bench_monitor.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    d = report["detection"]
    print(f"stream_predict events/s: plain {med['plain']:,.0f}, --monitor {med['monitor']:,.0f} "
          f"(ratio {report['ratio']}, goal >= 0.9; {args.events} events, window {args.window}, "
          f"{args.repeats} run(s) each)")
    print(f"CPU ms per 1000 events: plain {cpu['plain']:.1f}, --monitor {cpu['monitor']:.1f} "
          f"(plain/monitor {report['cpu_ratio']}: the events/s ratio a CPU-bound run would see)")
    print(f"detection delay (events from the shift to the end of the alerting window): {NUMERIC} "
          f"{d[NUMERIC]}, {CATEGORICAL} {d[CATEGORICAL]}; alerts before the shift: {d['alerts_before_shift']}")
    print(f"report: {path}")
    return report


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
