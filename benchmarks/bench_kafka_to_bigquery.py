"""Kafka -> BigQuery ingestion throughput: pipelines.kafka_to_bigquery against a hand-written loop.

    python -m benchmarks.bench_kafka_to_bigquery
    python -m benchmarks.bench_kafka_to_bigquery --events=20000 --work_dir=out/bench_k2bq --order=ours,loop

One run starts its own Tansu broker and BigQuery emulator on 127.0.0.1 (in
memory; the emulator is ``make bqemulator``'s), produces ``--events`` fraud
events (``beam_ml.producer``: JSON with ``event_id`` and ``produce_ts``, the
Kafka key is the event id) to one topic (``--partitions``), creates two empty
tables with the same schema in one dataset, and ingests the topic into each,
one method after the other, each in its own Python process:

* (loop) a hand-written loop: a kafka-python consumer (partitions assigned,
  from the earliest offset), ``poll(max_records=500)``, ``json.loads`` per
  message, one google-cloud-bigquery ``insert_rows_json`` per poll (insert ids
  ``topic/partition/offset``), then the consumer group's offsets committed
  (after the insert: the same at-least-once guarantee as ours).
* (ours) ``python -m pipelines.kafka_to_bigquery`` on the DirectRunner,
  streaming, with ``--max_records`` (a total over the partitions) as its stop condition
  (``--start=earliest``, a fresh group, columns inferred from the topic).

What is measured: events/s = rows written / (last insert request finished -
first insert request started), wall-clock, as each method reports it (ours
through its WRITE insert_started_ms / insert_finished_ms distributions). The
window starts at the first insert, so process start-up (Python, Beam's
pipeline construction, the schema sample) is left out, and is reported
separately (process launch -> first insert). The emulator is warmed up first,
and each method runs ``--rounds`` times (2), the order alternating, into a
fresh table each time (whatever runs second meets a warmer emulator); the
reported rate is the mean over rounds.

Both outputs are checked before they count: every event id is in its table
(at least once; duplicates are reported), and nothing went to ours'
dead-letter table. A failed check marks the method FAILED and the process exits 1.

The machine's 2 cores are shared (the emulator itself, DuckDB in a Python
server, is the slowest part and competes for them), so absolute numbers move
between runs; the ratio measured in one run is the robust output. The JSON
report (``<work_dir>/bench_kafka_to_bigquery.json``) records the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from typing import Any, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "bench"

__all__ = ["run", "main", "loop_ingest", "check_table"]


def _log(msg: str) -> None:
    print(f"[bench_kafka_to_bigquery] {msg}", flush=True)


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    return env


# --------------------------------------------------------------------- the loop
def loop_ingest(config: dict) -> dict:
    """The hand-written baseline: consume, parse, insert 500 at a time, commit; runs in its own process.

    Args:
      config: {bootstrap, topic, endpoint, table ("project.dataset.table"), events (stop after this many
        rows inserted), batch (500), group_id, deadline (absolute time.time())}.

    Returns:
      {launched, ready, first_insert_start, last_insert_end, rows, rejected, requests} (seconds, counts).
    """
    from kafka import KafkaConsumer, TopicPartition

    from beam_ml.io.bigquery import endpoint_client

    launched = time.time()
    client = endpoint_client(config["endpoint"], PROJECT)
    consumer = KafkaConsumer(bootstrap_servers=config["bootstrap"], group_id=config["group_id"],
                             enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    partitions = sorted(consumer.partitions_for_topic(config["topic"]) or [])
    tps = [TopicPartition(config["topic"], p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ready = time.time()
    rows_done = rejected = requests = 0
    first: Optional[float] = None
    last = None
    batch = int(config.get("batch", 500))
    try:
        while rows_done + rejected < config["events"] and time.time() < config["deadline"]:
            polled = consumer.poll(timeout_ms=200, max_records=batch)
            messages = [m for msgs in polled.values() for m in msgs]
            if not messages:
                continue
            rows = [json.loads(m.value) for m in messages]
            ids = [f"{m.topic}/{m.partition}/{m.offset}" for m in messages]
            start = time.time()
            errors = client.insert_rows_json(config["table"], rows, row_ids=ids)
            last = time.time()
            first = first if first is not None else start
            requests += 1
            rejected += len(errors)
            rows_done += len(rows) - len(errors)
            consumer.commit()  # after the insert: at least once
    finally:
        consumer.close(autocommit=False)
        client.close()
    return {"launched": launched, "ready": ready, "first_insert_start": first, "last_insert_end": last,
            "rows": rows_done, "rejected": rejected, "requests": requests}


def _loop_main(config_json: str) -> None:
    config = json.loads(config_json)
    with open(config["result_path"], "w") as f:
        json.dump(loop_ingest(config), f)


def _ours_main(config_json: str) -> None:
    """Subprocess entry: pipelines.kafka_to_bigquery.run, and its write-window distributions, to result_path."""
    config = json.loads(config_json)
    launched = time.time()
    from apache_beam.metrics.metric import MetricsFilter

    from beam_ml import metrics
    from pipelines import kafka_to_bigquery

    result = kafka_to_bigquery.run(config["argv"])
    found = {}
    for d in result.pipeline_result.metrics().query(MetricsFilter().with_namespace(metrics.WRITE))["distributions"]:
        r = d.committed or d.attempted
        if r is not None and r.count:
            found[d.key.metric.name] = {"count": r.count, "min": r.min, "max": r.max, "sum": r.sum}
    with open(config["result_path"], "w") as f:
        json.dump({"launched": launched, "counts": result.counts, "distributions": found,
                   "first_insert_start": found["insert_started_ms"]["min"] / 1000.0,
                   "last_insert_end": found["insert_finished_ms"]["max"] / 1000.0,
                   "requests": found["insert_ms"]["count"], "rows": result.counts["rows_written"]}, f)


def _spawn(entry: str, config: dict, log_path: str, timeout: float) -> dict:
    code = f"import sys; from benchmarks.bench_kafka_to_bigquery import {entry}; {entry}(sys.argv[1])"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)], cwd=REPO, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    if proc.returncode != 0:
        with open(log_path) as f:
            raise RuntimeError(f"{entry} exited with {proc.returncode}; its log ends:\n{f.read()[-3000:]}")
    with open(config["result_path"]) as f:
        return json.load(f)


# ----------------------------------------------------------------------- checks
def check_table(client, table_id: str, expected_ids: Sequence[str]) -> tuple[list[str], int]:
    """Problems with an ingested table (empty: every expected id is there), and its duplicate count."""
    ids = [r["event_id"] for r in client.list_rows(table_id, selected_fields=[_field("event_id")])]
    seen, expected = set(ids), set(expected_ids)
    problems = []
    missing = expected - seen
    if missing:
        problems.append(f"{len(missing)} events missing (e.g. {sorted(missing)[:3]})")
    extra = seen - expected
    if extra:
        problems.append(f"{len(extra)} unexpected ids (e.g. {sorted(extra)[:3]})")
    return problems, len(ids) - len(seen)


def _field(name: str):
    from google.cloud import bigquery

    return bigquery.SchemaField(name, "STRING")


# -------------------------------------------------------------------------- run
def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_kafka_to_bigquery", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20000, help="fraud events in the topic")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of the topic")
    ap.add_argument("--work_dir", default="out/bench_kafka_to_bigquery", help="data, logs and the JSON report")
    ap.add_argument("--order", default="loop,ours", help="methods, in the order they run")
    ap.add_argument("--batch", type=int, default=500, help="rows per insert request (both methods)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each method (the order alternates per round)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a method may take")
    return ap.parse_args(list(argv))


def _warm_up(client, schema, sample: Sequence[dict]) -> None:
    """A few inserts into a scratch table, so the first measured method does not pay the emulator's warm-up."""
    from google.cloud import bigquery

    table_id = f"{PROJECT}.bench.warm_up"
    client.create_table(bigquery.Table(table_id, schema=schema))
    for _ in range(4):
        client.insert_rows_json(table_id, list(sample[:500]))


def _run_method(method: str, args, bootstrap: str, topic: str, endpoint: str, table_id: str, total: int,
                client, expected: Sequence[str], round_no: int) -> dict:
    """Runs one method over the whole topic into `table_id`, checks the table, returns its measurement."""
    log_path = os.path.join(args.work_dir, f"{method}_{round_no}.log")
    config: dict[str, Any] = {"result_path": os.path.join(args.work_dir, f"{method}_{round_no}.json")}
    _log(f"{method} (round {round_no + 1}): ingesting {args.events} events (log: {log_path})")
    if method == "loop":
        config.update(bootstrap=bootstrap, topic=topic, endpoint=endpoint, table=table_id, events=args.events,
                      batch=args.batch, group_id=f"loop-{uuid.uuid4().hex[:8]}", deadline=time.time() + args.timeout)
        result = _spawn("_loop_main", config, log_path, args.timeout + 60)
    else:
        config["argv"] = [
            f"--bootstrap_servers={bootstrap}", f"--input_topic={topic}",
            f"--output_table={table_id.replace('.', ':', 1)}", f"--bigquery_endpoint={endpoint}",
            "--create_disposition=CREATE_NEVER", f"--group_id=ours-{uuid.uuid4().hex[:8]}", "--start=earliest",
            f"--max_records={total}", f"--max_read_time={args.timeout}",
            f"--insert_batch_size={args.batch}", "--runner=DirectRunner"]
        result = _spawn("_ours_main", config, log_path, args.timeout + 60)
    problems, duplicates = check_table(client, table_id, expected)
    if method == "ours" and result["counts"].get("dead_letters"):
        problems.append(f"{result['counts']['dead_letters']} dead letters")
    window = (result["last_insert_end"] or 0) - (result["first_insert_start"] or 0)
    rate = result["rows"] / window if window > 0 else None
    measured = {"rows": result["rows"], "requests": result["requests"], "duplicates": duplicates,
                "write_seconds": round(window, 3), "events_per_s": round(rate, 1) if rate else None,
                "startup_seconds": round(result["first_insert_start"] - result["launched"], 2)
                if result["first_insert_start"] else None, "problems": problems}
    _log(f"{method} (round {round_no + 1}): {measured}")
    return measured


def _produce(bootstrap: str, topic: str, csv_path: str, n: int) -> list[str]:
    from beam_ml.io.kafka.config import KafkaClientConfig
    from beam_ml.producer import csv_events, open_producer, send_events

    events = list(csv_events(csv_path))[:n]
    producer = open_producer(KafkaClientConfig(bootstrap_servers=bootstrap))
    try:
        send_events(producer, topic, iter(events))
    finally:
        producer.close()
    return [event_id for event_id, _ in events]


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark; returns (and writes) the report. Raises SystemExit(1) if a check failed."""
    args = _parse_args(argv or [])
    methods = [m.strip() for m in args.order.split(",") if m.strip()]
    if not set(methods) <= {"loop", "ours"} or not methods:
        raise SystemExit(f"--order: expected loop and/or ours, got {args.order!r}")
    from google.cloud import bigquery

    from beam_ml import datasets
    from beam_ml.ingest import bigquery_schema, infer_schema
    from beam_ml.io.bigquery import schema_fields
    from beam_ml.testing import TansuBroker, create_topic
    from beam_ml.testing.bigquery import BigQueryEmulator

    os.makedirs(args.work_dir, exist_ok=True)
    csv_path = datasets.materialize("fraud", os.path.join(args.work_dir, "data"), rows=args.events)
    report: dict[str, Any] = {"events": args.events, "partitions": args.partitions, "batch": args.batch,
                              "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(),
                                          "python": platform.python_version()}, "methods": {}}
    with TansuBroker() as broker, BigQueryEmulator(project=PROJECT) as emulator:
        bootstrap = broker.bootstrap_servers
        topic = f"tx-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, args.partitions)
        start = time.time()
        expected = _produce(bootstrap, topic, csv_path, args.events)
        _log(f"produced {len(expected)} events to {topic} in {time.time() - start:.1f} s")
        client = emulator.client()
        client.create_dataset(f"{PROJECT}.bench")
        # Every table gets the columns ours infers; neither method creates its table.
        from beam_ml.io.kafka.topic_batches import sample_topic

        sample = sample_topic({"bootstrap_servers": bootstrap}, topic, 1000)
        schema = [bigquery.SchemaField.from_api_repr(f)
                  for f in schema_fields(bigquery_schema(infer_schema(sample).schema), canonical=False)]
        _warm_up(client, schema, sample)
        runs: dict[str, list] = {m: [] for m in methods}
        for round_no in range(args.rounds):
            # Alternate the order: whatever runs second meets a warmer emulator.
            for method in (methods if round_no % 2 == 0 else methods[::-1]):
                table_id = f"{PROJECT}.bench.{method}_{round_no}"
                client.create_table(bigquery.Table(table_id, schema=schema))
                runs[method].append(_run_method(method, args, bootstrap, topic, emulator.endpoint, table_id,
                                                args.events, client, expected, round_no))
        client.close()
    for method, results in runs.items():
        rates = [r["events_per_s"] for r in results if r["events_per_s"]]
        report["methods"][method] = {
            "rounds": results, "events_per_s": round(sum(rates) / len(rates), 1) if rates else None,
            "startup_seconds": results[0]["startup_seconds"],
            "duplicates": sum(r["duplicates"] for r in results),
            "problems": [p for r in results for p in r["problems"]]}
    report["machine"]["loadavg_after"] = os.getloadavg()
    rates = {m: report["methods"][m]["events_per_s"] for m in methods}
    if rates.get("ours") and rates.get("loop"):
        report["ours_over_loop"] = round(rates["ours"] / rates["loop"], 3)
    with open(os.path.join(args.work_dir, "bench_kafka_to_bigquery.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(_table(report), flush=True)
    if any(m["problems"] for m in report["methods"].values()):
        raise SystemExit(1)
    return report


def _table(report: dict) -> str:
    lines = ["| method | events/s (mean) | per round | start-up s | duplicates | checks |",
             "|---|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        per_round = ", ".join(str(r["events_per_s"]) for r in m["rounds"])
        lines.append(f"| {name} | {m['events_per_s']} | {per_round} | {m['startup_seconds']} | {m['duplicates']} | "
                     f"{'; '.join(m['problems']) or 'ok'} |")
    if "ours_over_loop" in report:
        lines.append(f"\nours / loop: {report['ours_over_loop']}x (goal >= 0.8x); load average "
                     f"{report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
