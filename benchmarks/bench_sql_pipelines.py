"""Pipeline-level cost of --sql: training's preprocessing and stream_predict, each with and without a statement.

    python -m benchmarks.bench_sql_pipelines
    python -m benchmarks.bench_sql_pipelines --rows=200000 --events=20000 --repeats=2 --work_dir=out/bench_sql

Input: `benchmarks.bench_clean.fraud_events` (the bundled fraud data, 200k
rows, plus `userid` (1,200 ids; a 1,000-row users.csv knows 1,000), `User`
(a first name) and 1% NULL `Class`), written as CSV. The typical statement
(drop, filter, IFNULL, MASK_LEFT, one join):

    SELECT V1..V28, IFNULL(Amount, 0) AS Amount, Class, MASK_LEFT(User, 2) AS User, u.CITY
    FROM events c LEFT JOIN users u ON c.userid = u.userid WHERE Class IS NOT NULL

* preprocessing: `pipelines.train --preprocess_only` (DirectRunner, one
  worker, in this process; wall clock of `train.run`, after an untimed
  warm-up run) with the statement (`--drop_columns=User,CITY`, so the model
  columns are V1..V28 + Amount in both runs and the difference is the
  cleaning: events read, the statement, the model layout) against the same
  file without it (`--drop_columns=Time,userid,User`; the 1% NULL labels are
  then dead letters, so `--max_bad_rows_fraction=0.05`). Runs alternate;
  the median of `--repeats` each.
* stream_predict: `--events` JSON events on a Tansu broker (127.0.0.1),
  scored by `benchmarks.bench_stream.run_ours` (its own process, throughput
  = events in / (last - first processing_ts)) by two models trained on the
  same 20k rows with the same features: one with the statement stored (so
  serving applies it), one without. Alternating, median of `--repeats`.

Results: printed and written to <work_dir>/bench_sql_pipelines.json. Goal: <= 10% slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

V = ", ".join(f"V{i}" for i in range(1, 29))
STATEMENT = (f"SELECT {V}, IFNULL(c.Amount, 0) AS Amount, c.Class, MASK_LEFT(c.User, 2) AS User, u.CITY "
             "FROM events c LEFT JOIN users u ON c.userid = u.userid WHERE c.Class IS NOT NULL")
_BEAM = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


def _log(msg: str) -> None:
    print(f"[bench_sql] {msg}", flush=True)


def write_inputs(work_dir: str, rows: int) -> tuple[str, str]:
    from benchmarks.bench_clean import fraud_events, users_table

    os.makedirs(work_dir, exist_ok=True)
    tx, users = os.path.join(work_dir, f"tx-{rows}.csv"), os.path.join(work_dir, "users.csv")
    if not os.path.exists(tx):
        t = fraud_events(work_dir, rows).drop_columns(["__line__"])
        pacsv.write_csv(t, tx + ".tmp", pacsv.WriteOptions(quoting_style="none"))
        os.replace(tx + ".tmp", tx)
    pacsv.write_csv(users_table(), users, pacsv.WriteOptions(quoting_style="none"))
    return tx, users


def _train(argv: Sequence[str]) -> tuple[float, dict]:
    from pipelines import train

    start = time.perf_counter()
    run = train.run(list(argv))
    return time.perf_counter() - start, run.counts


def preprocess_args(tx: str, users: str, out: str, sql: bool) -> list[str]:
    base = [f"--input={tx}", "--label=Class", f"--output_dir={out}", "--preprocess_only", *_BEAM]
    if sql:
        return base + [f"--sql={STATEMENT}", f"--lookup=users={users}", "--drop_columns=User,CITY"]
    return base + ["--drop_columns=Time,userid,User", "--max_bad_rows_fraction=0.05"]


def bench_preprocess(work_dir: str, rows: int, repeats: int) -> dict:
    tx, users = write_inputs(work_dir, rows)
    small, _ = write_inputs(os.path.join(work_dir, "warm"), 5000)
    for sql in (False, True):
        _train(preprocess_args(small, users, os.path.join(work_dir, "warm", "out"), sql))
    times: dict[str, list[float]] = {"no_sql": [], "sql": []}
    counts = {}
    for r in range(repeats):
        for name in ("no_sql", "sql"):
            seconds, c = _train(preprocess_args(tx, users, os.path.join(work_dir, f"pre-{name}"), name == "sql"))
            times[name].append(seconds)
            counts[name] = c
            _log(f"preprocess {name} #{r + 1}: {seconds:.1f} s ({rows / seconds:,.0f} rows/s) counts "
                 f"in={c['rows_in']} good={c['rows_good']} dead={c['rows_dead']} filtered={c.get('rows_filtered')}")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rows": rows, "seconds": times, "median_seconds": med,
            "rows_per_s": {k: round(rows / v, 1) for k, v in med.items()},
            "overhead": round(med["sql"] / med["no_sql"] - 1, 4), "counts": counts}


def _events(tx: str, n: int) -> list[tuple[str, bytes]]:
    t = pacsv.read_csv(tx).slice(0, n)
    out = []
    for i, row in enumerate(t.to_pylist()):
        row["event_id"] = str(i)
        row["produce_ts"] = int(time.time() * 1000)
        out.append((row["event_id"], json.dumps(row).encode()))
    return out


def bench_stream(work_dir: str, events: int, repeats: int, train_rows: int = 20000) -> dict:
    from kafka import KafkaProducer

    from beam_ml.testing import TansuBroker
    from benchmarks import bench_stream as bs

    tx, users = write_inputs(work_dir, max(train_rows, events))
    models = {}
    for name, sql in (("no_sql", False), ("sql", True)):
        out = os.path.join(work_dir, f"model-{name}")
        if not os.path.isdir(os.path.join(out, "model")):
            head = os.path.join(work_dir, f"train-{train_rows}.csv")
            if not os.path.exists(head):
                pacsv.write_csv(pacsv.read_csv(tx).slice(0, train_rows), head,
                                pacsv.WriteOptions(quoting_style="none"))
            args = [a for a in preprocess_args(head, users, out, sql) if a != "--preprocess_only"]
            _train(args + ["--epochs=1", "--verbose=0"])
        models[name] = os.path.join(out, "model")
    args = types.SimpleNamespace(max_batch_size=256, checkpoint_interval=None, poll_timeout=None,
                                 max_run_seconds=600.0)
    results: dict[str, list[dict]] = {"no_sql": [], "sql": []}
    with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = bs._new_topic(bootstrap, "sqlbench-in")
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        for key, value in _events(tx, events):
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(60)
        producer.close()
        log_dir = os.path.join(work_dir, "logs")
        os.makedirs(log_dir, exist_ok=True)
        for r in range(repeats):
            for name in ("no_sql", "sql"):
                m = bs.run_ours(bootstrap, models[name], topic, events, args, log_dir, name=f"{name}-{r}")
                tp = m["throughput"]
                c = m["counts"]
                rate = events / tp["seconds"] if tp["seconds"] else None
                results[name].append({"events_per_s": rate, "predictions": c.get("predictions"),
                                      "rows_filtered": c.get("rows_filtered"), "dead": c.get("dead_letters"),
                                      "cpu_ms_per_1000": tp.get("cpu_ms_per_1000"),
                                      "window_s": tp["seconds"]})
                _log(f"stream {name} #{r + 1}: {rate or 0:,.0f} events/s, {c}")
    med = {k: statistics.median(x["events_per_s"] for x in v) for k, v in results.items()}
    return {"events": events, "runs": results, "median_events_per_s": med,
            "overhead": round(med["no_sql"] / med["sql"] - 1, 4)}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_sql_pipelines", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=200000)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work_dir", default="out/bench_sql")
    p.add_argument("--only", default="preprocess,stream")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = {"statement": STATEMENT, "load_avg_start": os.getloadavg()}
    only = a.only.split(",")
    if "preprocess" in only:
        out["preprocess"] = bench_preprocess(a.work_dir, a.rows, a.repeats)
    if "stream" in only:
        out["stream"] = bench_stream(a.work_dir, a.events, a.repeats)
    out["load_avg_end"] = os.getloadavg()
    path = os.path.join(a.work_dir, "bench_sql_pipelines.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    for k in ("preprocess", "stream"):
        if k in out:
            _log(f"{k}: overhead {out[k]['overhead']:+.1%} "
                 f"({out[k].get('rows_per_s') or out[k].get('median_events_per_s')})")
    _log(f"wrote {path}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
