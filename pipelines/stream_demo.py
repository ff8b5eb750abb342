"""Local streaming demo: a throwaway Kafka broker, fraud events in, predictions and fraud alerts out.

    python -m pipelines.stream_demo
    python -m pipelines.stream_demo --events=5000 --seconds=30 --malformed_fraction=0.01
    python -m pipelines.stream_demo --model_dir=out/fraud --train_rows=50000 --epochs=8

What it does, all on 127.0.0.1 and bounded in time:

1. Ensures a fraud model: serves `--model_dir` (a train output dir such as
   `out/fraud`, or a model root) if it has an exported version, else trains the
   bundled `fraud` dataset into it first (`--train_rows`, `--epochs`; about half
   a minute with the defaults here).
2. Starts an in-memory Tansu broker (`beam_ml.testing.TansuBroker`) and creates
   the topics `transactions`, `predictions`, `transactions-dlq` (1 partition).
3. Produces `--events` events of the generated fraud dataset as JSON (like
   `pipelines.produce`: event_id, produce_ts), with `--malformed_fraction` of
   them replaced by malformed ones (not JSON, not an object, a missing field, a
   non-numeric value), so the dead-letter path has something to show.
4. Runs `pipelines.stream_predict` until it has read every event or
   `--seconds` have passed.
5. Reads the output topics back and prints a summary: events in, predictions
   out, dead letters by reason, fraud alerts (predictions of the positive
   class), throughput; then stops the broker (nothing is kept).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import time
from typing import Any, Optional, Sequence

from beam_ml import cli
from beam_ml.errors import UserError

__all__ = ["run", "main", "ensure_fraud_model", "malformed_event"]

INPUT_TOPIC = "transactions"
OUTPUT_TOPIC = "predictions"
DEAD_LETTER_TOPIC = "transactions-dlq"
# Kinds of malformed events, cycled; each names the stage that must reject it.
MALFORMED_KINDS = ("not_json", "not_object", "missing_field", "not_a_number")


def _log(msg: str) -> None:
    print(f"[stream_demo] {msg}", flush=True)


def ensure_fraud_model(model_dir: str, data_dir: str, rows: int, epochs: int) -> str:
    """The model root to serve from `model_dir`, training the fraud dataset there if it has no version.

    Args:
      model_dir: a model root (integer version subdirectories) or a train
        output dir (`<dir>/model/<version>`); created by training if empty.
      data_dir: where the generated training CSV goes.
      rows: generated rows to train on.
      epochs: training epochs.

    Returns:
      The model root (whose latest version is served).
    """
    from beam_ml.export import list_versions

    if list_versions(model_dir):
        return model_dir
    root = os.path.join(model_dir, "model")
    if not list_versions(root):
        from pipelines import train

        _log(f"no model in {model_dir}: training the fraud dataset ({rows} rows, {epochs} epochs)")
        start = time.monotonic()
        train.run(["--dataset=fraud", f"--dataset_rows={rows}", f"--data_dir={data_dir}",
                   f"--output_dir={model_dir}", f"--epochs={epochs}", "--runner=DirectRunner", "--verbose=0"])
        _log(f"trained in {time.monotonic() - start:.0f} s")
    return root


def malformed_event(event: dict[str, Any], kind: str) -> bytes:
    """A malformed variant of `event` (a JSON-able dict) of one of MALFORMED_KINDS, as bytes."""
    if kind == "not_json":
        return f"{event.get('event_id')},this is not JSON".encode()
    if kind == "not_object":
        return json.dumps([event.get("event_id"), event.get("Amount")]).encode()
    bad = dict(event)
    if kind == "missing_field":
        bad.pop("V1", None)
    elif kind == "not_a_number":
        bad["Amount"] = "twelve euros"
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(bad).encode()


def _produce(bootstrap: str, csv_path: str, events: int, malformed_fraction: float) -> dict[str, Any]:
    """Sends `events` events, every round(1/fraction)-th one malformed; returns the counts."""
    from kafka import KafkaProducer

    from pipelines.produce import csv_events

    every = round(1 / malformed_fraction) if malformed_fraction > 0 else 0
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    errors: list[BaseException] = []
    sent, malformed = 0, collections.Counter()
    start = time.monotonic()
    try:
        for event_id, event in csv_events(csv_path):
            if sent >= events:
                break
            event["produce_ts"] = int(time.time() * 1000)
            if every and sent % every == every // 2:  # spread through the stream, not first
                kind = MALFORMED_KINDS[sum(malformed.values()) % len(MALFORMED_KINDS)]
                value = malformed_event(event, kind)
                malformed[kind] += 1
            else:
                value = json.dumps(event, separators=(",", ":")).encode()
            producer.send(INPUT_TOPIC, key=event_id.encode(), value=value).add_errback(errors.append)
            sent += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    if errors:
        raise RuntimeError(f"{len(errors)} of {sent} sends failed; first: {errors[0]!r}")
    return {"events": sent, "malformed": dict(malformed), "seconds": round(time.monotonic() - start, 2)}


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(message)

    p = Parser(prog="python -m pipelines.stream_demo", allow_abbrev=False,
               description="Local streaming demo: broker, fraud events, stream_predict, summary.")
    p.add_argument("--events", type=int, default=20000, help="events to produce (malformed ones included)")
    p.add_argument("--malformed_fraction", type=float, default=0.005,
                   help="fraction of events replaced by malformed ones (0 for none)")
    p.add_argument("--seconds", type=float, default=60.0, help="stop the stream after this many seconds")
    p.add_argument("--model_dir", default="out/fraud", help="train output dir or model root; trained if empty")
    p.add_argument("--data_dir", default="data", help="where generated datasets are written")
    p.add_argument("--train_rows", type=int, default=50000, help="rows to train on when training")
    p.add_argument("--epochs", type=int, default=8, help="epochs when training")
    p.add_argument("--max_batch_size", type=int, default=256, help="RunInference's largest batch")
    p.add_argument("--top_alerts", type=int, default=5, help="fraud alerts to print")
    args = p.parse_args(argv)
    if args.events < 1:
        raise UserError(f"--events: expected a positive count, got {args.events}")
    if not 0 <= args.malformed_fraction < 0.5:
        raise UserError(f"--malformed_fraction: expected a fraction in [0, 0.5), got {args.malformed_fraction}")
    if args.seconds <= 0:
        raise UserError(f"--seconds: expected positive seconds, got {args.seconds}")
    if args.train_rows < 100 or args.epochs < 1:
        raise UserError("--train_rows >= 100 and --epochs >= 1 expected")
    return args


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the demo; returns the summary it prints.

    Args:
      argv: flags (see the module docstring); none: the defaults.

    Returns:
      {events_in, malformed_in, rows_read, predictions, dead_letters,
       dead_letters_by_reason, dead_letters_by_stage, fraud_alerts, top_alerts,
       seconds, throughput_events_per_s, model_dir, positive_class}.

    Raises:
      UserError: a bad flag.
    """
    args = _parse_args(list(argv or []))
    from beam_ml import datasets
    from beam_ml.serving import resolve_version_dir
    from beam_ml.testing import TansuBroker, read_topic
    from pipelines import stream_predict

    model_root = ensure_fraud_model(args.model_dir, args.data_dir, args.train_rows, args.epochs)
    with open(os.path.join(resolve_version_dir(model_root), "assets.extra", "beam_ml.json")) as f:
        classes = json.load(f)["label_classes"]
    positive = datasets.DATASETS["fraud"].positive_label
    if positive not in classes:
        raise UserError(f"--model_dir: {model_root} is not a fraud model (classes {classes})")
    csv_path = datasets.materialize("fraud", args.data_dir, rows=max(args.events, 1000))

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
        result = stream_predict.run([
            f"--model_dir={model_root}", f"--input_topic={INPUT_TOPIC}", f"--output_topic={OUTPUT_TOPIC}",
            f"--dead_letter_topic={DEAD_LETTER_TOPIC}", f"--bootstrap_servers={bootstrap}",
            "--runner=DirectRunner", "--streaming", "--group_id=stream-demo", "--start=earliest",
            f"--max_records={produced['events']}", f"--max_read_time={args.seconds}",
            f"--max_batch_size={args.max_batch_size}", "--model_reload=none"])
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
    handled = s["predictions"] + s["dead_letters"]
    print(f"\n=== stream demo summary ===\n"
          f"events in        {s['events_in']:>8,}  ({s['malformed_in']} malformed on purpose)\n"
          f"read by pipeline {s['rows_read']:>8,}\n"
          f"predictions out  {s['predictions']:>8,}\n"
          f"dead letters     {s['dead_letters']:>8,}  {s['dead_letters_by_stage']}\n"
          f"handled          {handled:>8,}  ({'all' if handled == s['events_in'] else 'NOT all'} events)\n"
          f"fraud alerts     {s['fraud_alerts']:>8,}  (class {s['positive_class']!r})\n"
          f"throughput       {s['throughput_events_per_s'] or 0:>8,.0f}  events/s while scoring; "
          f"{s['seconds']:.1f} s in stream_predict including start-up", flush=True)
    for reason, n in s["dead_letters_by_reason"].items():
        print(f"  dead letter x{n}: {reason}")
    for a in s["top_alerts"]:
        print(f"  alert: {a['event_id']} score {a['score']:.4f} (threshold {a['threshold']:.4f})")


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
