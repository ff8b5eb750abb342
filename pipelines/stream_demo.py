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
With --clean (what `make stream-demo` runs) the model is trained with the
fraud use case's ksqlDB statements (`beam_ml.jobs.demo.FRAUD_SQL`: drop columns,
`Class IS NOT NULL`, `MASK_LEFT` on the user's name, an INNER JOIN with the
bundled users table `beam_ml/data/users.csv`), the events carry `userid` and
`User`, and stream_predict applies the statement stored with the model (no
--sql flag): rows it filters are counted, not dead letters.

5. Reads the output topics back and prints a summary: events in, predictions
   out, dead letters by reason, fraud alerts (predictions of the positive
   class), throughput; then stops the broker (nothing is kept).
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.jobs.stream_demo import stream_demo

__all__ = ["run", "main"]


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
    p.add_argument("--clean", action="store_true",
                   help="clean with the fraud use case's SQL statement (stored with the model; default model dir "
                        "out/fraud_clean)")
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
    """Runs the demo; returns the summary it prints (see `beam_ml.jobs.stream_demo.stream_demo`).

    Args:
      argv: flags (see the module docstring); none: the defaults.

    Raises:
      UserError: a bad flag.
    """
    return stream_demo(_parse_args(list(argv or [])))


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
