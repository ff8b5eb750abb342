"""The local streaming demo of `python -m pipelines.stream_demo` (its flags and steps: that module's docstring).

    summary = stream_demo(args)   # a throwaway broker, fraud events in, stream_predict, the summary printed

All on 127.0.0.1 and bounded in time: ensure a fraud model (train it when
--model_dir has none), start an in-memory Tansu broker with the topics
`transactions`, `predictions`, `transactions-dlq`, produce the events (some
malformed on purpose), run stream_predict until every event is read or the time
is up, read the output topics back, print the summary, stop the broker.
"""
from __future__ import annotations

import collections
import json
import time
from typing import Any

from beam_ml import datasets
from beam_ml.errors import UserError
from beam_ml.io.kafka import KafkaClientConfig
from beam_ml.jobs.demo import (MALFORMED_KINDS, ensure_fraud_model, ensure_fraud_sql_model, fraud_with_users,
                              malformed_event)
from beam_ml.jobs.stream_predict import stream_predict
from beam_ml.model_store import load_model_metadata
from beam_ml.options import KafkaOptions, StreamPredictOptions, parse_pipeline_options
from beam_ml.producer import csv_events, json_value, open_producer, send_events
from beam_ml.testing import TansuBroker, read_topic

__all__ = ["stream_demo", "INPUT_TOPIC", "OUTPUT_TOPIC", "DEAD_LETTER_TOPIC"]

INPUT_TOPIC = "transactions"
OUTPUT_TOPIC = "predictions"
DEAD_LETTER_TOPIC = "transactions-dlq"


def _log(msg: str) -> None:
    print(f"[stream_demo] {msg}", flush=True)


def _produce(bootstrap: str, csv_path: str, events: int, malformed_fraction: float) -> dict[str, Any]:
    """Sends `events` events, every round(1/fraction)-th one malformed; returns the counts."""
    every = round(1 / malformed_fraction) if malformed_fraction > 0 else 0
    malformed: collections.Counter = collections.Counter()

    def encode(i: int, event: dict[str, Any]) -> bytes:
        if every and i % every == every // 2:  # spread through the stream, not first
            kind = MALFORMED_KINDS[sum(malformed.values()) % len(MALFORMED_KINDS)]
            malformed[kind] += 1
            return malformed_event(event, kind)
        return json_value(event)

    config = KafkaClientConfig(bootstrap_servers=bootstrap).validate()
    stats = send_events(open_producer(config), INPUT_TOPIC, csv_events(csv_path), limit=events, encode=encode)
    return {"events": stats["events"], "malformed": dict(malformed), "seconds": round(stats["seconds"], 2)}


def stream_demo(args: Any) -> dict[str, Any]:
    """Runs the demo with the values of `pipelines.stream_demo`'s flags; returns the summary (printed too).

    Args:
      args: the parsed flags (events, malformed_fraction, seconds, model_dir,
        data_dir, train_rows, epochs, max_batch_size, top_alerts, clean).

    Returns:
      {events_in, malformed_in, rows_read, predictions, dead_letters,
       dead_letters_by_reason, dead_letters_by_stage, fraud_alerts, top_alerts,
       seconds, throughput_events_per_s, model_dir, positive_class}.

    Raises:
      UserError: a model directory that holds no fraud model.
    """

    if args.clean:
        model_dir = "out/fraud_clean" if args.model_dir == "out/fraud" else args.model_dir
        model_root = ensure_fraud_sql_model(model_dir, args.data_dir, args.train_rows, args.epochs, log=_log)
    else:
        model_root = ensure_fraud_model(args.model_dir, args.data_dir, args.train_rows, args.epochs, log=_log)
    classes = load_model_metadata(model_root)[1]["label_classes"]
    positive = datasets.DATASETS["fraud"].positive_label
    if positive not in classes:
        raise UserError(f"--model_dir: {model_root} is not a fraud model (classes {classes})")
    csv_path = datasets.materialize("fraud", args.data_dir, rows=max(args.events, 1000))
    if args.clean:
        csv_path = fraud_with_users(csv_path, csv_path[:-len(".csv")] + "_users.csv")

    with TansuBroker() as broker:
        bootstrap = broker.bootstrap_servers
        for topic in (INPUT_TOPIC, OUTPUT_TOPIC, DEAD_LETTER_TOPIC):
            broker.create_topic(topic, partitions=1)  # one partition: --max_records is then the exact total
        _log(f"broker {bootstrap}; producing {args.events} events to '{INPUT_TOPIC}'")
        produced = _produce(bootstrap, csv_path, args.events, args.malformed_fraction)
        n_malformed = sum(produced["malformed"].values())
        _log(f"produced {produced['events']} events ({n_malformed} malformed) in {produced['seconds']} s; "
             f"streaming for at most {args.seconds:.0f} s")
        start = time.monotonic()
        result = stream_predict(parse_pipeline_options([
            f"--model_dir={model_root}", f"--input_topic={INPUT_TOPIC}", f"--output_topic={OUTPUT_TOPIC}",
            f"--dead_letter_topic={DEAD_LETTER_TOPIC}", f"--bootstrap_servers={bootstrap}",
            "--runner=DirectRunner", "--streaming", "--group_id=stream-demo", "--start=earliest",
            f"--max_records={produced['events']}", f"--max_read_time={args.seconds}",
            f"--max_batch_size={args.max_batch_size}", "--model_reload=none"], StreamPredictOptions, KafkaOptions))
        run_seconds = time.monotonic() - start
        counts = result.counts
        as_json = lambda r: json.loads(r.value)  # noqa: E731
        predictions = read_topic(bootstrap, OUTPUT_TOPIC, counts["predictions"], timeout=30, decode=as_json)
        dead = read_topic(bootstrap, DEAD_LETTER_TOPIC, counts["dead_letters"], timeout=15, decode=as_json)

    by_reason = collections.Counter(f"{d.get('stage')}: {d.get('reason')}" for d in dead)
    by_stage = collections.Counter(d.get("stage") for d in dead)
    alerts = sorted((p for p in predictions if p.get("class") == positive), key=lambda p: -(p.get("score") or 0))
    ts = [p["processing_ts"] for p in predictions if "processing_ts" in p]
    window = (max(ts) - min(ts)) / 1000 if len(ts) > 1 else 0.0
    summary = {
        "events_in": produced["events"], "malformed_in": n_malformed, "rows_read": counts["rows_in"],
        "predictions": len(predictions), "dead_letters": len(dead),
        "filtered": counts.get("rows_filtered", 0),
        "dead_letters_by_stage": dict(by_stage), "dead_letters_by_reason": dict(by_reason.most_common()),
        "fraud_alerts": len(alerts),
        "top_alerts": [{k: a.get(k) for k in ("event_id", "score", "class", "threshold")}
                       for a in alerts[:args.top_alerts]],
        "positive_class": positive, "seconds": round(run_seconds, 2),
        # Scoring rate between the first and the last prediction; start-up is in `seconds`.
        "throughput_events_per_s": round(len(ts) / window, 1) if window > 0 else None,
        "model_dir": model_root,
    }
    _print_summary(summary)
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    handled = s["predictions"] + s["dead_letters"] + s["filtered"]
    print(f"\n=== stream demo summary ===\n"
          f"events in        {s['events_in']:>8,}  ({s['malformed_in']} malformed on purpose)\n"
          f"read by pipeline {s['rows_read']:>8,}\n"
          f"predictions out  {s['predictions']:>8,}\n"
          f"dead letters     {s['dead_letters']:>8,}  {s['dead_letters_by_stage']}\n"
          f"filtered by SQL  {s['filtered']:>8,}  (WHERE / INNER JOIN of the model's statement)\n"
          f"handled          {handled:>8,}  ({'all' if handled == s['events_in'] else 'NOT all'} events)\n"
          f"fraud alerts     {s['fraud_alerts']:>8,}  (class {s['positive_class']!r})\n"
          f"throughput       {s['throughput_events_per_s'] or 0:>8,.0f}  events/s while scoring; "
          f"{s['seconds']:.1f} s in stream_predict including start-up", flush=True)
    for reason, n in s["dead_letters_by_reason"].items():
        print(f"  dead letter x{n}: {reason}")
    for a in s["top_alerts"]:
        print(f"  alert: {a['event_id']} score {a['score']:.4f} (threshold {a['threshold']:.4f})")
