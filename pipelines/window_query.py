"""A persistent windowed query over a live topic (ksqlDB CREATE TABLE ... AS SELECT ... WINDOW ... EMIT CHANGES).

    python -m pipelines.window_query --bootstrap_servers=127.0.0.1:9092 --input_topic=cards \\
        --output_topic=card-velocity --dead_letter_topic=card-velocity-dlq --group_id=velocity \\
        --window_sql="SELECT card_id, COUNT(*) AS tx, SUM(Amount) AS total FROM events
                      WINDOW TUMBLING (SIZE 10 MINUTES, GRACE PERIOD 30 SECONDS) GROUP BY card_id"

Each changed window's row goes to --output_topic as it changes, with WINDOWSTART and
WINDOWEND. See `beam_ml.jobs.window_query` and docs/WINDOWED_FEATURES.md.
"""
from __future__ import annotations

from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.jobs.window_query import window_query
from beam_ml.options import KafkaOptions, WindowQueryOptions, parse_pipeline_options

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None):
    """Parses flags and runs the query; returns its WindowQueryRun (counts of a bounded run).

    Raises:
      UserError: a bad flag or statement.
    """
    options = parse_pipeline_options(argv, WindowQueryOptions, KafkaOptions, prog="python -m pipelines.window_query",
                                     description="A persistent windowed ksqlDB query: each window's aggregates to "
                                                 "a topic, as they change.")
    return window_query(options, test_pipeline=test_pipeline)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
